"""Queue benchmark, one JSON line per backend: submit rate, lifecycle rate (claim and
complete of null jobs by 4 concurrent workers on the fused complete-and-claim path), the
same with separate calls, and the cost of a stats call with 100,000 jobs in the store.

    python bench/queue.py [--backends memory,sqlite,redis] [--jobs 3000] [--stats-jobs 100000]
                          [--concurrency 4] [--anchors] [--redis-url URL] [--runs 1]

Beside each backend, in the same run, what it is measured against:

- sqlite: ``bare_commits_per_s``, single-row INSERT + COMMIT on a file with the store's own
  settings (WAL, ``synchronous=FULL``): the disk's limit for one durable change at a time.
- redis, with ``--anchors``: arq and saq (when importable; this installs nothing) working
  through the same number of null jobs at the same concurrency on the same redis-server,
  each configured at its fastest (no poll delay). ``ratio_to_best_anchor`` compares.

Redis: a private redis-server is started on a free port unless --redis-url is given.

A run of 3,000 jobs lasts a second or two, and on a shared machine one run's rate can be
half or double the next: with ``--runs`` above 1 each backend (and its anchors) runs that
many times in turn, and a line of medians per backend follows its runs (``median_of``).
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named queue.py: keep its folder off sys.path so the stdlib's queue loads.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import argparse
import asyncio
import importlib.util
import json
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tidalq.models import JobSpec
from tidalq.store.base import JobStore
from tidalq.testing.localservers import private_redis


async def open_backend(name: str, tmp: Path, redis_url: str | None) -> JobStore:
    if name == "memory":
        from tidalq.store.memory import MemoryStore

        return MemoryStore()
    if name == "sqlite":
        from tidalq.store.sqlite import SqliteStore

        return await SqliteStore.open(str(tmp / f"bench-{time.time_ns()}.db"))
    from tidalq.store.redis import RedisStore

    if redis_url is None:
        raise SystemExit("no redis-server installed: give --redis-url or leave out redis")
    return await RedisStore.open(redis_url, prefix=f"bench{time.time_ns()}")


async def submit_n(store: JobStore, n: int, offset: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        await store.submit(JobSpec("track", offset + i + 1))
    return n / (time.perf_counter() - start)


async def fused_worker(store: JobStore, name: str) -> int:
    """A busy worker: one claim, then each completion takes the next job in the same call."""
    done = 0
    claim = await store.claim(name, 30)
    while claim is not None:
        _, claim = await store.complete_and_claim(claim.job.id, claim.token, name, 30)
        done += 1
    return done


async def two_call_worker(store: JobStore, name: str) -> int:
    done = 0
    while (claim := await store.claim(name, 30)) is not None:
        await store.complete(claim.job.id, claim.token)
        done += 1
    return done


async def lifecycle(store: JobStore, n: int, concurrency: int,
                    worker: Callable[[JobStore, str], Awaitable[int]]) -> float:
    """n queued null jobs worked through by ``concurrency`` workers: jobs per second."""
    start = time.perf_counter()
    done = await asyncio.gather(*(worker(store, f"bench{w}") for w in range(concurrency)))
    seconds = time.perf_counter() - start
    assert sum(done) == n, (done, n)
    return n / seconds


async def stats_ms(store: JobStore, total: int) -> float:
    have = sum((await store.stats()).values())
    await submit_n(store, total - have, 10_000_000)
    times = []
    for _ in range(50):
        start = time.perf_counter()
        await store.stats()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def bare_commits_per_s(tmp: Path, n: int) -> float:
    """Single-row durable commits, one at a time, with the SQLite store's settings."""
    conn = sqlite3.connect(tmp / f"bare-{time.time_ns()}.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    start = time.perf_counter()
    for i in range(n):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (v) VALUES (?)", (f"row {i}",))
        conn.execute("COMMIT")
    seconds = time.perf_counter() - start
    conn.close()
    return n / seconds


async def bench(name: str, tmp: Path, redis_url: str | None, jobs: int, stats_jobs: int,
                concurrency: int) -> dict[str, Any]:
    store = await open_backend(name, tmp, redis_url)
    try:
        submit = await submit_n(store, jobs, 0)
        life = await lifecycle(store, jobs, concurrency, fused_worker)
        await submit_n(store, jobs, 20_000_000)
        life_two = await lifecycle(store, jobs, concurrency, two_call_worker)
        stats = await stats_ms(store, stats_jobs)
    finally:
        await store.close()
    line: dict[str, Any] = {
        "backend": name, "submit_per_s": round(submit), "lifecycle_per_s": round(life),
        "lifecycle_two_calls_per_s": round(life_two), "stats_ms_at_100k": round(stats, 3),
        "jobs": jobs, "concurrency": concurrency, "stats_jobs": stats_jobs}
    if name == "sqlite":
        bare = bare_commits_per_s(tmp, jobs)
        line.update(bare_commits_per_s=round(bare), ratio_to_bare=round(life / bare, 2))
    return line


# -- the anchors: what a user would otherwise run ------------------------------------------
class Countdown:
    """Counts jobs ended (each anchor's after-the-job hook); ``done`` is set at the last."""

    def __init__(self, n: int) -> None:
        self.left = n
        self.done = asyncio.Event()

    async def ended(self, ctx: dict[str, Any]) -> None:
        self.left -= 1
        if self.left == 0:
            self.done.set()


async def null(ctx: dict[str, Any]) -> None:
    return None


async def _flush(url: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(url)
    await client.flushdb()
    await client.aclose()


async def arq_per_s(url: str, n: int, concurrency: int) -> float:
    from arq import create_pool
    from arq.connections import RedisSettings
    from arq.worker import Worker, func

    await _flush(url)
    settings = RedisSettings.from_dsn(url)
    pool = await create_pool(settings)
    for _ in range(n):
        await pool.enqueue_job("null")
    countdown = Countdown(n)
    worker = Worker(functions=[func(null, name="null")], redis_pool=pool,
                    max_jobs=concurrency, poll_delay=0, handle_signals=False,
                    after_job_end=countdown.ended,  # after the result is recorded
                    keep_result=60, log_results=False)
    start = time.perf_counter()
    task = asyncio.create_task(worker.async_run())
    await countdown.done.wait()
    seconds = time.perf_counter() - start
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await worker.close()
    return n / seconds


async def saq_per_s(url: str, n: int, concurrency: int) -> float:
    from saq import Queue, Worker

    await _flush(url)
    queue = Queue.from_url(url)
    await queue.connect()
    for _ in range(n):
        await queue.enqueue("null")
    countdown = Countdown(n)
    worker = Worker(queue, functions=[("null", null)], concurrency=concurrency,
                    after_process=countdown.ended)  # after it is marked complete
    start = time.perf_counter()
    task = asyncio.create_task(worker.start())
    await countdown.done.wait()
    seconds = time.perf_counter() - start
    await worker.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await queue.disconnect()
    return n / seconds


async def anchors(url: str, n: int, concurrency: int) -> dict[str, float]:
    rates = {}
    for name, run in (("arq", arq_per_s), ("saq", saq_per_s)):
        if importlib.util.find_spec(name) is None:
            print(f"{name} is not importable: not measured (pip install {name})",
                  file=sys.stderr)
            continue
        rates[name] = await run(url, n, concurrency)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="memory,sqlite,redis")
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--stats-jobs", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--anchors", action="store_true",
                        help="also run arq and saq on the same redis-server, when importable")
    parser.add_argument("--redis-url")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir, private_redis() as own_redis:
        tmp = Path(tmpdir)
        url = args.redis_url or own_redis
        for name in args.backends.split(","):
            lines = []
            for _ in range(args.runs):
                lines.append(run_once(name, tmp, url, args))
                print(json.dumps(lines[-1]), flush=True)
            if args.runs > 1:
                print(json.dumps(medians(lines)), flush=True)


def run_once(name: str, tmp: Path, url: str | None, args: argparse.Namespace
             ) -> dict[str, Any]:
    line = asyncio.run(bench(name, tmp, url, args.jobs, args.stats_jobs, args.concurrency))
    if name == "redis" and args.anchors and url is not None:
        rates = asyncio.run(anchors(url, args.jobs, args.concurrency))
        line.update({f"{k}_per_s": round(v) for k, v in rates.items()})
        if rates:
            line["ratio_to_best_anchor"] = round(
                line["lifecycle_per_s"] / max(rates.values()), 2)
    return line


def medians(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """One line: each figure's median over the runs (a ratio's median, not a ratio of
    medians: each run's ratio compares two rates measured moments apart)."""
    out: dict[str, Any] = {}
    for key, value in lines[0].items():
        numbers = [line[key] for line in lines if key in line]
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        out[key] = round(statistics.median(numbers), 3) if numeric else value
    return {**out, "median_of": len(lines)}


if __name__ == "__main__":
    main()
