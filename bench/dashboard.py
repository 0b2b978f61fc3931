"""The web app's poll: ``GET /api/download-queue/dashboard`` with 10,000 jobs in the store.

    python bench/dashboard.py [--jobs 10000] [--finished 1000] [--runs 50] [--no-redis]

Runs a control-only daemon in this process (so the figure is the daemon's own cost, not
a client's start-up) on a temporary SQLite store, and on a private ``redis-server`` it
starts on a free port (when one is installed); fills it with queued jobs and some finished
ones, then times ``--runs`` GETs over loopback. Prints one JSON line per backend.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py would shadow the stdlib's queue: keep this folder off sys.path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import argparse
import asyncio
import json
import statistics
import tempfile
import time

import aiohttp

from tidalq.config import load_settings
from tidalq.daemon import Daemon
from tidalq.models import Failure, JobSpec
from tidalq.testing.localservers import free_port, private_redis


async def fill(daemon: Daemon, jobs: int, finished: int) -> None:
    store = daemon.store
    assert store is not None
    for n in range(finished):
        await store.submit(JobSpec("album", 900_000 + n))
        claim = await store.claim("bench", 30)
        assert claim is not None
        if n % 5:
            tracks = [{"trackId": t, "title": f"Track {t}", "status": "completed",
                       "progress": 1.0, "bytes": 30_000_000} for t in range(12)]
            await store.complete(claim.job.id, claim.token, None, tracks)
        else:
            await store.fail(claim.job.id, claim.token, Failure("gone", "NOT_FOUND", False))
    for n in range(jobs - finished):
        await store.submit(JobSpec("track", 1 + n))


async def measure(store_url: str, args: argparse.Namespace, tmp: str) -> dict[str, object]:
    port = free_port()
    settings = load_settings({
        "store": store_url, "download_dir": f"{tmp}/lib", "socket": f"{tmp}/run/q.sock",
        "http_listen": f"127.0.0.1:{port}", "workers": False}, env={})
    daemon = Daemon(settings)
    await daemon.startup()
    try:
        await fill(daemon, args.jobs, args.finished)
        url = f"http://127.0.0.1:{port}/api/download-queue/dashboard"
        times, size = [], 0
        async with aiohttp.ClientSession() as http:
            for _ in range(args.runs):
                began = time.perf_counter()
                async with http.get(url) as resp:
                    body = await resp.read()
                times.append((time.perf_counter() - began) * 1000)
                size = len(body)
        carried = len(json.loads(body)["jobs"])
    finally:
        await daemon.shutdown()
    return {"bench": "dashboard", "backend": store_url.split(":", 1)[0], "jobs": args.jobs,
            "runs": args.runs, "dashboard_ms_median": round(statistics.median(times), 1),
            "dashboard_ms_p90": round(sorted(times)[int(0.9 * len(times))], 1),
            "jobs_carried": carried, "bytes": size}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--finished", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--no-redis", action="store_true", help="SQLite only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tidalq-dash-") as tmp:
        print(json.dumps(await measure(f"sqlite:///{tmp}/q.db", args, tmp)), flush=True)
    if args.no_redis:
        return
    with private_redis() as url, tempfile.TemporaryDirectory(prefix="tidalq-dash-") as tmp:
        if url is not None:
            print(json.dumps(await measure(url, args, tmp)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
