"""Recording how an attempt ended — completed, released, or failed with a code — in the
store, with one log line per end. A store that is away is waited for (with a back-off); a
lease that is gone means another attempt owns the job now, and this end is dropped.

A completion may claim the next job onto the same slot in the same store call
(``complete_and_claim``): a busy queue costs one store transaction per job, not two.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from tidalq.attempt import ActiveJob
from tidalq.config import Settings
from tidalq.errors import (
    DownloadError,
    FailureCode,
    IllegalTransition,
    JobNotFound,
    LeaseLost,
    StoreUnavailable,
)
from tidalq.heartbeat import StoreHealth
from tidalq.models import Claim, Failure, Job
from tidalq.store.base import JobStore

log = logging.getLogger(__name__)

STORE_BACKOFF_MAX_S = 10.0

Entries = list[dict[str, Any]]


class JobEnds:
    """Writes the ends of one worker's attempts; see the module docstring.

    ``may_claim_on(state)`` says whether the finishing attempt's slot may go straight to a
    next job, and ``start(claim, sent)`` starts that job.
    """

    def __init__(self, store: JobStore, settings: Settings, worker_id: str,
                 health: StoreHealth, on_end: Callable[[Job], None],
                 may_claim_on: Callable[[ActiveJob], bool],
                 start: Callable[[Claim, float], None]) -> None:
        self.store = store
        self.settings = settings
        self.worker_id = worker_id
        self.health = health
        self.on_end = on_end
        self.may_claim_on = may_claim_on
        self.start = start

    def failure(self, exc: DownloadError) -> Failure:
        """What the store keeps of an error: message, code, retryable, capped wait."""
        wait_s = exc.retry_after_s
        retry_after = None if wait_s is None else \
            int(min(wait_s, self.settings.retry_after_max) * 1000)
        return Failure(str(exc), exc.code.value, exc.retryable, retry_after)

    async def finish(self, how: str, state: ActiveJob, result: dict[str, Any] | None = None,
                     tracks: Entries | None = None, failure: Failure | None = None) -> None:
        """Tell the store how the job ended; retried while the store is away. Anything
        else going wrong here ends the job with a code: a finishing task never dies."""
        log_end(how, state, result, tracks, failure)
        try:
            await self._finish_retrying(how, state, result, tracks, failure)
        except Exception as exc:
            log.exception("job %s: recording its end (%s) failed", state.job_id, how)
            if how == "fail" and failure is not None and failure.code == FailureCode.INTERNAL:
                return
            broken = Failure(f"internal error while recording the job's end: {exc!r}",
                             FailureCode.INTERNAL, False)
            await self.finish("fail", state, None, None, broken)

    async def _finish_retrying(self, how: str, state: ActiveJob, result: dict[str, Any] | None,
                               tracks: Entries | None, failure: Failure | None) -> None:
        delay = 0.5
        fused = how == "complete" and self.may_claim_on(state)
        while True:
            try:
                await self._store_titles(state)
                if fused:
                    fused = False  # after a store error, a retry only completes
                    ended = await self._complete_and_claim(state, result, tracks)
                else:
                    ended = await self._record(how, state, result, tracks, failure)
                self.on_end(ended)
                return
            except (LeaseLost, JobNotFound, IllegalTransition) as exc:
                log.warning("job %s finished but its lease is gone: %s", state.job_id, exc)
                return
            except StoreUnavailable as exc:
                self.health.down(exc)
                if state.stop_reason == "drain" and how == "release":
                    return  # its lease will expire and the job be reaped
                await asyncio.sleep(delay)
                delay = min(STORE_BACKOFF_MAX_S, delay * 2)

    async def _store_titles(self, state: ActiveJob) -> None:
        """Titles learned since the last beat are stored before the end."""
        if state.titles:
            await self.store.report_progress(state.job_id, state.claim.token, state.progress,
                                             None, state.titles)
            state.titles = None

    async def _record(self, how: str, state: ActiveJob, result: dict[str, Any] | None,
                      tracks: Entries | None, failure: Failure | None) -> Job:
        job_id, token = state.job_id, state.claim.token
        if how == "complete":
            return await self.store.complete(job_id, token, result, tracks)
        if how == "release":
            if tracks is not None:
                await self.store.report_progress(job_id, token, state.progress, tracks)
            return await self.store.release(job_id, token)
        assert failure is not None
        return await self.store.fail(job_id, token, failure, tracks)

    async def _complete_and_claim(self, state: ActiveJob, result: dict[str, Any] | None,
                                  tracks: Entries | None) -> Job:
        """Complete the job and, in the same store call, claim the next one onto its slot."""
        sent = time.monotonic()
        ended, claim = await self.store.complete_and_claim(
            state.job_id, state.claim.token, self.worker_id, self.settings.lease, result,
            tracks)
        if claim is not None:
            state.slot_given_back = True  # the slot is the next job's now
            self.start(claim, sent)
        return ended


def log_end(how: str, state: ActiveJob, result: dict[str, Any] | None,
            tracks: Entries | None, failure: Failure | None) -> None:
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
