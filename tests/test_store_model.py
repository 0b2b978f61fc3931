"""Random operation sequences run against each backend and the memory model, compared
after every step: statuses, attempts, errors raised and counters must agree."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import RedisServer
from tidalq.errors import TidalqError
from tidalq.models import Failure, JobSpec
from tidalq.store.base import JobStore
from tidalq.store.memory import MemoryStore
from tidalq.terms import Quality

OPS = st.lists(st.one_of(
    st.tuples(st.just("submit"), st.integers(1, 4), st.sampled_from(["LOSSLESS", "HIGH"])),
    st.tuples(st.just("claim")),
    st.tuples(st.sampled_from(["complete", "fail_final", "fail_retry", "release"]),
              st.integers(0, 7)),
    st.tuples(st.sampled_from(["cancel", "retry", "pause", "resume", "remove"]),
              st.integers(0, 7)),
    st.tuples(st.sampled_from(["qpause", "qresume"])),
), min_size=1, max_size=25)


class Runner:
    """Applies one abstract operation to one store; jobs are named by submission order."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.ids: list[str] = []
        self.tokens: dict[str, str] = {}

    def pick(self, n: int) -> str | None:
        return self.ids[n % len(self.ids)] if self.ids else None

    async def apply(self, op: tuple[Any, ...]) -> str:
        try:
            return await self._apply(op)
        except TidalqError as exc:
            return type(exc).__name__

    async def _apply(self, op: tuple[Any, ...]) -> str:
        s, name = self.store, op[0]
        if name == "submit":
            job, created = await s.submit(JobSpec("track", op[1], Quality(op[2])))
            if created:
                self.ids.append(job.id)
            return f"submit {self.ids.index(job.id)} {created}"
        if name == "claim":
            claim = await s.claim("w", 60)
            if claim is None:
                return "none"
            self.tokens[claim.job.id] = claim.token
            return f"claimed {self.ids.index(claim.job.id)}"
        if name in ("qpause", "qresume"):
            await s.set_queue_paused(name == "qpause")
            return "ok"
        job_id = self.pick(op[1])
        if job_id is None:
            return "no jobs"
        token = self.tokens.get(job_id, "none")
        if name == "complete":
            return (await s.complete(job_id, token)).status.value
        if name in ("fail_final", "fail_retry"):
            failure = Failure("x", "UPSTREAM_UNAVAILABLE", name == "fail_retry", 3_600_000)
            return (await s.fail(job_id, token, failure)).status.value
        if name == "release":
            return (await s.release(job_id, token)).status.value
        if name == "remove":
            await s.remove(job_id)
            self.ids[self.ids.index(job_id)] = "gone-" + job_id
            return "removed"
        return str((await getattr(s, name)(job_id)).status.value)

    async def snapshot(self) -> tuple[Any, ...]:
        jobs = {j.id: j for j in await self.store.list_jobs(limit=1000)}
        rows = [(jobs[i].status.value, jobs[i].attempts, jobs[i].next_retry_at is not None)
                if i in jobs else None for i in self.ids]
        return tuple(rows), tuple(sorted((await self.store.stats()).items()))


async def compare(store: JobStore, ops: list[tuple[Any, ...]]) -> None:
    model, real = Runner(MemoryStore()), Runner(store)
    for op in ops:
        expected, got = await model.apply(op), await real.apply(op)
        assert got == expected, (op, expected, got)
        assert await real.snapshot() == await model.snapshot(), op


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_backend_matches_the_memory_model(backend: str, ops: list[tuple[Any, ...]],
                                          redis_server: RedisServer) -> None:
    async def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            if backend == "sqlite":
                from tidalq.store.sqlite import SqliteStore

                store: JobStore = await SqliteStore.open(str(Path(tmp) / "q.db"))
            else:
                from tidalq.store.redis import RedisStore

                store = await RedisStore.open(redis_server.url, prefix=uuid.uuid4().hex)
            try:
                await compare(store, ops)
            finally:
                await store.close()

    asyncio.run(run())
