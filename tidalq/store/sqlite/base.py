"""The SQLite store's ground floor: one thread for every SQLite call, the group commit
(concurrent writes share one transaction, each in its savepoint, and one fsync), and the
job rows with their counters and events."""

from __future__ import annotations

import asyncio
import functools
import json
import random
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self, TypeVar

from tidalq.errors import (
    JobNotFound,
    StoreUnavailable,
    TidalqError,
)
from tidalq.models import (
    Job,
    now_ms,
)
from tidalq.store import rules
from tidalq.store.base import (
    JobStore,
)
from tidalq.store.sqlite.schema import (
    EVENT_TRIM_EVERY,
    MAX_GROUP,
    as_store_error,
    connect,
    connect_reader,
)
from tidalq.terms import JobStatus

T = TypeVar("T")


class SqliteBase(JobStore):
    """Jobs as JSON documents with index columns in one SQLite file.

    Two connections, each with a thread of its own: writes go through one (grouped, see
    :meth:`_write`), reads through the other. In WAL mode a reader never waits for a
    writer, so `status` answers even while another process holds the write lock (a
    daemon stopped mid-commit): only writes wait for it.
    """

    def __init__(self, path: str, conn: sqlite3.Connection, pool: ThreadPoolExecutor,
                 reader: sqlite3.Connection, read_pool: ThreadPoolExecutor,
                 max_stalls: int = rules.DEFAULT_MAX_STALLS) -> None:
        self.url = f"sqlite://{path}"
        self.path = path
        self.max_stalls = max_stalls
        self._conn = conn
        self._pool = pool
        self._reader = reader
        self._read_pool = read_pool
        self._rng = random.Random()
        self._changed = asyncio.Event()
        self._events_since_trim = 0
        self._writes: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        self._committer: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, path: str) -> Self:
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tidalq-sqlite")
        read_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tidalq-sqlite-read")
        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(pool, connect, path)
            reader = await loop.run_in_executor(read_pool, connect_reader, path)
        except (sqlite3.Error, OSError) as exc:
            pool.shutdown(wait=False)
            read_pool.shutdown(wait=False)
            raise StoreUnavailable(f"cannot open SQLite store {path}: {exc}") from exc
        except TidalqError:
            pool.shutdown(wait=False)
            read_pool.shutdown(wait=False)
            raise
        return cls(path, conn, pool, reader, read_pool)

    async def close(self) -> None:
        if self._committer is not None:
            await asyncio.gather(self._committer, return_exceptions=True)
        await self._run(self._conn.close)
        await self._read(lambda: self._reader.close())
        self._pool.shutdown(wait=True)
        self._read_pool.shutdown(wait=True)

    async def _run(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite store failed: {exc}") from exc

    async def _read(self, fn: Callable[[], T]) -> T:
        """Run a read on the reading connection (``self._reader``)."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._read_pool, fn)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite store failed: {exc}") from exc

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in a write transaction, grouped with the writes other tasks asked for
        meanwhile (group commit: one ``COMMIT``, one fsync, for all of them). Each ``fn``
        runs in a savepoint of its own: one that raises is rolled back alone and its
        caller gets the error; the others commit."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._writes.append((fn, future))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_waiting())
        out: T = await future
        return out

    async def _commit_waiting(self) -> None:
        """Commit the waiting writes, a group at a time, until none wait."""
        while self._writes:
            group = self._writes[:MAX_GROUP]
            del self._writes[:MAX_GROUP]
            fns = [fn for fn, _ in group]
            try:
                outcomes = await self._run(functools.partial(self._commit_group, fns))
            except asyncio.CancelledError:  # the loop is going away: so are its callers
                for _, future in group + self._writes:
                    future.cancel()
                self._writes.clear()
                raise
            except Exception as exc:  # BEGIN or COMMIT failed: nothing of the group holds
                outcomes = [(False, exc)] * len(group)
            for (_, future), (ok, value) in zip(group, outcomes, strict=True):
                if future.done():  # its caller was cancelled; the write itself happened
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
            self._notify()

    def _commit_group(self, fns: list[Callable[[sqlite3.Connection], Any]]
                      ) -> list[tuple[bool, Any]]:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        outcomes: list[tuple[bool, Any]] = []
        try:
            for fn in fns:
                conn.execute("SAVEPOINT one")
                try:
                    outcomes.append((True, fn(conn)))
                except Exception as exc:
                    conn.execute("ROLLBACK TO one")
                    outcomes.append((False, as_store_error(exc)))
                conn.execute("RELEASE one")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return outcomes

    # -- rows and documents ---------------------------------------------------------------
    @staticmethod
    def _load(conn: sqlite3.Connection, job_id: str) -> Job:
        row = conn.execute("SELECT doc FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(f"no job {job_id}")
        return Job.from_record(json.loads(row[0]))

    def _save(self, conn: sqlite3.Connection, job: Job, old: JobStatus | None,
              kind: str) -> None:
        finished_at = job.completed_at if job.status.finished else None
        due = job.next_retry_at or 0
        doc = json.dumps(job.to_record(), separators=(",", ":"))
        if old is None:
            conn.execute(
                "INSERT INTO jobs (id, seq, status, prio, due_at, lease_until, dedupe_key,"
                " finished_at, doc) VALUES (?,?,?,?,?,?,?,?,?)",
                (job.id, job.seq, job.status.value, job.priority.rank, due,
                 job.lease_until_ms, job.spec.dedupe_key, finished_at, doc))
        else:
            conn.execute(
                "UPDATE jobs SET status=?, due_at=?, lease_until=?, finished_at=?, doc=?,"
                " worker=?, prio=? WHERE id=?",
                (job.status.value, due, job.lease_until_ms, finished_at, doc, job.worker,
                 job.priority.rank, job.id))
        if old is not job.status:
            self._count(conn, old, -1)
            self._count(conn, job.status, 1)
        self._event(conn, job, kind)

    @staticmethod
    def _count(conn: sqlite3.Connection, status: JobStatus | None, delta: int) -> None:
        if status is not None:
            conn.execute("INSERT INTO counters VALUES (?, ?) ON CONFLICT(status)"
                         " DO UPDATE SET n = n + excluded.n", (status.value, delta))

    def _event(self, conn: sqlite3.Connection, job: Job, kind: str) -> None:
        cur = conn.execute(
            "INSERT INTO events (job_id, kind, status, progress, at) VALUES (?,?,?,?,?)",
            (job.id, kind, job.status.value, round(job.progress, 4), now_ms()))
        self._events_since_trim += 1
        if self._events_since_trim >= EVENT_TRIM_EVERY:
            self._events_since_trim = 0
            conn.execute("DELETE FROM events WHERE id <= ?",
                         ((cur.lastrowid or 0) - rules.EVENT_CAP,))

    def _apply(self, job_id: str, step: Callable[[Job], str]) -> Callable[[sqlite3.Connection],
                                                                          Job]:
        def fn(conn: sqlite3.Connection) -> Job:
            job = self._load(conn, job_id)
            old = job.status
            kind = step(job)
            self._save(conn, job, old, kind)
            return job

        return fn
