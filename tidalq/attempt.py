"""One attempt at a job: what the pipeline may ask of it (:class:`Attempt`), the worker
pool's running attempt that answers (:class:`ActiveJob`: lease token, staging key, the
monotonic lease deadline, learned titles, progress for the beats), and what one track of
it asks for (:class:`TrackRequest`). The pool claims and hands out attempts; it does not
know what an attempt does. Below the pipeline and the library, above the models."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias, TypeVar

from tidalq.errors import LeaseLost
from tidalq.models import Claim, TrackMeta
from tidalq.terms import Quality

T = TypeVar("T")
Lazy: TypeAlias = T | Callable[[], T]  # a value, or what computes it when it is needed
LOCAL_LEASE_FRACTION = 0.8  # stop this long into a lease that could not be renewed
SPEED_WINDOW_S = 5.0  # a job's speed is its bytes over this many seconds
CONFIRM_WAIT_S = 5.0  # how long a late attempt waits for its renewal before publishing


class Attempt(Protocol):
    """One attempt at a job, as the worker runs it under a lease."""

    @property
    def key(self) -> str:
        """Names this attempt's staging files: no two attempts share one."""

    def check_lease(self) -> None:
        """Raise LeaseLost when this attempt may no longer publish anything."""

    async def confirm_lease(self) -> None:
        """Before publishing: a lease past its local deadline (this process was stopped or
        starved) is renewed first if the store still holds it ours; LeaseLost otherwise."""

    def learned(self, titles: dict[str, str]) -> None:
        """The job's artist, album and track titles, once the upstream told them."""

    def fetched(self, track_id: int, done: int, total: int | None) -> None:
        """Bytes of a track received so far, and its size when the CDN said it."""

    def pausing(self) -> bool:
        """The user paused the job while it ran: an album starts no more tracks."""


@dataclass(frozen=True)
class Unleased:
    """An attempt outside the worker pool (tests, benchmarks): it always may publish."""

    key: str

    def check_lease(self) -> None:
        return None

    async def confirm_lease(self) -> None:
        return None

    def learned(self, titles: dict[str, str]) -> None:
        return None

    def fetched(self, track_id: int, done: int, total: int | None) -> None:
        return None

    def pausing(self) -> bool:
        return False


@dataclass(frozen=True)
class TrackRequest:
    meta: TrackMeta
    quality: Quality
    min_quality: Quality | None
    attempt: Attempt
    edition: bool = False  # the album folder carries the album id (another edition is there)
    force: bool = False  # replace what the library has (the job's forceOverwrite)
    musicbrainz: dict[str, list[str]] | None = None  # this track's MusicBrainz tags
    looked: bool = False  # the caller already asked whether the library keeps it


@dataclass
class ActiveJob:
    """One running attempt of a job: its lease, progress and task.

    It is the pipeline's :class:`Attempt`: ``key`` names this
    attempt's staging files, and :meth:`check_lease` is asked right before anything is
    published. The lease is trusted only until ``lease * LOCAL_LEASE_FRACTION`` after the
    last renewal that succeeded was *sent*, by the monotonic clock: a daemon cut off from
    the store, or whose wall clock jumped, stops before the store can give the job to
    anyone else.
    """

    claim: Claim
    lease_s: float
    renewed_at: float  # time.monotonic() when the last successful claim/renewal was sent
    task: asyncio.Task[None] | None = None
    # what the pipeline last reported, read when needed (a beat, `status`, the end): an
    # album of 500 tracks reports thousands of times and is written twice a second
    progress_source: Lazy[float] = 0.0
    tracks_source: Lazy[list[dict[str, Any]]] | None = None
    dirty: bool = False
    stop_reason: str | None = None  # "cancelled", "lost" or "drain"
    samples: list[tuple[float, float]] = field(default_factory=list)
    pause_requested: bool = False  # the user paused it: an album stops between tracks
    slot_given_back: bool = False
    titles: dict[str, str] | None = None  # learned from the upstream, not yet stored
    known_titles: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    ask_renewal: Callable[[], None] = lambda: None  # wakes the heartbeat (set by the pool)
    bytes_by_track: dict[int, tuple[int, int | None]] = field(default_factory=dict)
    bytes_done: int = 0  # received by this attempt (a fetch that starts again counts again)
    byte_samples: deque[tuple[float, int]] = field(default_factory=deque)
    renewed: asyncio.Event = field(default_factory=asyncio.Event)  # set on each renewal

    @property
    def job_id(self) -> str:
        return self.claim.job.id

    @property
    def progress(self) -> float:
        source = self.progress_source
        return source() if callable(source) else source

    @property
    def tracks(self) -> list[dict[str, Any]] | None:
        """A copy of the track entries: the store may serialise it on another thread."""
        source = self.tracks_source
        if source is None:
            return None
        return [dict(t) for t in (source() if callable(source) else source)]

    def sample(self) -> None:
        """Record (now, progress) for the ETA: the last 20 within 30 seconds."""
        now = time.monotonic()
        recent = [s for s in self.samples if now - s[0] < 30][-20:]
        self.samples = [*recent, (now, self.progress)]

    def pausing(self) -> bool:
        return self.pause_requested

    def fetched(self, track_id: int, done: int, total: int | None) -> None:
        """Called for every chunk: constant work, a speed sample at most every 0.25 s."""
        before, _ = self.bytes_by_track.get(track_id, (0, None))
        self.bytes_by_track[track_id] = (done, total)
        self.bytes_done += done - before
        now = time.monotonic()
        if not self.byte_samples or now - self.byte_samples[-1][0] >= 0.25:
            self.byte_samples.append((now, self.bytes_done))
            while now - self.byte_samples[0][0] > SPEED_WINDOW_S:
                self.byte_samples.popleft()

    def bytes_total(self) -> int | None:
        """The job's size when every one of its tracks' sizes is known (a track job once
        its download started; an album once its last track started)."""
        sizes = [total for _, total in self.bytes_by_track.values()]
        wanted = len(self.tracks or []) if self.claim.job.spec.type != "track" else 1
        if not sizes or None in sizes or len(sizes) < wanted:
            return None
        return sum(s for s in sizes if s is not None)

    def speed_bps(self) -> float:
        """Bytes a second over the last few seconds (0 when nothing came lately)."""
        now = time.monotonic()
        recent = [x for x in self.byte_samples if now - x[0] <= SPEED_WINDOW_S]
        if not recent or now - recent[-1][0] > 1.0:
            return 0.0
        span = max(1.0, now - recent[0][0])  # as the daemon's own meter: not a burst's rate
        return (self.bytes_done - recent[0][1]) / span

    def learned(self, titles: dict[str, str]) -> None:
        self.titles = {k: v for k, v in titles.items() if v}
        self.known_titles.update(self.titles)
        self.dirty = True

    def summary(self) -> dict[str, Any]:
        """What `status` shows of a running job: counts and titles, no per-track list."""
        spec = self.claim.job.spec
        tracks = self.tracks or []
        return {"id": self.job_id, "type": spec.type, "tidalId": spec.tidal_id,
                "quality": spec.quality.value, **spec.to_json(), **self.known_titles,
                "progress": round(self.progress, 4), "etaS": self.eta_s(),
                "trackCount": (len(tracks) or None) if spec.type == "album" else None,
                "completedTracks": sum(1 for t in tracks if t.get("status") == "completed")
                if spec.type == "album" else None,
                "bytesDone": self.bytes_done, "bytesTotal": self.bytes_total(),
                "speedBps": round(self.speed_bps())}

    @property
    def key(self) -> str:
        return f"{self.job_id}-{self.claim.token[:12]}"

    def lease_expires_at(self) -> float:
        return self.renewed_at + self.lease_s * LOCAL_LEASE_FRACTION

    def check_lease(self) -> None:
        if self.stop_reason == "lost" or time.monotonic() >= self.lease_expires_at():
            raise LeaseLost(f"job {self.job_id}: this attempt no longer holds its lease")

    async def confirm_lease(self) -> None:
        if self.stop_reason != "lost" and time.monotonic() >= self.lease_expires_at():
            self.renewed.clear()
            self.ask_renewal()  # the heartbeat renews at once, and sets ``renewed``
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.renewed.wait(), CONFIRM_WAIT_S)
        self.check_lease()

    def eta_s(self) -> float | None:
        if len(self.samples) < 2:
            return None
        (t0, p0), (t1, p1) = self.samples[0], self.samples[-1]
        rate = (p1 - p0) / (t1 - t0) if t1 > t0 else 0
        return (1 - p1) / rate if rate > 0 else None

