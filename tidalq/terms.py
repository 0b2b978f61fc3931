"""The interface's enumerated words: job statuses, qualities, priorities.

What users type (``--quality``, ``--priority``, ``--status``) and what JSON carries. Apart
from :mod:`tidalq.models` so that the CLI, which needs only these words to parse its flags,
starts without building the models' dataclasses (about 10 ms of every command).
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def live(self) -> bool:
        return self in LIVE_STATUSES

    @property
    def finished(self) -> bool:
        return not self.live


LIVE_STATUSES = frozenset({JobStatus.QUEUED, JobStatus.PROCESSING, JobStatus.PAUSED})


class Quality(StrEnum):
    LOW = "LOW"
    HIGH = "HIGH"
    LOSSLESS = "LOSSLESS"
    HI_RES_LOSSLESS = "HI_RES_LOSSLESS"

    @property
    def rank(self) -> int:
        return list(Quality).index(self)

    @property
    def extension(self) -> str:
        return ".m4a" if self in (Quality.LOW, Quality.HIGH) else ".flac"


class Priority(StrEnum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        """Lower ranks are claimed first."""
        return list(Priority).index(self)


# what `tidalq search` and catalog.search look for
SEARCH_KINDS = ("track", "album", "artist", "playlist")
