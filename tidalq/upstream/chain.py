"""Several catalogues in the order the settings name them (``upstream = ["tidal", "hifi"]``):
each call goes to the first; when it fails in a way another catalogue may not (not logged
in, rate limited, unavailable), the next one is asked. What does not exist on TIDAL does
not exist anywhere, so ``NOT_FOUND`` and other final answers are not asked again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from tidalq.errors import DownloadError
from tidalq.models import AlbumMeta, Collection, Discography, SearchHit, TrackMeta
from tidalq.terms import Quality
from tidalq.upstream.account import LoginRequired
from tidalq.upstream.base import Lyrics, Upstream
from tidalq.upstream.manifest import Served

log = logging.getLogger(__name__)

T = TypeVar("T")


class InOrder:
    """An :class:`~tidalq.upstream.base.Upstream` made of several, tried in order."""

    def __init__(self, members: Sequence[tuple[str, Upstream]]) -> None:
        self.members = list(members)

    async def _first(self, call: Callable[[Upstream], Awaitable[T]]) -> T:
        last: DownloadError | None = None
        for name, member in self.members:
            if member.problem() is not None and len(self.members) > 1:
                continue  # not logged in: the next one answers
            try:
                return await call(member)
            except DownloadError as exc:
                if not (exc.retryable or isinstance(exc, LoginRequired)):
                    raise
                log.info("upstream %s failed (%s); asking the next", name, exc)
                last = exc
        if last is None:
            raise LoginRequired(self.problem() or "no upstream can serve")
        raise last

    async def track_in_album(self, track_id: int) -> TrackMeta:
        return await self._first(lambda u: u.track_in_album(track_id))

    async def album(self, album_id: int) -> AlbumMeta:
        return await self._first(lambda u: u.album(album_id))

    async def playlist(self, uuid: str) -> Collection:
        return await self._first(lambda u: u.playlist(uuid))

    async def mix(self, mix_id: str) -> Collection:
        return await self._first(lambda u: u.mix(mix_id))

    async def discography(self, artist_id: int, include: tuple[str, ...]) -> Discography:
        return await self._first(lambda u: u.discography(artist_id, include))

    async def stream(self, track_id: int, quality: Quality) -> Served:
        return await self._first(lambda u: u.stream(track_id, quality))

    async def lyrics(self, track_id: int) -> Lyrics | None:
        try:
            return await self._first(lambda u: u.lyrics(track_id))
        except DownloadError:
            return None

    async def search(self, kind: str, query: str, limit: int) -> list[SearchHit]:
        return await self._first(lambda u: u.search(kind, query, limit))

    async def favorites(self, kind: str) -> list[int | str]:
        return await self._first(lambda u: u.favorites(kind))

    def cover_url(self, cover: str, size: int = 1280) -> str:
        return self.members[0][1].cover_url(cover, size)

    def resting(self) -> dict[str, float]:
        merged: dict[str, float] = {}
        for _, member in self.members:
            merged.update(member.resting())
        return merged

    def problem(self) -> str | None:
        """A problem only when no member can serve: the first one's."""
        problems = [m.problem() for _, m in self.members]
        return None if any(p is None for p in problems) else problems[0]
