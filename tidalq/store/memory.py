"""An in-memory job store: the reference model of the contract and the test seam.

Nothing survives the process. Indexes are heaps with lazy deletion: an entry is checked
against the job when popped, so a transition never has to search a heap.
"""

from __future__ import annotations

import asyncio
import heapq
import random
from collections import Counter, deque
from collections.abc import Callable, Collection
from typing import Any

from tidalq.errors import AmbiguousJobId, FollowNotFound, IllegalTransition, JobNotFound
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


class MemoryStore(JobStore):
    """All state in dicts and heaps of one process."""

    def __init__(self, clock: Callable[[], int] = now_ms, rng: random.Random | None = None,
                 max_stalls: int = rules.DEFAULT_MAX_STALLS) -> None:
        self.url = "memory:"
        self.max_stalls = max_stalls
        self._clock = clock
        self._rng = rng or random.Random()
        self._jobs: dict[str, Job] = {}
        self._queue: list[tuple[int, int, str]] = []  # (priority rank, seq, id)
        self._delayed: list[tuple[int, str]] = []  # (due ms, id)
        self._finished: list[tuple[int, str]] = []  # (completed ms, id)
        self._active: set[str] = set()
        self._live: dict[str, str] = {}  # dedupe key -> id
        self._follows: dict[str, tuple[Follow, int, str]] = {}  # id -> (follow, due, token)
        self._counts: Counter[str] = Counter()
        self._events: deque[Event] = deque(maxlen=rules.EVENT_CAP)
        self._event_seq = 0
        self._seq = 0
        self._paused = False
        self._changed = asyncio.Event()

    # -- bookkeeping ----------------------------------------------------------------------
    def _job(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFound(f"no job {job_id}")
        return job

    def _index(self, job: Job, old: JobStatus | None, kind: str) -> None:
        if old is not None:
            self._counts[old.value] -= 1
        self._counts[job.status.value] += 1
        self._active.discard(job.id)
        key = job.spec.dedupe_key
        if job.status is JobStatus.PROCESSING:
            self._active.add(job.id)
        moved = kind == "priority_changed" and job.next_retry_at is None
        if job.status is JobStatus.QUEUED and (old is not JobStatus.QUEUED or moved):
            if job.next_retry_at is not None:
                heapq.heappush(self._delayed, (job.next_retry_at, job.id))
            else:
                heapq.heappush(self._queue, (job.priority.rank, job.seq, job.id))
        if job.status.live:
            self._live[key] = job.id
        elif self._live.get(key) == job.id:
            del self._live[key]
        if job.status.finished and job.completed_at is not None and old not in (
                JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED):
            heapq.heappush(self._finished, (job.completed_at, job.id))
        self._emit(job, kind)

    def _emit(self, job: Job, kind: str) -> None:
        self._event_seq += 1
        self._events.append(Event(str(self._event_seq), job.id, kind, job.status.value,
                                  round(job.progress, 4), self._clock()))
        self._changed.set()
        self._changed = asyncio.Event()

    def _apply(self, job_id: str, step: Callable[[Job], str]) -> Job:
        job = self._job(job_id)
        old = job.status
        kind = step(job)
        self._index(job, old, kind)
        return job.copy()

    # -- submitting and reading -----------------------------------------------------------
    async def submit(self, spec: JobSpec, *, priority: Priority = Priority.NORMAL,
                     max_attempts: int = 3) -> tuple[Job, bool]:
        parse_max_attempts(max_attempts)
        existing = self._live.get(spec.dedupe_key)
        if existing is not None:
            return self._jobs[existing].copy(), False
        now = self._clock()
        self._seq += 1
        job = rules.new_job(new_job_id(now), spec, priority, max_attempts, now, self._seq)
        self._jobs[job.id] = job
        self._index(job, None, "submitted")
        return job.copy(), True

    async def get(self, job_id: str) -> Job:
        return self._job(job_id).copy()

    async def resolve(self, prefix: str) -> str:
        if prefix in self._jobs:
            return prefix
        found = [i for i in self._jobs if i.startswith(prefix)][:2]
        if not found:
            raise JobNotFound(f"no job matches {prefix!r}")
        if len(found) > 1:
            raise AmbiguousJobId(f"{prefix!r} matches more than one job")
        return found[0]

    async def list_jobs(self, status: JobStatus | None = None, limit: int = 100) -> list[Job]:
        limit = check_limit(limit)
        jobs = sorted(self._jobs.values(), key=lambda j: j.seq, reverse=True)
        return [j.copy() for j in jobs if status is None or j.status is status][:limit]

    async def stats(self) -> dict[str, int]:
        return {s.value: self._counts[s.value] for s in JobStatus}

    # -- the worker's side ----------------------------------------------------------------
    def _promote_due(self, now: int) -> None:
        while self._delayed and self._delayed[0][0] <= now:
            _, job_id = heapq.heappop(self._delayed)
            job = self._jobs.get(job_id)
            if job and job.status is JobStatus.QUEUED and job.next_retry_at is not None:
                job.next_retry_at = None
                heapq.heappush(self._queue, (job.priority.rank, job.seq, job.id))

    async def claim(self, worker: str, lease_s: float) -> Claim | None:
        if self._paused:
            return None
        now = self._clock()
        self._promote_due(now)
        while self._queue:
            rank, seq, job_id = heapq.heappop(self._queue)
            job = self._jobs.get(job_id)
            if job is None or job.status is not JobStatus.QUEUED or job.seq != seq \
                    or job.priority.rank != rank or not rules.is_due(job, now):
                continue
            return self._claim_job(job_id, now, lease_ms(lease_s), worker)
        return None

    def _claim_job(self, job_id: str, now: int, ms: int, worker: str) -> Claim:
        token = rules.new_token()
        claimed = self._apply(job_id, lambda j: rules.claim(j, now, token, ms, worker))
        return Claim(claimed, token, claimed.lease_until_ms or 0)

    async def renew(self, job_id: str, token: str, lease_s: float) -> LeaseState:
        job = self._jobs.get(job_id)
        if job is None:
            return LeaseState.LOST
        return rules.renew(job, token, self._clock(), lease_ms(lease_s))

    async def report_progress(self, job_id: str, token: str, progress: float,
                              track_progress: TrackProgress | None = None,
                              titles: Titles | None = None) -> LeaseState:
        progress = check_progress(progress)
        titles = check_titles(titles)
        if track_progress is not None:
            check_size(track_progress, "trackProgress")
        job = self._jobs.get(job_id)
        if job is None:
            return LeaseState.LOST
        state = rules.lease_state(job, token)
        if state.holds:
            rules.record_progress(job, progress, track_progress, self._clock(), titles)
            self._emit(job, "progress")
        return state

    def _finish(self, job_id: str, token: str, step: Callable[[Job], str]) -> Job:
        job = self._job(job_id)
        if not rules.owns_for_finish(job, token):
            return job.copy()
        return self._apply(job_id, step)

    async def complete(self, job_id: str, token: str, result: dict[str, Any] | None = None,
                       track_progress: TrackProgress | None = None) -> Job:
        check_size([result, track_progress], "result")
        now = self._clock()
        return self._finish(job_id, token,
                            lambda j: rules.complete(j, now, result, track_progress))

    async def fail(self, job_id: str, token: str, failure: Failure,
                   track_progress: TrackProgress | None = None) -> Job:
        check_size(track_progress, "trackProgress")
        now, u = self._clock(), self._rng.random()
        return self._finish(job_id, token,
                            lambda j: rules.fail(j, now, failure, u, track_progress))

    async def release(self, job_id: str, token: str) -> Job:
        now = self._clock()
        return self._finish(job_id, token, lambda j: rules.release(j, now))

    async def reap(self, dead_workers: Collection[str] = (),
                   spare: Collection[str] = ()) -> list[str]:
        now = self._clock()
        expired = [i for i in self._active if rules.reapable(self._jobs[i], now, dead_workers)
                   and (i not in spare or self._jobs[i].worker in dead_workers)]
        for job_id in expired:
            self._apply(job_id, lambda j: rules.reap(j, now, self.max_stalls))
        return expired

    # -- the user's side ------------------------------------------------------------------
    async def cancel(self, job_id: str) -> Job:
        now = self._clock()
        return self._apply(job_id, lambda j: rules.cancel(j, now))

    async def retry(self, job_id: str) -> Job:
        job = self._job(job_id)
        other = self._live.get(job.spec.dedupe_key)
        if other is not None and other != job_id:
            raise IllegalTransition(f"an equal job {other} is already live")
        now = self._clock()
        return self._apply(job_id, lambda j: rules.retry(j, now))

    async def pause(self, job_id: str) -> Job:
        now = self._clock()
        return self._apply(job_id, lambda j: rules.pause(j, now))

    async def set_priority(self, job_id: str, priority: Priority) -> Job:
        now = self._clock()
        return self._apply(job_id, lambda j: rules.set_priority(j, priority, now))

    async def annotate(self, job_id: str, fields: dict[str, str]) -> Job:
        fields, now = check_annotation(fields), self._clock()
        return self._apply(job_id, lambda j: rules.annotate(j, fields, now))

    async def resume(self, job_id: str) -> Job:
        now = self._clock()
        return self._apply(job_id, lambda j: rules.resume(j, now))

    async def remove(self, job_id: str) -> None:
        job = self._job(job_id)
        rules.check_removable(job)
        self._drop(job)

    def _drop(self, job: Job) -> None:
        del self._jobs[job.id]
        self._counts[job.status.value] -= 1
        self._emit(job, "removed")

    async def set_queue_paused(self, paused: bool) -> None:
        self._paused = paused
        self._changed.set()
        self._changed = asyncio.Event()

    async def queue_paused(self) -> bool:
        return self._paused

    async def purge_finished(self, older_than_s: float, batch: int = 500) -> int:
        cutoff = self._clock() - int(older_than_s * 1000)
        removed = 0
        while self._finished and self._finished[0][0] < cutoff and removed < batch:
            done_at, job_id = heapq.heappop(self._finished)
            job = self._jobs.get(job_id)
            if job and job.status.finished and job.completed_at == done_at:
                self._drop(job)
                removed += 1
        return removed

    async def next_due_in(self) -> float | None:
        if not self._delayed:
            return None
        return max(0.0, (self._delayed[0][0] - self._clock()) / 1000)

    # -- follows --------------------------------------------------------------------------
    async def add_follow(self, follow: Follow) -> tuple[Follow, bool]:
        for known, _, _ in self._follows.values():
            if known.key == follow.key:
                return known, False
        self._follows[follow.id] = (follow, follow.next_check_at, "")
        return follow, True

    async def list_follows(self) -> list[Follow]:
        return [Follow.from_json(f.to_json()) for f, _, _ in self._follows.values()]

    async def remove_follow(self, follow_id: str) -> None:
        if self._follows.pop(follow_id, None) is None:
            raise FollowNotFound(f"no follow {follow_id}")

    async def claim_follow(self, lease_s: float) -> tuple[Follow, str] | None:
        now = self._clock()
        due = [(d, i) for i, (_, d, _) in self._follows.items() if d <= now]
        if not due:
            return None
        follow_id = min(due)[1]
        follow, _, _ = self._follows[follow_id]
        token = rules.new_token()
        self._follows[follow_id] = (follow, now + lease_ms(lease_s), token)
        return Follow.from_json(follow.to_json()), token

    async def finish_follow(self, follow: Follow, token: str) -> bool:
        held = self._follows.get(follow.id)
        if held is None or held[2] != token:
            return False
        self._follows[follow.id] = (Follow.from_json(follow.to_json()), follow.next_check_at,
                                    "")
        return True

    # -- events ---------------------------------------------------------------------------
    async def last_event_id(self) -> str:
        return str(self._event_seq)

    async def events_after(self, after: str, limit: int = 500) -> list[Event]:
        start = int(after) if after.isascii() and after.isdigit() else 0
        return [e for e in self._events if int(e.id) > start][:limit]

    async def wait_events(self, after: str, timeout_s: float, limit: int = 500) -> list[Event]:
        found = await self.events_after(after, limit)
        if found:
            return found
        changed = self._changed
        try:
            await asyncio.wait_for(changed.wait(), timeout_s)
        except TimeoutError:
            return []
        return await self.events_after(after, limit)
