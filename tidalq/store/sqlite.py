"""The embedded default store: one SQLite file, WAL, ``synchronous=FULL``.

Every state change loads the job document inside a ``BEGIN IMMEDIATE`` transaction,
applies :mod:`tidalq.store.rules`, writes the document with its index columns, bumps the
per-status counters and appends an event; so several processes may share a file safely.
Changes asked for at the same time are committed together (group commit), each in its
own savepoint, so concurrent workers share one fsync. All SQLite calls run on one
dedicated thread, never on the event loop.

Schema history (``meta.schema_version``; each migration runs once, in order):

1. jobs, counters, events, meta — the first released layout (frozen in tests/data/).
2. adds ``jobs.worker`` (who holds the lease, for diagnostics).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import random
import sqlite3
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from tidalq.errors import (
    AmbiguousJobId,
    FollowNotFound,
    IllegalTransition,
    JobNotFound,
    StoreUnavailable,
    TidalqError,
)
from tidalq.models import (
    Claim,
    Event,
    Failure,
    Follow,
    Job,
    JobSpec,
    LeaseState,
    new_job_id,
    now_ms,
    parse_max_attempts,
)
from tidalq.store import rules
from tidalq.store.base import (
    JobStore,
    Titles,
    TrackProgress,
    check_annotation,
    check_limit,
    check_progress,
    check_size,
    check_titles,
    lease_ms,
)
from tidalq.terms import JobStatus, Priority

T = TypeVar("T")

SCHEMA_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    status TEXT NOT NULL,
    prio INTEGER NOT NULL,
    due_at INTEGER NOT NULL,
    lease_until INTEGER,
    dedupe_key TEXT NOT NULL,
    finished_at INTEGER,
    doc TEXT NOT NULL
);
CREATE INDEX jobs_claim ON jobs (status, prio, seq);
CREATE INDEX jobs_due ON jobs (status, due_at);
CREATE INDEX jobs_lease ON jobs (status, lease_until);
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_seq ON jobs (seq);
CREATE UNIQUE INDEX jobs_live ON jobs (dedupe_key)
    WHERE status IN ('queued', 'processing', 'paused');
CREATE TABLE counters (status TEXT PRIMARY KEY, n INTEGER NOT NULL);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL, kind TEXT NOT NULL, status TEXT NOT NULL,
    progress REAL NOT NULL, at INTEGER NOT NULL
);
INSERT INTO meta VALUES ('schema_version', '1'), ('queue_paused', '0');
"""

MIGRATIONS: list[str] = [
    SCHEMA_V1,
    "ALTER TABLE jobs ADD COLUMN worker TEXT;",
    "CREATE TABLE follows (id TEXT PRIMARY KEY, key TEXT NOT NULL UNIQUE, doc TEXT NOT NULL,"
    " due_at INTEGER NOT NULL, token TEXT NOT NULL DEFAULT '');",
    # listing one status newest first without walking the other statuses' rows (the
    # dashboard asks for failed and cancelled jobs that may not exist among 100,000)
    "CREATE INDEX jobs_status_seq ON jobs (status, seq);",
]
SCHEMA_VERSION = len(MIGRATIONS)
BUSY_TIMEOUT_MS = 30_000
# The next job to claim: walk the claim order and stop at the first job that is due. Left
# to itself the planner takes the (status, due_at) index and sorts every queued job.
CLAIM_NEXT = ("SELECT doc FROM jobs INDEXED BY jobs_claim WHERE status='queued'"
              " AND due_at <= ? ORDER BY prio, seq LIMIT 1")
MAX_GROUP = 64  # writes committed together at most: a group holds the file's write lock
EVENT_TRIM_EVERY = 500


def _as_store_error(exc: Exception) -> Exception:
    if isinstance(exc, sqlite3.Error):
        return StoreUnavailable(f"SQLite store failed: {exc}")
    return exc


def _current_version(conn: sqlite3.Connection) -> int:
    has_meta = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
    if not has_meta:
        return 0
    return int(conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the file to ``target``; returns the version it had. Safe when several
    processes open a new file at once: each step re-reads the version under the lock."""
    found, target = _current_version(conn), len(MIGRATIONS)
    if found > target:
        raise StoreUnavailable(f"store schema {found} is newer than this tidalq "
                               f"({target}); upgrade tidalq")
    for number in range(found, target):
        conn.execute("BEGIN IMMEDIATE")
        try:
            if _current_version(conn) == number:
                for statement in MIGRATIONS[number].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("UPDATE meta SET value=? WHERE key='schema_version'",
                             (str(number + 1),))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    return found


class SqliteStore(JobStore):
    """Jobs as JSON documents with index columns in one SQLite file."""

    def __init__(self, path: str, conn: sqlite3.Connection, pool: ThreadPoolExecutor,
                 max_stalls: int = rules.DEFAULT_MAX_STALLS) -> None:
        self.url = f"sqlite://{path}"
        self.path = path
        self.max_stalls = max_stalls
        self._conn = conn
        self._pool = pool
        self._rng = random.Random()
        self._changed = asyncio.Event()
        self._events_since_trim = 0
        self._writes: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        self._committer: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, path: str) -> SqliteStore:
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tidalq-sqlite")
        try:
            conn = await asyncio.get_running_loop().run_in_executor(pool, _connect, path)
        except (sqlite3.Error, OSError) as exc:
            pool.shutdown(wait=False)
            raise StoreUnavailable(f"cannot open SQLite store {path}: {exc}") from exc
        except TidalqError:
            pool.shutdown(wait=False)
            raise
        return cls(path, conn, pool)

    async def close(self) -> None:
        if self._committer is not None:
            await asyncio.gather(self._committer, return_exceptions=True)
        await self._run(self._conn.close)
        self._pool.shutdown(wait=True)

    async def _run(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn)
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
                    outcomes.append((False, _as_store_error(exc)))
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
                " worker=? WHERE id=?",
                (job.status.value, due, job.lease_until_ms, finished_at, doc, job.worker,
                 job.id))
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

    # -- submitting and reading -----------------------------------------------------------
    async def submit(self, spec: JobSpec, *, priority: Priority = Priority.NORMAL,
                     max_attempts: int = 3) -> tuple[Job, bool]:
        parse_max_attempts(max_attempts)

        def fn(conn: sqlite3.Connection) -> tuple[Job, bool]:
            row = conn.execute(
                "SELECT doc FROM jobs WHERE dedupe_key=? AND status IN"
                " ('queued','processing','paused')", (spec.dedupe_key,)).fetchone()
            if row is not None:
                return Job.from_record(json.loads(row[0])), False
            seq = conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0]
            now = now_ms()
            job = rules.new_job(new_job_id(now), spec, priority, max_attempts, now, seq)
            self._save(conn, job, None, "submitted")
            return job, True

        return await self._write(fn)

    async def get(self, job_id: str) -> Job:
        return await self._run(lambda: self._load(self._conn, job_id))

    async def resolve(self, prefix: str) -> str:
        def fn() -> list[str]:
            rows = self._conn.execute(
                "SELECT id FROM jobs WHERE id >= ? AND id < ? ORDER BY id LIMIT 2",
                (prefix, prefix + "\U0010ffff")).fetchall()
            return [r[0] for r in rows]

        exact = await self._run(lambda: self._conn.execute(
            "SELECT id FROM jobs WHERE id=?", (prefix,)).fetchone())
        if exact:
            return prefix
        found = await self._run(fn)
        if not found:
            raise JobNotFound(f"no job matches {prefix!r}")
        if len(found) > 1:
            raise AmbiguousJobId(f"{prefix!r} matches more than one job")
        return found[0]

    async def list_jobs(self, status: JobStatus | None = None, limit: int = 100) -> list[Job]:
        limit = check_limit(limit)

        def fn() -> list[Job]:
            if status is None:
                rows = self._conn.execute(
                    "SELECT doc FROM jobs ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
            else:
                rows = self._conn.execute(
                    "SELECT doc FROM jobs WHERE status=? ORDER BY seq DESC LIMIT ?",
                    (status.value, limit)).fetchall()
            return [Job.from_record(json.loads(r[0])) for r in rows]

        return await self._run(fn)

    async def stats(self) -> dict[str, int]:
        rows = await self._run(lambda: self._conn.execute(
            "SELECT status, n FROM counters").fetchall())
        counts = dict(rows)
        return {s.value: int(counts.get(s.value, 0)) for s in JobStatus}

    # -- the worker's side ----------------------------------------------------------------
    def _claim_one(self, conn: sqlite3.Connection, worker: str, ms: int) -> Claim | None:
        if self._paused(conn):
            return None
        now = now_ms()
        row = conn.execute(CLAIM_NEXT, (now,)).fetchone()
        if row is None:
            return None
        token = rules.new_token()
        job = Job.from_record(json.loads(row[0]))
        kind = rules.claim(job, now, token, ms, worker)
        self._save(conn, job, JobStatus.QUEUED, kind)
        return Claim(job, token, job.lease_until_ms or 0)

    async def claim(self, worker: str, lease_s: float) -> Claim | None:
        ms = lease_ms(lease_s)
        return await self._write(lambda conn: self._claim_one(conn, worker, ms))

    async def complete_and_claim(self, job_id: str, token: str, worker: str, lease_s: float,
                                 result: dict[str, Any] | None = None,
                                 track_progress: TrackProgress | None = None
                                 ) -> tuple[Job, Claim | None]:
        check_size([result, track_progress], "result")
        ms, now = lease_ms(lease_s), now_ms()

        def fn(conn: sqlite3.Connection) -> tuple[Job, Claim | None]:
            done = self._finish_in(conn, job_id, token,
                                   lambda j: rules.complete(j, now, result, track_progress))
            return done, self._claim_one(conn, worker, ms)

        return await self._write(fn)

    @staticmethod
    def _paused(conn: sqlite3.Connection) -> bool:
        row = conn.execute("SELECT value FROM meta WHERE key='queue_paused'").fetchone()
        return bool(row and row[0] == "1")

    async def renew(self, job_id: str, token: str, lease_s: float) -> LeaseState:
        ms = lease_ms(lease_s)

        def fn(conn: sqlite3.Connection) -> LeaseState:
            row = conn.execute("SELECT doc FROM jobs WHERE id=?", (job_id,)).fetchone()
            if row is None:
                return LeaseState.LOST
            job = Job.from_record(json.loads(row[0]))
            state = rules.renew(job, token, now_ms(), ms)
            if state.holds:
                conn.execute("UPDATE jobs SET lease_until=?, doc=? WHERE id=?",
                             (job.lease_until_ms, json.dumps(job.to_record()), job_id))
            return state

        return await self._write(fn)

    async def report_progress(self, job_id: str, token: str, progress: float,
                              track_progress: TrackProgress | None = None,
                              titles: Titles | None = None) -> LeaseState:
        progress = check_progress(progress)
        titles = check_titles(titles)

        def fn(conn: sqlite3.Connection) -> LeaseState:
            if track_progress is not None:  # on the store's thread: an album's is large
                check_size(track_progress, "trackProgress")
            try:
                job = self._load(conn, job_id)
            except JobNotFound:
                return LeaseState.LOST
            state = rules.lease_state(job, token)
            if state.holds:
                rules.record_progress(job, progress, track_progress, now_ms(), titles)
                self._save(conn, job, job.status, "progress")
            return state

        return await self._write(fn)

    def _finish_in(self, conn: sqlite3.Connection, job_id: str, token: str,
                   step: Callable[[Job], str]) -> Job:
        job = self._load(conn, job_id)
        if not rules.owns_for_finish(job, token):
            return job
        old = job.status
        self._save(conn, job, old, step(job))
        return job

    async def _finish(self, job_id: str, token: str, step: Callable[[Job], str]) -> Job:
        return await self._write(lambda conn: self._finish_in(conn, job_id, token, step))

    async def complete(self, job_id: str, token: str, result: dict[str, Any] | None = None,
                       track_progress: TrackProgress | None = None) -> Job:
        check_size([result, track_progress], "result")
        now = now_ms()
        return await self._finish(job_id, token,
                                  lambda j: rules.complete(j, now, result, track_progress))

    async def fail(self, job_id: str, token: str, failure: Failure,
                   track_progress: TrackProgress | None = None) -> Job:
        check_size(track_progress, "trackProgress")
        now, u = now_ms(), self._rng.random()
        return await self._finish(job_id, token,
                                  lambda j: rules.fail(j, now, failure, u, track_progress))

    async def release(self, job_id: str, token: str) -> Job:
        now = now_ms()
        return await self._finish(job_id, token, lambda j: rules.release(j, now))

    async def reap(self, dead_workers: Collection[str] = (),
                   spare: Collection[str] = ()) -> list[str]:
        dead, live = list(dead_workers)[:500], list(spare)[:500]

        def fn(conn: sqlite3.Connection) -> list[str]:
            now = now_ms()
            marks = ",".join("?" * len(dead)) or "NULL"
            spared = ",".join("?" * len(live)) or "''"  # NOT IN (NULL) would match nothing
            rows = conn.execute(
                "SELECT id FROM jobs WHERE status='processing' AND ((lease_until < ? AND "
                f"id NOT IN ({spared})) OR worker IN ({marks})) LIMIT 1000",
                (now, *live, *dead)).fetchall()
            for (job_id,) in rows:
                self._apply(job_id, lambda j: rules.reap(j, now, self.max_stalls))(conn)
            return [r[0] for r in rows]

        return await self._write(fn)

    # -- the user's side ------------------------------------------------------------------
    async def cancel(self, job_id: str) -> Job:
        now = now_ms()
        return await self._write(self._apply(job_id, lambda j: rules.cancel(j, now)))

    async def retry(self, job_id: str) -> Job:
        def fn(conn: sqlite3.Connection) -> Job:
            job = self._load(conn, job_id)
            row = conn.execute(
                "SELECT id FROM jobs WHERE dedupe_key=? AND id<>? AND status IN"
                " ('queued','processing','paused')", (job.spec.dedupe_key, job_id)).fetchone()
            if row is not None:
                raise IllegalTransition(f"an equal job {row[0]} is already live")
            now = now_ms()
            return self._apply(job_id, lambda j: rules.retry(j, now))(conn)

        return await self._write(fn)

    async def pause(self, job_id: str) -> Job:
        now = now_ms()
        return await self._write(self._apply(job_id, lambda j: rules.pause(j, now)))

    async def resume(self, job_id: str) -> Job:
        now = now_ms()
        return await self._write(self._apply(job_id, lambda j: rules.resume(j, now)))

    async def annotate(self, job_id: str, fields: dict[str, str]) -> Job:
        fields, now = check_annotation(fields), now_ms()
        return await self._write(self._apply(job_id, lambda j: rules.annotate(j, fields, now)))

    def _delete(self, conn: sqlite3.Connection, job: Job) -> None:
        conn.execute("DELETE FROM jobs WHERE id=?", (job.id,))
        self._count(conn, job.status, -1)
        self._event(conn, job, "removed")

    async def remove(self, job_id: str) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            job = self._load(conn, job_id)
            rules.check_removable(job)
            self._delete(conn, job)

        await self._write(fn)

    async def set_queue_paused(self, paused: bool) -> None:
        await self._write(lambda conn: conn.execute(
            "UPDATE meta SET value=? WHERE key='queue_paused'", ("1" if paused else "0",)))

    async def queue_paused(self) -> bool:
        return await self._run(lambda: self._paused(self._conn))

    async def purge_finished(self, older_than_s: float, batch: int = 500) -> int:
        cutoff = now_ms() - int(older_than_s * 1000)

        def fn(conn: sqlite3.Connection) -> int:
            rows = conn.execute(
                "SELECT doc FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?"
                " ORDER BY finished_at LIMIT ?", (cutoff, batch)).fetchall()
            for (doc,) in rows:
                self._delete(conn, Job.from_record(json.loads(doc)))
            return len(rows)

        return await self._write(fn)

    async def next_due_in(self) -> float | None:
        row = await self._run(lambda: self._conn.execute(
            "SELECT MIN(due_at) FROM jobs WHERE status='queued' AND due_at > 0").fetchone())
        if row is None or row[0] is None:
            return None
        return max(0.0, (int(row[0]) - now_ms()) / 1000)

    # -- follows --------------------------------------------------------------------------
    async def add_follow(self, follow: Follow) -> tuple[Follow, bool]:
        def fn(conn: sqlite3.Connection) -> tuple[Follow, bool]:
            row = conn.execute("SELECT doc FROM follows WHERE key=?", (follow.key,)).fetchone()
            if row is not None:
                return Follow.from_json(json.loads(row[0])), False
            conn.execute("INSERT INTO follows (id, key, doc, due_at) VALUES (?,?,?,?)",
                         (follow.id, follow.key, json.dumps(follow.to_json()),
                          follow.next_check_at))
            return follow, True

        return await self._write(fn)

    async def list_follows(self) -> list[Follow]:
        def fn() -> list[Follow]:
            rows = self._conn.execute("SELECT doc FROM follows ORDER BY key").fetchall()
            return [Follow.from_json(json.loads(r[0])) for r in rows]

        return await self._run(fn)

    async def remove_follow(self, follow_id: str) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            if conn.execute("DELETE FROM follows WHERE id=?", (follow_id,)).rowcount == 0:
                raise FollowNotFound(f"no follow {follow_id}")

        await self._write(fn)

    async def claim_follow(self, lease_s: float) -> tuple[Follow, str] | None:
        ms, token = lease_ms(lease_s), rules.new_token()

        def fn(conn: sqlite3.Connection) -> tuple[Follow, str] | None:
            now = now_ms()
            row = conn.execute("SELECT id, doc FROM follows WHERE due_at <= ? "
                               "ORDER BY due_at LIMIT 1", (now,)).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE follows SET due_at=?, token=? WHERE id=?",
                         (now + ms, token, row[0]))
            return Follow.from_json(json.loads(row[1])), token

        return await self._write(fn)

    async def finish_follow(self, follow: Follow, token: str) -> bool:
        def fn(conn: sqlite3.Connection) -> bool:
            done = conn.execute("UPDATE follows SET doc=?, due_at=?, token='' WHERE id=? "
                                "AND token=?", (json.dumps(follow.to_json()),
                                                follow.next_check_at, follow.id, token))
            return done.rowcount == 1

        return await self._write(fn)

    # -- events ---------------------------------------------------------------------------
    async def last_event_id(self) -> str:
        row = await self._run(lambda: self._conn.execute(
            "SELECT COALESCE(MAX(id), 0) FROM events").fetchone())
        return str(row[0])

    async def events_after(self, after: str, limit: int = 500) -> list[Event]:
        start = int(after) if after.isascii() and after.isdigit() else 0
        rows = await self._run(lambda: self._conn.execute(
            "SELECT id, job_id, kind, status, progress, at FROM events WHERE id > ?"
            " ORDER BY id LIMIT ?", (start, limit)).fetchall())
        return [Event(str(r[0]), r[1], r[2], r[3], r[4], r[5]) for r in rows]

    async def wait_events(self, after: str, timeout_s: float, limit: int = 500) -> list[Event]:
        changed = self._changed
        found = await self.events_after(after, limit)
        if found:
            return found
        # Another process may write the same file: look again at least every half second.
        try:
            await asyncio.wait_for(changed.wait(), min(timeout_s, 0.5))
        except TimeoutError:
            pass
        return await self.events_after(after, limit)


def _connect(path: str) -> sqlite3.Connection:
    Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                           timeout=BUSY_TIMEOUT_MS / 1000)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    migrate(conn)
    try:
        os.chmod(path, 0o600)
    except OSError:
        pass
    return conn
