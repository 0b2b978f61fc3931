"""One attempt at a job, as the pipeline sees it: the lease it runs under (:class:`Attempt`,
implemented by the worker pool's ``ActiveJob``), and what one track of it asks for
(:class:`TrackRequest`). Below the pipeline and the library, above the models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from tidalq.models import TrackMeta
from tidalq.terms import Quality


class Attempt(Protocol):
    """One attempt at a job, as the worker runs it under a lease."""

    @property
    def key(self) -> str:
        """Names this attempt's staging files: no two attempts share one."""

    def check_lease(self) -> None:
        """Raise LeaseLost when this attempt may no longer publish anything."""

    def learned(self, titles: dict[str, str]) -> None:
        """The job's artist, album and track titles, once the upstream told them."""

    def pausing(self) -> bool:
        """The user paused the job while it ran: an album starts no more tracks."""


@dataclass(frozen=True)
class Unleased:
    """An attempt outside the worker pool (tests, benchmarks): it always may publish."""

    key: str

    def check_lease(self) -> None:
        return None

    def learned(self, titles: dict[str, str]) -> None:
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
