"""The worker pool: claims jobs under leases, runs them through the pipeline, keeps the
leases alive, and stops work the moment a job is cancelled or its lease is lost.

- ``max_concurrent`` download slots in total: a claim needs a free slot, and an album's
  extra parallel tracks take slots of their own (see ``Pipeline._run_lanes``).
- Woken at once by store events (new jobs, resumes, retries), by the due time of the next
  delayed retry, and by ``poll_interval`` only as a fall-back.
- One heartbeat task renews every lease each ``lease/3`` and writes progress; a lease
  reported LOST or CANCELLED cancels that job's task (its HTTP stream stops at once).
- The store going away stops claims; finishes are retried until it is back.
- Draining: stop claiming, let running jobs finish within a deadline, then release the
  rest to ``queued`` without spending an attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tidalq.attempt import ActiveJob, Lazy
from tidalq.collections import CollectionRunner
from tidalq.config import Settings
from tidalq.errors import (
    DiskFull,
    DownloadError,
    FailureCode,
    JobNotFound,
    LeaseLost,
    StoreUnavailable,
    from_os_error,
)
from tidalq.heartbeat import Heartbeat, StoreHealth
from tidalq.job_end import STORE_BACKOFF_MAX_S, JobEnds
from tidalq.models import Claim, Failure, Job, JobSpec
from tidalq.pipeline import AlbumFailed, Interrupted, Pipeline, Slots
from tidalq.store.base import JobStore
from tidalq.upstream import factory

log = logging.getLogger(__name__)

WAKE_KINDS = {"submitted", "retried", "resumed", "released", "stalled", "queue_resumed",
              "retry_scheduled", "completed", "failed", "cancelled"}
MIN_FREE_BYTES = 64 << 20


class ByteMeter:
    """Bytes received per second over the last few seconds (the daemon's download speed)."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, size: int) -> None:
        now = time.monotonic()
        self._samples.append((now, size))
        while self._samples and now - self._samples[0][0] > self.window_s:
            self._samples.popleft()

    def rate(self) -> float:
        now = time.monotonic()
        while self._samples and now - self._samples[0][0] > self.window_s:
            self._samples.popleft()
        if not self._samples:
            return 0.0
        span = max(1.0, now - self._samples[0][0])  # not diluted right after a start
        return sum(n for _, n in self._samples) / span


class StoreChildren:
    """An artist job's view of the queue (see :class:`tidalq.collections.Children`)."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self._cursor: str | None = None

    async def submit(self, spec: JobSpec) -> str:
        job, _ = await self.store.submit(spec)
        return job.id

    async def statuses(self, job_ids: list[str]) -> dict[str, str]:
        found = {}
        for job_id in job_ids:
            with contextlib.suppress(JobNotFound):
                found[job_id] = (await self.store.get(job_id)).status.value
        return found

    async def changed(self, timeout_s: float) -> None:
        if self._cursor is None:
            self._cursor = await self.store.last_event_id()
        events = await self.store.wait_events(self._cursor, timeout_s)
        if events:
            self._cursor = events[-1].id


class WorkerPool:
    """Runs jobs from one store; see the module docstring."""

    def __init__(self, store: JobStore, pipeline: Pipeline | None, settings: Settings,
                 worker_id: str, slots: Slots) -> None:
        self.store = store
        self.pipeline = pipeline
        self.settings = settings
        self.worker_id = worker_id
        self.slots = slots
        self.active: dict[str, ActiveJob] = {}
        self.claiming = True
        self.health = StoreHealth()
        self.disk_full = False
        self.meter = ByteMeter()
        self.on_end: Callable[[Job], None] = lambda job: None  # a job this pool finished
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self.heartbeat = Heartbeat(store, settings, self.active, self.health, self._stop)
        self.ends = JobEnds(store, settings, worker_id, self.health,
                            lambda job: self.on_end(job), self._may_claim_on, self._start)

    # -- state for `status` -------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.pipeline is not None and self.claiming

    @property
    def active_downloads(self) -> int:
        return self.slots.in_use

    def problem(self) -> str | None:
        if self.pipeline is None and self.settings.workers and factory.missing(self.settings):
            return factory.missing(self.settings)
        if self._upstream_problem():
            return f"{self._upstream_problem()}; claims paused"
        if not self.health.ok:
            return f"job store unavailable: {self.health.error}; claims paused, reconnecting"
        if self.disk_full:
            return f"disk full under {self.settings.download_dir}; claims paused"
        return None

    @property
    def store_ok(self) -> bool:
        return self.health.ok

    async def keep_leases(self) -> None:
        """The heartbeat (see :mod:`tidalq.heartbeat`), until the pool has stopped."""
        await self.heartbeat.run(self._stopped)

    def _may_claim(self) -> bool:
        """No claim while the disk is full or the catalogue cannot serve (not logged in)."""
        if self.disk_full and not self._space_returned():
            return False
        return self._upstream_problem() is None

    def _upstream_problem(self) -> str | None:
        """Why the catalogue cannot serve now (not logged in): no job is claimed meanwhile."""
        return self.pipeline.upstream.problem() if self.pipeline is not None else None

    def wake(self) -> None:
        self._wake.set()

    # -- the claim loop -----------------------------------------------------------------------
    async def run(self) -> None:
        """Claim and start jobs until :meth:`stop_claiming`."""
        cursor = await self._cursor()
        backoff = 0.5
        while self.claiming:
            await self.slots.acquire()
            started = False
            try:
                # when claims are paused this falls through to _idle: never a busy loop
                if self.claiming and self._may_claim():
                    sent = time.monotonic()
                    claim = await self.store.claim(self.worker_id, self.settings.lease)
                    self.health.back()
                    backoff = 0.5
                    if claim is not None:
                        self._start(claim, sent)
                        started = True
            except StoreUnavailable as exc:
                self.health.down(exc)
                await asyncio.sleep(backoff)
                backoff = min(STORE_BACKOFF_MAX_S, backoff * 2)
                continue
            finally:
                if not started:
                    self.slots.release()
            if not started:
                cursor = await self._idle(cursor)
        self._stopped.set()

    async def _cursor(self) -> str:
        try:
            return await self.store.last_event_id()
        except StoreUnavailable:
            return "0"

    async def _idle(self, cursor: str) -> str:
        """Wait for a reason to claim again: a relevant event, a due retry, or the poll."""
        timeout = self.settings.poll_interval
        try:
            due = await self.store.next_due_in()
            if due is not None:
                timeout = min(timeout, max(0.01, due))
            deadline = time.monotonic() + timeout
            while self.claiming and not self._wake.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                wait = asyncio.create_task(self.store.wait_events(cursor, left))
                woke = asyncio.create_task(self._wake.wait())
                try:
                    done, _ = await asyncio.wait({wait, woke},
                                                 return_when=asyncio.FIRST_COMPLETED)
                finally:  # also when this loop is cancelled: no read outlives the store
                    woke.cancel()
                    if not wait.done():
                        wait.cancel()
                        await asyncio.gather(wait, return_exceptions=True)
                if wait not in done or wait.cancelled():
                    break
                events = wait.result()
                if events:
                    cursor = events[-1].id
                    if any(e.kind in WAKE_KINDS for e in events):
                        break
        except StoreUnavailable as exc:
            self.health.down(exc)
            await asyncio.sleep(1)
        self._wake.clear()
        return cursor

    def _space_returned(self) -> bool:
        try:
            free = shutil.disk_usage(self._existing(self.settings.download_dir)).free
        except OSError:
            return False
        if free >= MIN_FREE_BYTES:
            log.warning("disk space is back under %s; claiming again", self.settings.download_dir)
            self.disk_full = False
        return not self.disk_full

    @staticmethod
    def _existing(path: Path) -> Path:
        while not path.exists() and path != path.parent:
            path = path.parent
        return path

    # -- running one job ----------------------------------------------------------------------
    def _start(self, claim: Claim, sent: float) -> None:
        previous = self.active.get(claim.job.id)
        if previous is not None:
            # our own job was reaped (the wall clock jumped past its lease) and claimed
            # again: the old attempt has lost its lease and must end before the new one runs
            log.warning("job %s was claimed again while running here; stopping the old "
                        "attempt", claim.job.id)
            self._stop(previous, "lost")
        state = ActiveJob(claim, self.settings.lease, sent, samples=[(time.monotonic(), 0.0)],
                          ask_renewal=self.heartbeat.beat_now)
        self.active[claim.job.id] = state
        after = previous.task if previous is not None else None
        state.task = asyncio.create_task(self._run_job(state, after), name=f"job {claim.job.id}")

    def _stop(self, state: ActiveJob, reason: str) -> None:
        if state.task is not None and not state.task.done():
            state.stop_reason = reason
            state.task.cancel()

    def _report(self, state: ActiveJob) -> Any:
        def report(progress: Lazy[float], tracks: Lazy[list[dict[str, Any]]] | None,
                   force: bool) -> None:
            state.progress_source = progress
            if tracks is not None:
                state.tracks_source = tracks
            state.dirty = True
            if force:  # write it now, not at the next beat
                self.heartbeat.beat_now()

        return report

    async def _run_job(self, state: ActiveJob, after: asyncio.Task[None] | None) -> None:
        job = state.claim.job
        assert self.pipeline is not None
        log.info("job %s start: %s %s %s attempt %d/%d", job.id, job.spec.type,
                 job.spec.tidal_id, job.spec.quality.value, job.attempts, job.max_attempts)
        try:
            if after is not None:
                await asyncio.wait([after])
            result, tracks = await self._work(state)
            await self.ends.finish("complete", state, result, tracks)
        except asyncio.CancelledError:
            if state.stop_reason == "drain":
                await self.ends.finish("release", state)
            log.info("job %s stopped: %s", job.id, state.stop_reason or "cancelled")
        except LeaseLost as exc:
            log.warning("job %s stopped: %s", job.id, exc)
        except Interrupted as exc:
            await self.ends.finish("release", state, tracks=state.tracks)
            log.info("job %s released between tracks: %s", job.id, exc)
        except AlbumFailed as exc:
            await self.ends.finish("fail", state, None, exc.tracks, self.ends.failure(exc))
        except (DownloadError, OSError) as exc:
            failure = exc if isinstance(exc, DownloadError) else from_os_error(exc)
            if isinstance(failure, DiskFull):
                self.disk_full = True
            await self.ends.finish("fail", state, None, state.tracks, self.ends.failure(failure))
        except Exception as exc:  # a bug must fail the job, never the daemon
            log.exception("job %s crashed", job.id)
            await self.ends.finish("fail", state, None, state.tracks,
                               Failure(f"internal error: {exc!r}", FailureCode.INTERNAL, False))
        finally:
            if self.active.get(job.id) is state:  # never undo a newer attempt's entry
                del self.active[job.id]
            if not state.slot_given_back:
                self.slots.release()
            self.wake()

    async def _work(self, state: ActiveJob
                    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]] | None]:
        """Run the job by its type; (result, track entries) for the store."""
        assert self.pipeline is not None
        job, report = state.claim.job, self._report(state)
        kind = job.spec.type
        if kind == "track":
            return await self.pipeline.run_track_job(job, report, state), None
        if kind == "album":
            return None, await self.pipeline.run_album_job(job, report, state)
        runner = CollectionRunner(self.pipeline, self.settings)
        if kind in ("playlist", "mix"):
            return await runner.run_collection_job(job, report, state)
        return await runner.run_artist_job(job, report, state, StoreChildren(self.store),
                                           lambda: self._give_back_slot(state))

    def _give_back_slot(self, state: ActiveJob) -> None:
        """A job that only waits (an artist job for its albums) frees its download slot."""
        if not state.slot_given_back:
            state.slot_given_back = True
            self.slots.release()

    def _may_claim_on(self, state: ActiveJob) -> bool:
        """Whether a finishing job may hand its slot straight to the next job: what the
        claim loop would check before claiming with that slot."""
        return (self.claiming and not state.slot_given_back and self.health.ok
                and not self.disk_full and self.pipeline is not None)

    def pause_local(self, job_id: str) -> None:
        """A pause that reached this daemon: an album starts no more tracks from now."""
        state = self.active.get(job_id)
        if state is not None:
            state.pause_requested = True

    def rate_limiting(self) -> dict[str, Any]:
        """Which upstream servers are being rested after a 429 or a failure, for how long."""
        if self.pipeline is None:
            return {"servers": {}}
        return {"servers": self.pipeline.upstream.resting()}

    def cancel_local(self, job_id: str) -> None:
        """A cancel that reached this daemon: stop the job now, not at the next heartbeat."""
        state = self.active.get(job_id)
        if state is not None:
            self._stop(state, "cancelled")

    # -- shutdown -----------------------------------------------------------------------------
    def stop_claiming(self) -> None:
        self.claiming = False
        self.wake()

    async def drain(self, deadline_s: float) -> None:
        """Let running tracks finish within the deadline; release the rest."""
        self.stop_claiming()
        if self.pipeline is not None:
            self.pipeline.draining = True
        tasks = [s.task for s in self.active.values() if s.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=deadline_s)
        await self.release_all()

    async def release_all(self) -> None:
        leftovers = [s for s in self.active.values() if s.task is not None and not s.task.done()]
        for state in leftovers:
            state.stop_reason = "drain"
            assert state.task is not None
            state.task.cancel()
        if leftovers:
            await asyncio.wait([s.task for s in leftovers if s.task is not None], timeout=5)
        self._stopped.set()
