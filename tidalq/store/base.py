"""The job store contract every backend keeps (see shared/design/queue.md).

A :class:`JobStore` holds jobs, hands them to workers under leases, records every
transition as an event and keeps O(1) counters. Backends: ``memory.MemoryStore`` (the
test seam and the reference model), ``sqlite.SqliteStore`` (the default) and
``redis.RedisStore`` (several daemons, several hosts). Bad input raises
:class:`~tidalq.errors.InvalidInput`; illegal transitions raise
:class:`~tidalq.errors.IllegalTransition` and change nothing.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Collection
from typing import Any

from tidalq.errors import InvalidInput
from tidalq.models import Claim, Event, Failure, Follow, Job, JobSpec, LeaseState
from tidalq.store.rules import DEFAULT_MAX_STALLS
from tidalq.terms import JobStatus, Priority

MAX_RESULT_BYTES = 256 * 1024  # a job document never grows past this
MAX_LIST = 10_000

TrackProgress = list[dict[str, Any]]
Titles = dict[str, str]  # what the daemon learned: artistName, albumTitle, trackTitle
TITLE_KEYS = ("artistName", "albumTitle", "trackTitle", "musicBrainzReleaseId",
              "musicBrainzMatch", "coverUrl")
# what annotate() may set, and the longest value of each: clients set the release, the
# daemon also says how re-tagging a finished job's files went
ANNOTATIONS = {"musicBrainzReleaseId": 200, "musicBrainzMatch": 1000}
CLIENT_ANNOTATIONS = ("musicBrainzReleaseId",)


class JobStore(abc.ABC):
    """One queue of jobs. All methods are coroutines; none blocks the event loop."""

    max_stalls: int = DEFAULT_MAX_STALLS
    url: str = ""
    # leases are judged by the store's own clock (Redis TIME), not by its daemons': a lease
    # that expired there did expire, whatever any daemon's wall clock says
    store_clock: bool = False

    # -- submitting and reading -------------------------------------------------------
    @abc.abstractmethod
    async def submit(self, spec: JobSpec, *, priority: Priority = Priority.NORMAL,
                     max_attempts: int = 3) -> tuple[Job, bool]:
        """Add a job; returns ``(job, created)``. An equal live job is returned instead."""

    @abc.abstractmethod
    async def get(self, job_id: str) -> Job:
        """The job with this exact id; raises JobNotFound."""

    @abc.abstractmethod
    async def resolve(self, prefix: str) -> str:
        """The one job id starting with ``prefix``; JobNotFound or AmbiguousJobId."""

    @abc.abstractmethod
    async def list_jobs(self, status: JobStatus | None = None, limit: int = 100) -> list[Job]:
        """Jobs, newest first."""

    @abc.abstractmethod
    async def stats(self) -> dict[str, int]:
        """Counts per status, from counters kept with each transition (O(1))."""

    # -- the worker's side ------------------------------------------------------------
    @abc.abstractmethod
    async def claim(self, worker: str, lease_s: float) -> Claim | None:
        """Atomically take the highest-priority, oldest due job; None when nothing is due
        or the queue is paused."""

    @abc.abstractmethod
    async def renew(self, job_id: str, token: str, lease_s: float) -> LeaseState:
        """Extend a lease. LOST or CANCELLED tell the holder to stop."""

    @abc.abstractmethod
    async def report_progress(self, job_id: str, token: str, progress: float,
                              track_progress: TrackProgress | None = None,
                              titles: Titles | None = None) -> LeaseState:
        """Record progress (and album track states, and the titles the daemon learned for
        the job's ``job`` object) for a held job."""

    @abc.abstractmethod
    async def complete(self, job_id: str, token: str, result: dict[str, Any] | None = None,
                       track_progress: TrackProgress | None = None) -> Job:
        """Finish successfully. Same token twice is a no-op; another token raises LeaseLost."""

    async def complete_and_claim(self, job_id: str, token: str, worker: str, lease_s: float,
                                 result: dict[str, Any] | None = None,
                                 track_progress: TrackProgress | None = None
                                 ) -> tuple[Job, Claim | None]:
        """Complete a job and claim the next one: a busy worker's one call per job. No
        claim is made when the completion is refused (LeaseLost).
        Backends that can do both in one round trip or transaction override this."""
        done = await self.complete(job_id, token, result, track_progress)
        return done, await self.claim(worker, lease_s)

    @abc.abstractmethod
    async def fail(self, job_id: str, token: str, failure: Failure,
                   track_progress: TrackProgress | None = None) -> Job:
        """Record a failed attempt: back to ``queued`` with ``nextRetryAt`` when retryable
        and attempts remain, else ``failed``."""

    @abc.abstractmethod
    async def release(self, job_id: str, token: str) -> Job:
        """Give a held job back to the queue without spending an attempt."""

    @abc.abstractmethod
    async def reap(self, dead_workers: Collection[str] = (),
                   spare: Collection[str] = ()) -> list[str]:
        """Requeue (or fail, past ``max_stalls``) jobs whose lease expired, and those held
        by ``dead_workers`` (daemons known to have died) without waiting for their lease.
        Jobs named in ``spare`` are known to be held live (by the caller, or by a daemon
        whose instance lock proves it alive): their lease is not judged by the clock."""

    # -- the user's side --------------------------------------------------------------
    @abc.abstractmethod
    async def cancel(self, job_id: str) -> Job:
        """Cancel a queued, paused or running job; a running one learns at its heartbeat."""

    @abc.abstractmethod
    async def retry(self, job_id: str) -> Job:
        """Put a failed or cancelled job back in the queue with fresh attempts."""

    @abc.abstractmethod
    async def pause(self, job_id: str) -> Job: ...

    @abc.abstractmethod
    async def resume(self, job_id: str) -> Job: ...

    @abc.abstractmethod
    async def set_priority(self, job_id: str, priority: Priority) -> Job:
        """Move a queued or paused job to ``priority``'s place in the queue (among its
        jobs, in the order they were submitted); IllegalTransition for a job that started
        or ended."""

    @abc.abstractmethod
    async def annotate(self, job_id: str, fields: dict[str, str]) -> Job:
        """Set client fields (``musicBrainzReleaseId``…) on a job, whatever its status;
        they join its ``job`` object."""

    @abc.abstractmethod
    async def remove(self, job_id: str) -> None:
        """Delete a finished job."""

    @abc.abstractmethod
    async def set_queue_paused(self, paused: bool) -> None:
        """Pause stops claims (running jobs go on); resume wakes idle claimers at once."""

    @abc.abstractmethod
    async def queue_paused(self) -> bool: ...

    @abc.abstractmethod
    async def purge_finished(self, older_than_s: float, batch: int = 500) -> int:
        """Remove up to ``batch`` finished jobs older than the retention; returns how many."""

    @abc.abstractmethod
    async def next_due_in(self) -> float | None:
        """Seconds until the earliest delayed retry is due (0 if one is), None if none."""

    # -- follows ------------------------------------------------------------------------
    @abc.abstractmethod
    async def add_follow(self, follow: Follow) -> tuple[Follow, bool]:
        """Keep a follow; an equal one (same kind and id) is returned instead."""

    @abc.abstractmethod
    async def list_follows(self) -> list[Follow]: ...

    @abc.abstractmethod
    async def remove_follow(self, follow_id: str) -> None:
        """Forget a follow; FollowNotFound when there is none."""

    @abc.abstractmethod
    async def claim_follow(self, lease_s: float) -> tuple[Follow, str] | None:
        """The follow whose check is due, leased to the caller: (follow, token). Its next
        check time becomes the lease's end, so a checker that dies frees it by itself."""

    @abc.abstractmethod
    async def finish_follow(self, follow: Follow, token: str) -> bool:
        """Store a checked follow (its outcome and next check); False when the lease was
        lost (someone else checks it now, or it was removed)."""

    # -- events -------------------------------------------------------------------------
    @abc.abstractmethod
    async def last_event_id(self) -> str:
        """The id of the newest event ("0" when none): read after it for what comes next."""

    @abc.abstractmethod
    async def events_after(self, after: str, limit: int = 500) -> list[Event]: ...

    @abc.abstractmethod
    async def wait_events(self, after: str, timeout_s: float, limit: int = 500) -> list[Event]:
        """Events after ``after``, waiting up to ``timeout_s`` for the first one."""

    # -- daemons and locks shared by everyone on this store ------------------------------
    # A store that several machines share (Redis) keeps who is alive and the locks of the
    # library they share; the embedded stores are one machine's and keep them in memory.
    shares_locks: bool = False
    _announced: dict[str, tuple[float, dict[str, Any]]]

    async def announce(self, daemon: dict[str, Any], ttl_s: float) -> None:
        """This daemon is alive (``daemon["id"]``), with what `status` shows of it, for
        ``ttl_s`` seconds unless announced again."""
        if not hasattr(self, "_announced"):
            self._announced = {}
        self._announced[str(daemon["id"])] = (time.monotonic() + ttl_s, dict(daemon))

    async def daemons(self) -> list[dict[str, Any]]:
        """The live daemons on this store, as they announced themselves."""
        now = time.monotonic()
        return [info for until, info in getattr(self, "_announced", {}).values() if until > now]

    async def try_lock(self, name: str, ttl_s: float) -> str | None:
        """Take lock ``name`` for ``ttl_s`` seconds: its fencing token (tokens grow: a
        later holder's is larger), or None while someone holds it. Stores that
        ``shares_locks`` only."""
        raise NotImplementedError("this store keeps no shared locks")

    async def renew_lock(self, name: str, token: str, ttl_s: float) -> bool:
        """Extend lock ``name`` if ``token`` still holds it; False when it was lost."""
        raise NotImplementedError("this store keeps no shared locks")

    async def unlock(self, name: str, token: str) -> None:
        """Let go of lock ``name`` if ``token`` holds it (nothing otherwise)."""
        raise NotImplementedError("this store keeps no shared locks")

    async def ping(self) -> None:
        """Raise StoreUnavailable when the store cannot be reached."""
        return None

    async def close(self) -> None:
        """Release connections and threads."""
        return None


def check_progress(progress: float) -> float:
    if not isinstance(progress, int | float) or progress != progress:
        raise InvalidInput("progress must be a number", "progress")
    return min(1.0, max(0.0, float(progress)))


def check_annotation(fields: dict[str, str]) -> dict[str, str]:
    if not fields or not all(k in ANNOTATIONS and isinstance(v, str)
                             and 0 < len(v) <= ANNOTATIONS[k] for k, v in fields.items()):
        raise InvalidInput(f"annotations may set {', '.join(ANNOTATIONS)} to short strings",
                           "fields")
    return fields


def check_titles(titles: Titles | None) -> Titles:
    titles = titles or {}
    if set(titles) - set(TITLE_KEYS) or not all(isinstance(v, str) and len(v) <= 1024
                                                for v in titles.values()):
        raise InvalidInput(f"titles may hold {', '.join(TITLE_KEYS)} as short strings",
                           "titles")
    return titles


def check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidInput("limit must be a positive integer", "limit")
    return min(limit, MAX_LIST)


def check_size(doc: object, name: str) -> None:
    import json

    if len(json.dumps(doc, separators=(",", ":"))) > MAX_RESULT_BYTES:
        raise InvalidInput(f"{name} is larger than {MAX_RESULT_BYTES} bytes", name)


def lease_ms(lease_s: float) -> int:
    if not lease_s > 0:
        raise InvalidInput("lease must be positive", "lease_s")
    return int(lease_s * 1000)
