"""The SQLite store's jobs: submitting, reading, the worker's and the user's side."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Collection
from typing import Any

from tidalq.errors import (
    AmbiguousJobId,
    IllegalTransition,
    JobNotFound,
)
from tidalq.models import (
    Claim,
    Failure,
    Job,
    JobSpec,
    LeaseState,
    new_job_id,
    now_ms,
    parse_max_attempts,
)
from tidalq.store import rules
from tidalq.store.base import (
    Titles,
    TrackProgress,
    check_annotation,
    check_limit,
    check_progress,
    check_size,
    check_titles,
    lease_ms,
)
from tidalq.store.sqlite.events import SqliteEvents
from tidalq.store.sqlite.follows import SqliteFollows
from tidalq.store.sqlite.schema import CLAIM_NEXT
from tidalq.terms import JobStatus, Priority


class SqliteStore(SqliteFollows, SqliteEvents):
    """The SQLite job store (see :mod:`tidalq.store.sqlite`)."""

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
        return await self._read(lambda: self._load(self._reader, job_id))

    async def resolve(self, prefix: str) -> str:
        def fn() -> list[str]:
            rows = self._reader.execute(
                "SELECT id FROM jobs WHERE id >= ? AND id < ? ORDER BY id LIMIT 2",
                (prefix, prefix + "\U0010ffff")).fetchall()
            return [r[0] for r in rows]

        exact = await self._read(lambda: self._reader.execute(
            "SELECT id FROM jobs WHERE id=?", (prefix,)).fetchone())
        if exact:
            return prefix
        found = await self._read(fn)
        if not found:
            raise JobNotFound(f"no job matches {prefix!r}")
        if len(found) > 1:
            raise AmbiguousJobId(f"{prefix!r} matches more than one job")
        return found[0]

    async def list_jobs(self, status: JobStatus | None = None, limit: int = 100) -> list[Job]:
        limit = check_limit(limit)

        def fn() -> list[Job]:
            if status is None:
                rows = self._reader.execute(
                    "SELECT doc FROM jobs ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
            else:
                rows = self._reader.execute(
                    "SELECT doc FROM jobs WHERE status=? ORDER BY seq DESC LIMIT ?",
                    (status.value, limit)).fetchall()
            return [Job.from_record(json.loads(r[0])) for r in rows]

        return await self._read(fn)

    async def stats(self) -> dict[str, int]:
        rows = await self._read(lambda: self._reader.execute(
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

    async def set_priority(self, job_id: str, priority: Priority) -> Job:
        now = now_ms()
        return await self._write(self._apply(job_id,
                                             lambda j: rules.set_priority(j, priority, now)))

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
        return await self._read(lambda: self._paused(self._reader))

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
        row = await self._read(lambda: self._reader.execute(
            "SELECT MIN(due_at) FROM jobs WHERE status='queued' AND due_at > 0").fetchone())
        if row is None or row[0] is None:
            return None
        return max(0.0, (int(row[0]) - now_ms()) / 1000)
