"""The store across real OS processes: SIGKILL while holding a lease, concurrent claimers,
Redis killed and restarted with AOF, an SQLite file from the first schema version."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.helpers import RedisServer, repo_root, subprocess_env
from tidalq.errors import JobNotFound, LeaseLost, StoreUnavailable
from tidalq.models import JobSpec
from tidalq.store.base import JobStore
from tidalq.store.redis import RedisStore
from tidalq.store.sqlite import CLAIM_NEXT, SCHEMA_VERSION, SqliteStore
from tidalq.terms import JobStatus

SHARED = ["sqlite", "redis"]


def location(backend: str, tmp_path: Path, redis: RedisServer) -> str:
    return str(tmp_path / "queue.db") if backend == "sqlite" else redis.url


async def open_shared(backend: str, loc: str, prefix: str) -> JobStore:
    if backend == "sqlite":
        return await SqliteStore.open(loc)
    return await RedisStore.open(loc, prefix=prefix)


def spawn(*args: str, capture: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tests.procs", *args], cwd=repo_root(),
                            env=subprocess_env(), text=True,
                            stdout=subprocess.PIPE if capture else None)


@pytest.mark.parametrize("backend", SHARED)
async def test_sigkilled_holder_loses_its_job_after_the_lease(
        backend: str, tmp_path: Path, redis_server: RedisServer) -> None:
    prefix, loc = f"k{uuid.uuid4().hex[:8]}", location(backend, tmp_path, redis_server)
    store = await open_shared(backend, loc, prefix)
    job, _ = await store.submit(JobSpec("track", 1))
    holder = spawn("hold", backend, loc, prefix, "1.0", capture=True)
    assert holder.stdout is not None
    line = await asyncio.to_thread(holder.stdout.readline)
    _, job_id, token = line.split()
    assert job_id == job.id
    await asyncio.sleep(1.5)  # the holder keeps renewing: nothing to reap
    assert await store.reap() == []
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    holder.stdout.close()
    assert await store.claim("other", 30) is None  # its lease still runs
    await asyncio.sleep(1.1)
    assert await store.reap() == [job.id]
    claim = await store.claim("other", 30)
    assert claim is not None and claim.job.id == job.id
    with pytest.raises(LeaseLost):
        await store.complete(job.id, token)
    assert (await store.complete(job.id, claim.token)).status is JobStatus.COMPLETED
    await store.close()


@pytest.mark.parametrize("backend", SHARED)
async def test_two_processes_claim_ten_thousand_jobs_exactly_once(
        backend: str, tmp_path: Path, redis_server: RedisServer) -> None:
    prefix, loc = f"c{uuid.uuid4().hex[:8]}", location(backend, tmp_path, redis_server)
    store = await open_shared(backend, loc, prefix)
    ids = [(await store.submit(JobSpec("track", n + 1)))[0].id for n in range(10_000)]
    outs = [tmp_path / f"out{i}" for i in range(2)]
    procs = [spawn("claim-all", backend, loc, prefix, str(out)) for out in outs]
    for proc in procs:
        assert await asyncio.to_thread(proc.wait, 300) == 0
    claimed = [line for out in outs for line in out.read_text().split()]
    assert sorted(claimed) == sorted(ids)
    assert all(out.read_text() for out in outs), "both processes did work"
    stats = await store.stats()
    assert stats["completed"] == 10_000 and stats["queued"] == stats["processing"] == 0
    jobs = await store.list_jobs(limit=10_000)
    assert sum(j.status is JobStatus.COMPLETED for j in jobs) == 10_000
    await store.close()


async def test_redis_killed_and_restarted_with_aof_loses_nothing(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "aof", appendonly=True)
    server.start()
    try:
        store = await RedisStore.open(server.url, prefix="aof")
        ids = [(await store.submit(JobSpec("track", n + 1)))[0].id for n in range(50)]
        claims = [await store.claim("w", 60) for _ in range(10)]
        for claim in claims[:5]:
            assert claim is not None
            await store.complete(claim.job.id, claim.token)
        server.kill()
        with pytest.raises(StoreUnavailable):
            await store.submit(JobSpec("track", 999))
        server.start()
        stats = await store.stats()
        assert stats == {"queued": 40, "processing": 5, "paused": 0, "completed": 5,
                         "failed": 0, "cancelled": 0}
        for claim in claims[5:]:
            assert claim is not None
            assert (await store.complete(claim.job.id, claim.token)).status is JobStatus.COMPLETED
        jobs = await store.list_jobs(limit=100)
        assert sorted(j.id for j in jobs) == sorted(ids)
        await store.close()
    finally:
        server.stop()


async def test_sqlite_file_of_the_first_schema_version_opens(tmp_path: Path) -> None:
    old = repo_root() / "tests" / "data" / "queue-v1.db"
    copy = tmp_path / "queue.db"
    shutil.copy(old, copy)
    store = await SqliteStore.open(str(copy))
    jobs = await store.list_jobs()
    assert {j.spec.type for j in jobs} == {"track", "album"}
    assert await store.stats() == {"queued": 1, "processing": 0, "paused": 0, "completed": 0,
                                   "failed": 0, "cancelled": 1}
    claim = await store.claim("w", 30)
    assert claim is not None
    await store.complete(claim.job.id, claim.token)
    version = await asyncio.to_thread(
        lambda: __import__("sqlite3").connect(copy).execute(
            "SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])
    assert int(version) == SCHEMA_VERSION
    await store.close()


async def test_sqlite_store_that_cannot_open_is_an_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreUnavailable):
        await SqliteStore.open(str(blocker / "queue.db"))
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(StoreUnavailable):
        await SqliteStore.open(str(garbage))


async def test_sqlite_claim_walks_the_claim_order_instead_of_sorting_the_queue(
        tmp_path: Path) -> None:
    """A claim once sorted every queued job (the planner chose the due_at index): with
    10,000 jobs queued each claim cost milliseconds."""
    store = await SqliteStore.open(str(tmp_path / "queue.db"))
    await store.close()
    conn = sqlite3.connect(tmp_path / "queue.db")
    plan = " ".join(str(row) for row in conn.execute("EXPLAIN QUERY PLAN " + CLAIM_NEXT, (0,)))
    conn.close()
    assert "jobs_claim" in plan and "TEMP B-TREE" not in plan, plan


async def test_sqlite_concurrent_writes_commit_together_and_fail_alone(tmp_path: Path) -> None:
    """Group commit: writes asked for at once share a transaction; one that raises after
    writing is rolled back alone and its caller alone gets the error."""
    store = await SqliteStore.open(str(tmp_path / "queue.db"))
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)

    def half_then_raise(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE meta SET value='1' WHERE key='queue_paused'")
        raise JobNotFound("no job job-x")

    first = [asyncio.create_task(store.submit(JobSpec("track", n))) for n in range(1, 4)]
    broken = asyncio.create_task(store._write(half_then_raise))
    later = [asyncio.create_task(store.submit(JobSpec("track", n))) for n in range(4, 7)]
    done = await asyncio.gather(*first, *later)
    with pytest.raises(JobNotFound):
        await broken
    store._conn.set_trace_callback(None)
    assert all(created for _, created in done)
    commits = statements.count("COMMIT")
    assert 1 <= commits <= 3, commits  # seven writes: a commit per wave of them, not each
    assert not await store.queue_paused()  # the broken write left nothing behind
    assert (await store.stats())["queued"] == 6
    assert sorted(j.spec.tidal_id for j in await store.list_jobs()) == [1, 2, 3, 4, 5, 6]
    await store.close()
