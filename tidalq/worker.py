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

from tidalq.attempt import LOCAL_LEASE_FRACTION, ActiveJob, Lazy
from tidalq.collections import CollectionRunner
from tidalq.config import Settings
from tidalq.errors import (
    DiskFull,
    DownloadError,
    FailureCode,
    IllegalTransition,
    JobNotFound,
    LeaseLost,
    StoreUnavailable,
    from_os_error,
)
from tidalq.models import Claim, Failure, Job, JobSpec, LeaseState
from tidalq.pipeline import AlbumFailed, Interrupted, Pipeline, Slots
from tidalq.store.base import JobStore
from tidalq.upstream import factory

log = logging.getLogger(__name__)

WAKE_KINDS = {"submitted", "retried", "resumed", "released", "stalled", "queue_resumed",
              "retry_scheduled", "completed", "failed", "cancelled"}
MIN_FREE_BYTES = 64 << 20
LATE_RENEWAL_WAIT_S = 1.0  # how long a renewal past the local deadline may take
STORE_BACKOFF_MAX_S = 10.0


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
        self.store_ok = True
        self.store_error: str | None = None
        self.disk_full = False
        self.meter = ByteMeter()
        self.on_end: Callable[[Job], None] = lambda job: None  # a job this pool finished
        self._wake = asyncio.Event()
        self._beat_now = asyncio.Event()
        self._stopped = asyncio.Event()

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
        if not self.store_ok:
            return f"job store unavailable: {self.store_error}; claims paused, reconnecting"
        if self.disk_full:
            return f"disk full under {self.settings.download_dir}; claims paused"
        return None

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
                if not self.claiming or (self.disk_full and not self._space_returned()):
                    continue
                sent = time.monotonic()
                claim = await self.store.claim(self.worker_id, self.settings.lease)
                self._store_back()
                backoff = 0.5
                if claim is not None:
                    self._start(claim, sent)
                    started = True
            except StoreUnavailable as exc:
                self._store_down(exc)
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
                done, _ = await asyncio.wait({wait, woke}, return_when=asyncio.FIRST_COMPLETED)
                woke.cancel()
                if wait not in done:
                    wait.cancel()
                    await asyncio.gather(wait, return_exceptions=True)
                    break
                events = wait.result()
                if events:
                    cursor = events[-1].id
                    if any(e.kind in WAKE_KINDS for e in events):
                        break
        except StoreUnavailable as exc:
            self._store_down(exc)
            await asyncio.sleep(1)
        self._wake.clear()
        return cursor

    def _store_down(self, exc: Exception) -> None:
        if self.store_ok:
            log.error("job store unavailable, claims paused: %s", exc)
        self.store_ok, self.store_error = False, str(exc)

    def _store_back(self) -> None:
        if not self.store_ok:
            log.warning("job store is back; claiming again")
        self.store_ok, self.store_error = True, None

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
        state = ActiveJob(claim, self.settings.lease, sent, samples=[(time.monotonic(), 0.0)])
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
                self._beat_now.set()

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
            await self._finish("complete", state, result, tracks)
        except asyncio.CancelledError:
            if state.stop_reason == "drain":
                await self._finish("release", state)
            log.info("job %s stopped: %s", job.id, state.stop_reason or "cancelled")
        except LeaseLost as exc:
            log.warning("job %s stopped: %s", job.id, exc)
        except Interrupted as exc:
            await self._finish("release", state, tracks=state.tracks)
            log.info("job %s released between tracks: %s", job.id, exc)
        except AlbumFailed as exc:
            await self._finish("fail", state, None, exc.tracks, self._failure(exc))
        except (DownloadError, OSError) as exc:
            failure = exc if isinstance(exc, DownloadError) else from_os_error(exc)
            if isinstance(failure, DiskFull):
                self.disk_full = True
            await self._finish("fail", state, None, state.tracks, self._failure(failure))
        except Exception as exc:  # a bug must fail the job, never the daemon
            log.exception("job %s crashed", job.id)
            await self._finish("fail", state, None, state.tracks,
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

    def _failure(self, exc: DownloadError) -> Failure:
        wait_s = exc.retry_after_s
        retry_after = None if wait_s is None else \
            int(min(wait_s, self.settings.retry_after_max) * 1000)
        return Failure(str(exc), exc.code.value, exc.retryable, retry_after)

    async def _finish(self, how: str, state: ActiveJob, result: dict[str, Any] | None = None,
                      tracks: list[dict[str, Any]] | None = None,
                      failure: Failure | None = None) -> None:
        """Tell the store how the job ended; retried while the store is away. Anything
        else going wrong here ends the job with a code: a finishing task never dies."""
        self._log_end(how, state, result, tracks, failure)
        try:
            await self._finish_retrying(how, state, result, tracks, failure)
        except Exception as exc:
            log.exception("job %s: recording its end (%s) failed", state.job_id, how)
            if how == "fail" and failure is not None and failure.code == FailureCode.INTERNAL:
                return
            broken = Failure(f"internal error while recording the job's end: {exc!r}",
                             FailureCode.INTERNAL, False)
            await self._finish("fail", state, None, None, broken)

    @staticmethod
    def _log_end(how: str, state: ActiveJob, result: dict[str, Any] | None,
                 tracks: list[dict[str, Any]] | None, failure: Failure | None) -> None:
        """One line per job end, for journald and grep: key=value, titles quoted."""
        outcome = {"complete": "completed", "release": "released"}.get(how, "failed")
        if failure is not None and failure.retryable and how == "fail":
            outcome = "failed-will-retry"
        files = [result] if result else [t for t in tracks or () if t.get("status")]
        size = sum(int(f.get("bytes") or 0) for f in files)
        titles = " ".join(f'{k}="{v}"' for k, v in state.known_titles.items())
        error = f' code={failure.code} error="{failure.message[:200]}"' if failure else ""
        log.info("job %s end: outcome=%s kind=%s id=%s %s duration_s=%.1f bytes=%d%s",
                 state.job_id, outcome, state.claim.job.spec.type,
                 state.claim.job.spec.tidal_id, titles,
                 time.monotonic() - state.started, size, error)

    async def _finish_retrying(self, how: str, state: ActiveJob, result: dict[str, Any] | None,
                               tracks: list[dict[str, Any]] | None,
                               failure: Failure | None) -> None:
        job_id, token = state.job_id, state.claim.token
        delay = 0.5
        fused = how == "complete" and self._may_claim_on(state)
        while True:
            try:
                if state.titles:  # learned since the last beat: stored before the end
                    await self.store.report_progress(job_id, token, state.progress, None,
                                                     state.titles)
                    state.titles = None
                if fused:
                    fused = False  # after a store error, a retry only completes
                    ended = await self._complete_and_claim(state, result, tracks)
                elif how == "complete":
                    ended = await self.store.complete(job_id, token, result, tracks)
                elif how == "release":
                    if tracks is not None:
                        await self.store.report_progress(job_id, token, state.progress, tracks)
                    ended = await self.store.release(job_id, token)
                else:
                    assert failure is not None
                    ended = await self.store.fail(job_id, token, failure, tracks)
                self.on_end(ended)
                return
            except (LeaseLost, JobNotFound, IllegalTransition) as exc:
                log.warning("job %s finished but its lease is gone: %s", job_id, exc)
                return
            except StoreUnavailable as exc:
                self._store_down(exc)
                if state.stop_reason == "drain" and how == "release":
                    return  # its lease will expire and the job be reaped
                await asyncio.sleep(delay)
                delay = min(STORE_BACKOFF_MAX_S, delay * 2)

    def _may_claim_on(self, state: ActiveJob) -> bool:
        """Whether a finishing job may hand its slot straight to the next job: what the
        claim loop would check before claiming with that slot."""
        return (self.claiming and not state.slot_given_back and self.store_ok
                and not self.disk_full and self.pipeline is not None)

    async def _complete_and_claim(self, state: ActiveJob, result: dict[str, Any] | None,
                                  tracks: list[dict[str, Any]] | None) -> Job:
        """Complete the job and, in the same store call, claim the next one onto its slot:
        a busy queue costs one store transaction per job, not two."""
        sent = time.monotonic()
        ended, claim = await self.store.complete_and_claim(
            state.job_id, state.claim.token, self.worker_id, self.settings.lease, result,
            tracks)
        if claim is not None:
            state.slot_given_back = True  # the slot is the next job's now
            self._start(claim, sent)
        return ended

    # -- heartbeat ----------------------------------------------------------------------------
    async def heartbeat(self) -> None:
        """Renew leases every lease/3 and write progress (at most every 0.5 s); stop any
        attempt whose lease could not be renewed in time (see :class:`ActiveJob`)."""
        last_renew = 0.0
        beat_timeout = self.settings.lease / 3
        while not self._stopped.is_set() or self.active:
            now = time.monotonic()
            renew = now - last_renew >= self.settings.lease / 3
            if renew:
                last_renew = now
            for state in list(self.active.values()):
                late = time.monotonic() >= state.lease_expires_at()
                # a late renewal still holds when the store kept the lease ours (this
                # process was stopped, and no one took the job): the token proves it.
                # Nothing is published meanwhile (check_lease goes by the same deadline),
                # and a store that does not answer at once delays the stop by one second
                timeout = min(beat_timeout, LATE_RENEWAL_WAIT_S) if late else beat_timeout
                if late or renew or state.dirty:
                    try:
                        await asyncio.wait_for(self._beat(state), timeout)
                    except TimeoutError:
                        self._store_down(StoreUnavailable("the store did not answer a renewal"))
                if late and time.monotonic() >= state.lease_expires_at():
                    log.error("job %s: lease not renewed for %.0f s; stopping its work",
                              state.job_id, time.monotonic() - state.renewed_at)
                    self._stop(state, "lost")
            self._beat_now.clear()
            # finer than the margin a lease keeps: a deadline is never overshot by a beat
            margin = self.settings.lease * (1 - LOCAL_LEASE_FRACTION)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._beat_now.wait(),
                                       min(0.5, self.settings.lease / 3, margin / 2))

    async def _beat(self, state: ActiveJob) -> None:
        job_id, token = state.job_id, state.claim.token
        try:
            if state.dirty:
                state.dirty, titles, state.titles = False, state.titles, None
                state.sample()
                lease = await self.store.report_progress(job_id, token, state.progress,
                                                         state.tracks, titles)
                if lease.holds:
                    sent = time.monotonic()
                    lease = await self.store.renew(job_id, token, self.settings.lease)
            else:
                sent = time.monotonic()
                lease = await self.store.renew(job_id, token, self.settings.lease)
            self._store_back()
        except StoreUnavailable as exc:
            self._store_down(exc)
            return
        if lease.holds:
            state.renewed_at = max(state.renewed_at, sent)
            state.pause_requested = lease is LeaseState.PAUSE
            return
        reason = "cancelled" if lease is LeaseState.CANCELLED else "lost"
        if state.task is not None and not state.task.done():
            log.info("job %s: lease %s; stopping its work", job_id, reason)
        self._stop(state, reason)

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
