"""The job state machine as pure functions, shared by the memory and SQLite backends.

The Redis backend implements the same rules in Lua (``redis_lua.py``); the contract suite
and the stateful test hold all three to one behaviour. Each function validates the
transition, mutates the given :class:`Job` and returns the event kind to record.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection
from typing import Any

from tidalq.errors import FailureCode, IllegalTransition, LeaseLost
from tidalq.models import Failure, Job, JobSpec, LeaseState
from tidalq.terms import JobStatus, Priority

BACKOFF_BASE_MS = 2_000
BACKOFF_CAP_MS = 300_000
DEFAULT_MAX_STALLS = 5
EVENT_CAP = 10_000


def backoff_ms(attempts: int, u: float) -> int:
    """Exponential backoff with "equal jitter": a delay in [d/2, d], d = base·2^(n-1) capped."""
    d = min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** max(0, attempts - 1))
    return int(d / 2 + u * d / 2)


def new_token() -> str:
    return secrets.token_hex(16)


def new_job(job_id: str, spec: JobSpec, priority: Priority, max_attempts: int,
            now: int, seq: int) -> Job:
    return Job(id=job_id, spec=spec, priority=priority, max_attempts=max_attempts,
               created_at=now, updated_at=now, seq=seq)


def _refuse(job: Job, action: str) -> IllegalTransition:
    return IllegalTransition(f"cannot {action} job {job.id}: it is {job.status.value}")


def claim(job: Job, now: int, token: str, lease_ms: int, worker: str) -> str:
    if job.status is not JobStatus.QUEUED:
        raise _refuse(job, "claim")
    job.status = JobStatus.PROCESSING
    job.token = token
    job.worker = worker
    job.lease_until_ms = now + lease_ms
    job.attempts += 1
    job.next_retry_at = None
    job.started_at = job.started_at or now
    job.updated_at = now
    return "claimed"


def lease_state(job: Job, token: str) -> LeaseState:
    if job.token != token:
        return LeaseState.LOST
    if job.status is JobStatus.PROCESSING:
        return LeaseState.PAUSE if job.pause_requested else LeaseState.HELD
    if job.status is JobStatus.CANCELLED:
        return LeaseState.CANCELLED
    return LeaseState.LOST


def renew(job: Job, token: str, now: int, lease_ms: int) -> LeaseState:
    state = lease_state(job, token)
    if state.holds:
        job.lease_until_ms = now + lease_ms
    return state


def completed_tracks(track_progress: list[dict[str, Any]] | None) -> int:
    return sum(1 for t in track_progress or () if t.get("status") == "completed")


def record_progress(job: Job, progress: float, track_progress: list[dict[str, Any]] | None,
                    now: int, titles: dict[str, str] | None = None) -> None:
    """Progress of a held job. An album that completed another track has made durable
    progress: its stall count starts again, so daemons killed while it runs (an operator's
    kill -9, a reboot) never fail it as a job "whose worker kept dying"."""
    job.progress = progress
    if titles:
        job.spec = JobSpec.from_json({**job.spec.to_json(), **titles})
    if track_progress is not None:
        if completed_tracks(track_progress) > completed_tracks(job.track_progress):
            job.stalls = 0
        job.track_progress = track_progress
    job.updated_at = now


def owns_for_finish(job: Job, token: str) -> bool:
    """True when the token may finish the job now; False when this token already finished
    it (a repeated call is a no-op). Raises LeaseLost when someone else owns it."""
    if token is None or job.token != token:
        raise LeaseLost(f"lease on job {job.id} was lost")
    return job.status is JobStatus.PROCESSING


def _end(job: Job, status: JobStatus, now: int) -> None:
    job.status = status
    job.pause_requested = False
    job.lease_until_ms = None
    job.completed_at = now
    job.updated_at = now


def complete(job: Job, now: int, result: dict[str, object] | None,
             track_progress: list[dict[str, object]] | None) -> str:
    _end(job, JobStatus.COMPLETED, now)
    job.progress = 1.0
    job.error = None
    job.failure_code = None
    job.result = result
    if track_progress is not None:
        job.track_progress = track_progress
    return "completed"


def fail(job: Job, now: int, failure: Failure, u: float,
         track_progress: list[dict[str, object]] | None) -> str:
    job.error = failure.message[:2000]
    job.failure_code = failure.code
    if track_progress is not None:
        job.track_progress = track_progress
    if failure.retryable and job.attempts < job.max_attempts:
        delay = failure.retry_after_ms if failure.retry_after_ms is not None \
            else backoff_ms(job.attempts, u)
        job.status = JobStatus.QUEUED
        job.lease_until_ms = None
        job.next_retry_at = now + max(0, delay)
        job.updated_at = now
        return "retry_scheduled"
    _end(job, JobStatus.FAILED, now)
    return "failed"


def release(job: Job, now: int) -> str:
    """Back to the queue without spending an attempt (graceful shutdown), or to ``paused``
    when the user asked to pause it while it ran."""
    job.lease_until_ms = None
    job.attempts = max(0, job.attempts - 1)
    job.updated_at = now
    if job.pause_requested:
        job.pause_requested = False
        job.status = JobStatus.PAUSED
        return "paused"
    job.status = JobStatus.QUEUED
    return "released"


def cancel(job: Job, now: int) -> str:
    if job.status.finished:
        raise _refuse(job, "cancel")
    _end(job, JobStatus.CANCELLED, now)
    job.next_retry_at = None
    job.error = "cancelled"
    job.failure_code = FailureCode.CANCELLED.value
    return "cancelled"


def retry(job: Job, now: int) -> str:
    if job.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
        raise _refuse(job, "retry")
    job.status = JobStatus.QUEUED
    job.attempts = 0
    job.stalls = 0
    job.error = None
    job.failure_code = None
    job.completed_at = None
    job.next_retry_at = None
    job.token = None
    job.updated_at = now
    return "retried"


def set_priority(job: Job, priority: Priority, now: int) -> str:
    """A waiting job (queued or paused) moves within the queue; a started one cannot."""
    if job.status not in (JobStatus.QUEUED, JobStatus.PAUSED):
        raise _refuse(job, "reprioritise")
    job.priority = priority
    job.updated_at = now
    return "priority_changed"


def pause(job: Job, now: int) -> str:
    """A queued job pauses at once; a running one is asked to (its worker stops between
    tracks, keeps what it has, and releases it as ``paused``)."""
    job.updated_at = now
    if job.status is JobStatus.PROCESSING:
        job.pause_requested = True
        return "pause_requested"
    if job.status is not JobStatus.QUEUED:
        raise _refuse(job, "pause")
    job.status = JobStatus.PAUSED
    return "paused"


def resume(job: Job, now: int) -> str:
    if job.status is JobStatus.PROCESSING and job.pause_requested:
        job.pause_requested = False  # changed our mind before it took effect
        job.updated_at = now
        return "resumed"
    if job.status is not JobStatus.PAUSED:
        raise _refuse(job, "resume")
    job.status = JobStatus.QUEUED
    job.updated_at = now
    return "resumed"


def annotate(job: Job, fields: dict[str, str], now: int) -> str:
    """Client fields join the job in any state: a finished job's MusicBrainz release is
    kept (and its files re-tagged by the daemon)."""
    job.spec = JobSpec.from_json({**job.spec.to_json(), **fields})
    job.updated_at = now
    return "annotated"


def check_removable(job: Job) -> None:
    if job.status.live:
        raise _refuse(job, "remove")


def reap(job: Job, now: int, max_stalls: int) -> str:
    """An expired lease: the holder is presumed dead. Counts a stall; too many fail the job."""
    job.stalls += 1
    job.token = None
    if job.stalls >= max_stalls:
        job.error = f"stalled {job.stalls} times: its worker kept dying"
        job.failure_code = FailureCode.STALLED.value
        _end(job, JobStatus.FAILED, now)
        return "failed"
    job.status = JobStatus.QUEUED
    job.lease_until_ms = None
    job.attempts = max(0, job.attempts - 1)
    job.updated_at = now
    return "stalled"


def reapable(job: Job, now: int, dead_workers: Collection[str]) -> bool:
    """Its lease ran out, or the daemon holding it is known to be dead."""
    return job.status is JobStatus.PROCESSING and (
        (job.lease_until_ms or 0) < now or job.worker in dead_workers)


def is_due(job: Job, now: int) -> bool:
    return job.next_retry_at is None or job.next_retry_at <= now
