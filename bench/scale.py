"""Big queues: 100,000 finished and 10,000 queued jobs, on SQLite and on Redis.

    python bench/scale.py [--finished 100000] [--queued 10000] [--runs 10] [--no-redis]

Fills a store through its own API (finished jobs go through claim and complete), then
starts a control-only ``tidalq daemon`` process on it with the HTTP API and times, as a
user would: whole ``tidalq status`` and ``tidalq list --limit 50`` processes (the CLI's
start included, from its modules' bytecode as an install has it: ``PYTHONDONTWRITEBYTECODE``
is dropped from their environment, and a run before the timed ones writes the bytecode),
``GET /api/download-queue/dashboard`` over loopback, and the daemon's RSS. Redis runs on a
private ``redis-server`` on a free port. One JSON line per backend.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py would shadow the stdlib's queue: keep this folder off sys.path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request

from tidalq.models import JobSpec
from tidalq.store import open_store
from tidalq.testing.localservers import free_port, installed_cli_env, private_redis


async def fill(url: str, finished: int, queued: int) -> None:
    store = await open_store(url)
    try:
        for n in range(finished):
            await store.submit(JobSpec("track", 1_000_000 + n))
            claim = await store.claim("bench", 30)
            assert claim is not None
            await store.complete(claim.job.id, claim.token, {"path": f"/x/{n}.flac"})
        for n in range(queued):
            await store.submit(JobSpec("track", 1 + n))
    finally:
        await store.close()


def timed_runs(cmd: list[str], env: dict[str, str], runs: int) -> float:
    subprocess.run(cmd, env=env, check=True, capture_output=True)  # bytecode written
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        times.append((time.perf_counter() - began) * 1000)
    return round(statistics.median(times), 1)


def dashboard_ms(port: int, runs: int) -> float:
    url = f"http://127.0.0.1:{port}/api/download-queue/dashboard"
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        with urllib.request.urlopen(url, timeout=30) as resp:
            resp.read()
        times.append((time.perf_counter() - began) * 1000)
    return round(statistics.median(times), 1)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def measure(url: str, backend: str, args: argparse.Namespace, tmp: str) -> dict[str, object]:
    began = time.perf_counter()
    asyncio.run(fill(url, args.finished, args.queued))
    fill_s = time.perf_counter() - began
    port, sock = free_port(), Path(tmp) / "run" / "tidalq.sock"
    env = {**installed_cli_env(), "TIDALQ_SOCKET": str(sock), "TIDALQ_STORE": url,
           "TIDAL_DOWNLOADS": f"{tmp}/lib", "XDG_CONFIG_HOME": f"{tmp}/cfg"}
    daemon = subprocess.Popen([sys.executable, "-m", "tidalq", "daemon", "--no-workers",
                               "--http", f"127.0.0.1:{port}"], env=env,
                              stderr=subprocess.DEVNULL)
    exe = shutil.which("tidalq")
    cli = [exe] if exe else [sys.executable, "-m", "tidalq"]
    try:
        deadline = time.monotonic() + 60
        while subprocess.run([*cli, "status"], env=env, capture_output=True).returncode:
            if time.monotonic() > deadline:
                raise SystemExit("the daemon did not start")
            time.sleep(0.2)
        return {"bench": "scale", "backend": backend, "finished": args.finished,
                "queued": args.queued, "fill_s": round(fill_s, 1),
                "status_ms": timed_runs([*cli, "status"], env, args.runs),
                "list_ms": timed_runs([*cli, "list", "--limit", "50"], env, args.runs),
                "dashboard_ms": dashboard_ms(port, args.runs * 3),
                "rss_mb": rss_mb(daemon.pid)}
    finally:
        daemon.terminate()
        daemon.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--finished", type=int, default=100_000)
    parser.add_argument("--queued", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--no-redis", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tidalq-scale-") as tmp:
        print(json.dumps(measure(f"sqlite:///{tmp}/q.db", "sqlite", args, tmp)), flush=True)
    if args.no_redis:
        return
    with private_redis() as url, tempfile.TemporaryDirectory(prefix="tidalq-scale-") as tmp:
        if url is not None:
            print(json.dumps(measure(url, "redis", args, tmp)), flush=True)


if __name__ == "__main__":
    main()
