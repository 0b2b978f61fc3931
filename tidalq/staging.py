"""A track's file into staging: fetched, tagged, on disk and verified; what happens to it
next is the pipeline's and the publisher's.

FLAC served whole is verified as it arrives (:mod:`tidalq.media.checked`: a decoder
program fetches it, tags ahead of the frames, one write, the decode overlapping the
download). DASH (remuxed as its segments
come, its STREAMINFO patched at the end), AAC, and machines without libFLAC go the long
way round: fetch, tag, sync, then decode the file.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from tidalq.attempt import TrackRequest
from tidalq.errors import CdnExpired, ManifestError
from tidalq.library.files import sync_file
from tidalq.media import decoders, tags, verify
from tidalq.media.fetch import Fetcher
from tidalq.models import TrackMeta
from tidalq.upstream.base import Lyrics, Upstream
from tidalq.upstream.http import read_capped
from tidalq.upstream.manifest import DashStream, DirectStream, Served

log = logging.getLogger(__name__)

Progress = Callable[[float], None]
T = TypeVar("T")
FRESH_MANIFEST_TRIES = 3
COVERS_KEPT = 32  # albums whose cover bytes are kept (lanes of one album share one)


@dataclass(frozen=True)
class Extras:
    """What a track's file carries besides the stream."""

    cover: bytes | None
    lyrics: Lyrics | None


@dataclass(frozen=True)
class Staged:
    served: Served  # what was fetched in the end (a fresh manifest after an expired URL)
    facts: verify.AudioFacts
    size: int


class Stager:
    """Fetches over the daemon's CDN session; asks the upstream again for a fresh
    manifest when a signed URL expired."""

    def __init__(self, upstream: Upstream, fetcher: Fetcher) -> None:
        self.upstream = upstream
        self.fetcher = fetcher
        self._covers: OrderedDict[str, bytes | None] = OrderedDict()

    async def stage(self, req: TrackRequest, served: Served, staging: Path, extras: Extras,
                    on_progress: Progress) -> Staged:
        staging.parent.mkdir(parents=True, exist_ok=True)
        if _checkable_as_it_arrives(served):
            return await self._checked_as_it_arrives(req, served, staging, extras,
                                                     on_progress)
        return await self._fetched_then_checked(req, served, staging, extras, on_progress)

    async def _checked_as_it_arrives(self, req: TrackRequest, served: Served, staging: Path,
                                     extras: Extras, on_progress: Progress) -> Staged:
        progress = self._progress(req, on_progress)

        async def fetch(served: Served) -> tuple[verify.AudioFacts, int]:
            if not isinstance(served.stream, DirectStream):
                raise ManifestError("a fresh manifest named a DASH stream where the "
                                    "first named a file")
            blocks = tags.flac_blocks(_tag_data(req, served, extras))
            return await self.fetcher.fetch_checked(served.stream.url, staging, blocks,
                                                    progress)

        served, (facts, size) = await self._fetch_fresh(req, served, fetch)
        verify.check_facts(staging, facts, req.meta.duration_s)
        return Staged(served, facts, size)

    async def _fetched_then_checked(self, req: TrackRequest, served: Served, staging: Path,
                                    extras: Extras, on_progress: Progress) -> Staged:
        progress = self._progress(req, on_progress)

        async def fetch(served: Served) -> None:
            if isinstance(served.stream, DashStream):
                await self.fetcher.fetch_dash(served.stream, staging, progress)
            else:
                await self.fetcher.fetch_file(served.stream.url, staging, progress)

        async def start_over() -> None:
            staging.unlink(missing_ok=True)

        served, _ = await self._fetch_fresh(req, served, fetch, start_over)
        data = _tag_data(req, served, extras)
        parsed, size = await asyncio.to_thread(_tag_and_sync, staging, data)
        facts = await verify.verify(staging, req.meta.duration_s, parsed)
        return Staged(served, facts, size)

    async def _fetch_fresh(self, req: TrackRequest, served: Served,
                           fetch: Callable[[Served], Awaitable[T]],
                           start_over: Callable[[], Awaitable[None]] | None = None
                           ) -> tuple[Served, T]:
        """Fetch the stream; a CDN 403 (an expired signature) asks the upstream for it
        again and starts over. Returns what was fetched in the end, and what ``fetch``
        returned."""
        for attempt in range(FRESH_MANIFEST_TRIES):
            try:
                return served, await fetch(served)
            except CdnExpired:
                if attempt == FRESH_MANIFEST_TRIES - 1:
                    raise
                log.info("CDN URL for track %s expired; asking for a fresh one", req.meta.id)
                served = await self.upstream.stream(req.meta.id, req.quality)
                if start_over is not None:
                    await start_over()
        raise AssertionError("unreachable")

    @staticmethod
    def _progress(req: TrackRequest, on_progress: Progress) -> Callable[[int, int | None],
                                                                        None]:
        def progress(done: int, total: int | None) -> None:
            req.attempt.fetched(req.meta.id, done, total)
            if total:
                on_progress(min(0.99, done / total))
        return progress

    async def cover(self, meta: TrackMeta) -> bytes | None:
        """The album's 1280×1280 cover, fetched once per album (missing covers are fine)."""
        if not meta.album_cover:
            return None
        if meta.album_cover in self._covers:
            return self._covers[meta.album_cover]
        url = self.upstream.cover_url(meta.album_cover)
        data: bytes | None = None
        try:
            async with self.fetcher.session.get(url, timeout=self.fetcher.timeout) as resp:
                if resp.status == 200:
                    data = await read_capped(resp, 8 << 20)
        except Exception as exc:  # a cover is decoration: never fail a track for it
            log.warning("cover %s could not be fetched: %s", url, exc)
        self._covers[meta.album_cover] = data
        while len(self._covers) > COVERS_KEPT:
            self._covers.popitem(last=False)
        return data


def _checkable_as_it_arrives(served: Served) -> bool:
    """FLAC served whole, and libFLAC here to decode it."""
    return isinstance(served.stream, DirectStream) and served.stream.codec == "flac" \
        and decoders.available()


def _tag_data(req: TrackRequest, served: Served, extras: Extras) -> tags.TagData:
    return tags.TagData(req.meta, served.quality.value, served.replay_gain, extras.cover,
                        extras.lyrics.text if extras.lyrics else None, req.musicbrainz)


def _tag_and_sync(staging: Path, data: tags.TagData) -> tuple[verify.AudioFacts, int]:
    """Tag the staging file and put it on disk (one trip off the loop); returns what
    tagging parsed of the stream, and the file's size."""
    facts = tags.write_tags(staging, data)
    sync_file(staging)
    return facts, staging.stat().st_size
