"""Queue benchmark: submit rate, lifecycle rate (claim + complete, no work) and the cost of
a stats call with 100,000 jobs in the store, per backend. One JSON line per backend.

    python bench/queue.py [--backends memory,sqlite,redis] [--jobs 3000] [--stats-jobs 100000]

Redis: a private redis-server is started on a free port unless --redis-url is given.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named queue.py: keep its folder off sys.path so the stdlib's queue loads.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import argparse
import asyncio
import json
import statistics
import tempfile
import time

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


async def lifecycle_n(store: JobStore, n: int) -> float:
    """Claim + complete of n jobs as a busy worker does it: the first claim alone, then
    each completion takes the next job in the same call (one round trip per job)."""
    start = time.perf_counter()
    claim = await store.claim("bench", 30)
    done = 0
    while claim is not None:
        _, claim = await store.complete_and_claim(claim.job.id, claim.token, "bench", 30)
        done += 1
    assert done == n, (done, n)
    return n / (time.perf_counter() - start)


async def lifecycle_two_calls(store: JobStore, n: int) -> float:
    """The same with separate claim and complete calls, for comparison."""
    for i in range(n):
        await store.submit(JobSpec("track", 20_000_000 + i))
    start = time.perf_counter()
    for _ in range(n):
        claim = await store.claim("bench", 30)
        assert claim is not None
        await store.complete(claim.job.id, claim.token)
    return n / (time.perf_counter() - start)


async def stats_ms(store: JobStore, total: int) -> float:
    have = sum((await store.stats()).values())
    await submit_n(store, total - have, 10_000_000)
    times = []
    for _ in range(50):
        start = time.perf_counter()
        await store.stats()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


async def bench(name: str, tmp: Path, redis_url: str | None, jobs: int,
                stats_jobs: int) -> dict[str, object]:
    store = await open_backend(name, tmp, redis_url)
    try:
        submit = await submit_n(store, jobs, 0)
        life = await lifecycle_n(store, jobs)
        life_two = await lifecycle_two_calls(store, jobs)
        stats = await stats_ms(store, stats_jobs)
    finally:
        await store.close()
    return {"backend": name, "submit_per_s": round(submit), "lifecycle_per_s": round(life),
            "lifecycle_two_calls_per_s": round(life_two),
            "stats_ms_at_100k": round(stats, 3), "jobs": jobs, "stats_jobs": stats_jobs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backends", default="memory,sqlite,redis")
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--stats-jobs", type=int, default=100_000)
    parser.add_argument("--redis-url")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir, private_redis() as own_redis:
        tmp = Path(tmpdir)
        url = args.redis_url or own_redis
        for name in args.backends.split(","):
            print(json.dumps(asyncio.run(bench(name, tmp, url, args.jobs, args.stats_jobs))),
                  flush=True)


if __name__ == "__main__":
    main()
