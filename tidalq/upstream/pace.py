"""Politeness toward one upstream: requests spaced evenly to at most ``per_minute`` a minute,
and a pause of the whole upstream after a 429 (every request waits, not just the one that
was refused). CDN downloads are not paced: only API requests count.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from tidalq.errors import RateLimited


class Pace:
    """See the module docstring. ``turn`` waits for a request's turn."""

    def __init__(self, per_minute: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.gap_s = 60.0 / per_minute if per_minute > 0 else 0.0
        self._clock = clock
        self._sleep = sleep
        self._next_at = 0.0
        self._paused_until = 0.0
        self.requests = 0  # how many turns were given (the bench's requests per track)

    def pause(self, seconds: float) -> None:
        """Hold every request for ``seconds`` from now (never shortening a longer pause)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    def paused_for(self) -> float:
        return max(0.0, self._paused_until - self._clock())

    async def turn(self, max_wait_s: float) -> None:
        """Wait until this request may go. A pause longer than ``max_wait_s`` is not
        waited out here: RateLimited says when to come back (the job waits in the queue)."""
        paused = self.paused_for()
        if paused > max_wait_s:
            raise RateLimited(f"TIDAL asked us to slow down: paused for {paused:.0f} s more",
                              retry_after_s=paused)
        now = self._clock()
        slot = max(now, self._next_at, self._paused_until)
        self._next_at = slot + self.gap_s
        self.requests += 1
        if slot > now:
            await self._sleep(slot - now)
