"""Keeping leases alive: one heartbeat renews every running attempt's lease each
``lease/3``, writes their progress (at most every 0.5 s, or at once when asked), and stops
an attempt whose lease was cancelled, lost, or could not be renewed before its local
deadline (see :class:`tidalq.attempt.ActiveJob`).

:class:`StoreHealth` is what the pool, the heartbeat and the end of a job share: whether the
store answered its last call, logged once per change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from tidalq.attempt import LOCAL_LEASE_FRACTION, ActiveJob
from tidalq.config import Settings
from tidalq.errors import StoreUnavailable
from tidalq.models import LeaseState
from tidalq.store.base import JobStore

log = logging.getLogger(__name__)

LATE_RENEWAL_WAIT_S = 1.0  # how long a renewal past the local deadline may take

Stop = Callable[[ActiveJob, str], None]


class StoreHealth:
    """Whether the job store answers; claims pause while it does not."""

    def __init__(self) -> None:
        self.ok = True
        self.error: str | None = None

    def down(self, exc: Exception) -> None:
        if self.ok:
            log.error("job store unavailable, claims paused: %s", exc)
        self.ok, self.error = False, str(exc)

    def back(self) -> None:
        if not self.ok:
            log.warning("job store is back; claiming again")
        self.ok, self.error = True, None


class Heartbeat:
    """Renews the leases of ``active`` and writes their progress; see the module docstring."""

    def __init__(self, store: JobStore, settings: Settings, active: dict[str, ActiveJob],
                 health: StoreHealth, stop: Stop) -> None:
        self.store = store
        self.settings = settings
        self.active = active
        self.health = health
        self.stop = stop
        self._now = asyncio.Event()

    def beat_now(self) -> None:
        """Write progress at once rather than at the next beat."""
        self._now.set()

    async def run(self, stopped: asyncio.Event) -> None:
        """Beat until ``stopped`` is set and no attempt is left."""
        last_renew = 0.0
        while not stopped.is_set() or self.active:
            now = time.monotonic()
            renew = now - last_renew >= self.settings.lease / 3
            if renew:
                last_renew = now
            for state in list(self.active.values()):
                await self._keep(state, renew)
            self._now.clear()
            # finer than the margin a lease keeps: a deadline is never overshot by a beat
            margin = self.settings.lease * (1 - LOCAL_LEASE_FRACTION)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._now.wait(),
                                       min(0.5, self.settings.lease / 3, margin / 2))

    async def _keep(self, state: ActiveJob, renew: bool) -> None:
        """One attempt's beat: renew (or write progress), and stop it past its deadline."""
        late = time.monotonic() >= state.lease_expires_at()
        # a late renewal still holds when the store kept the lease ours (this process was
        # stopped, and no one took the job): the token proves it. Nothing is published
        # meanwhile (check_lease goes by the same deadline), and a store that does not
        # answer at once delays the stop by one second
        beat_timeout = self.settings.lease / 3
        timeout = min(beat_timeout, LATE_RENEWAL_WAIT_S) if late else beat_timeout
        if late or renew or state.dirty:
            try:
                await asyncio.wait_for(self._beat(state), timeout)
            except TimeoutError:
                self.health.down(StoreUnavailable("the store did not answer a renewal"))
        if late and time.monotonic() >= state.lease_expires_at():
            log.error("job %s: lease not renewed for %.0f s; stopping its work",
                      state.job_id, time.monotonic() - state.renewed_at)
            self.stop(state, "lost")

    async def _beat(self, state: ActiveJob) -> None:
        try:
            sent, lease = await self._renew(state)
            self.health.back()
        except StoreUnavailable as exc:
            self.health.down(exc)
            return
        if lease.holds:
            state.renewed_at = max(state.renewed_at, sent)
            state.pause_requested = lease is LeaseState.PAUSE
            state.renewed.set()  # an attempt waiting to publish (confirm_lease) goes on
            return
        reason = "cancelled" if lease is LeaseState.CANCELLED else "lost"
        if state.task is not None and not state.task.done():
            log.info("job %s: lease %s; stopping its work", state.job_id, reason)
        self.stop(state, reason)

    async def _renew(self, state: ActiveJob) -> tuple[float, LeaseState]:
        """Write pending progress, then renew; (when the renewal was sent, the lease)."""
        job_id, token = state.job_id, state.claim.token
        sent = time.monotonic()
        if state.dirty:
            state.dirty, titles, state.titles = False, state.titles, None
            state.sample()
            lease = await self.store.report_progress(job_id, token, state.progress,
                                                     state.tracks, titles)
            if not lease.holds:
                return sent, lease
            sent = time.monotonic()
        return sent, await self.store.renew(job_id, token, self.settings.lease)
