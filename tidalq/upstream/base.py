"""What the pipeline, the collections and the follows need from a catalogue: the
:class:`Upstream` seam.

Implementations: the hifi-api client (:class:`tidalq.upstream.api.UpstreamClient`) and the
user's own TIDAL account (:class:`tidalq.upstream.tidal.TidalClient`); several configured
are tried in order (:class:`tidalq.upstream.chain.InOrder`). The factory
(:func:`tidalq.upstream.factory.make_upstream`) builds them from the settings: nothing
outside ``upstream/`` names which catalogue answers.

Errors an implementation raises are :class:`~tidalq.errors.DownloadError` subclasses, each
with its failure code: ``UpstreamNotFound`` (no such id), ``PreviewOnly``, ``RateLimited``
(with ``retry_after_s``), ``UpstreamUnavailable`` (5xx, timeouts, bad answers, an
incomplete listing), ``AuthFailed`` and ``ManifestError``. Nothing else escapes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from tidalq.errors import DownloadError
from tidalq.models import AlbumMeta, Collection, Discography, SearchHit, TrackMeta
from tidalq.terms import Quality
from tidalq.upstream.manifest import Served


@dataclass(frozen=True)
class Lyrics:
    text: str | None
    synced: str | None  # LRC


class Upstream(Protocol):
    """A catalogue of tracks and the streams of their audio."""

    async def track_in_album(self, track_id: int) -> TrackMeta:
        """A track with its album's details (totals, disc count, UPC, album artist), so a
        track job names and tags its file exactly as its album job would."""

    async def album(self, album_id: int) -> AlbumMeta:
        """An album with every one of its tracks (all pages): fewer is an error."""

    async def playlist(self, uuid: str) -> Collection:
        """Every item of a playlist, in order: fewer than promised is an error."""

    async def mix(self, mix_id: str) -> Collection:
        """A mix's items, in order."""

    async def discography(self, artist_id: int, include: tuple[str, ...]) -> Discography:
        """An artist's releases of the included kinds (``RELEASE_KINDS``)."""

    async def stream(self, track_id: int, quality: Quality) -> Served:
        """The stream of a track at the best quality the catalogue serves up to
        ``quality``, saying which quality it is (the caller enforces a minimum)."""

    async def lyrics(self, track_id: int) -> Lyrics | None:
        """Lyrics when there are any; a failure just means none."""

    def cover_url(self, cover: str, size: int = 1280) -> str:
        """Where an album's cover (its id in the catalogue) is fetched from."""

    def resting(self) -> dict[str, float]:
        """Servers being rested after a 429 or a failure, and for how many seconds more
        (the ``rateLimiting`` of the stats)."""

    def problem(self) -> str | None:
        """Why this catalogue cannot serve now (``not logged in``), or None; while there is
        one, the daemon claims no job."""

    async def search(self, kind: str, query: str, limit: int) -> list[SearchHit]:
        """Up to ``limit`` results of one kind (``SEARCH_KINDS``) for ``query``."""

    async def favorites(self, kind: str) -> list[int | str]:
        """The ids (uuids of playlists) of the account's favourite ``tracks``, ``albums``,
        ``playlists`` or ``artists``; ``LoginRequired`` for a catalogue without an account."""


async def as_in_its_album(meta: TrackMeta,
                          album_of: Callable[[int], Awaitable[AlbumMeta]]) -> TrackMeta:
    """A track as its album lists it (totals, disc count, UPC, album artist), so a track
    job names and tags its file exactly as its album job would; an album that cannot be
    had for good (gone, region-locked) leaves the track as it is."""
    if meta.album_id is None:
        return meta
    try:
        album = await album_of(meta.album_id)
    except DownloadError as exc:
        if not exc.retryable:
            return meta
        raise
    return next((t for t in album.tracks if t.id == meta.id), meta)


def cover_image_url(base: str, cover: str, size: int) -> str:
    """TIDAL's image URL of a cover id (its dashes become path separators)."""
    return f"{base}/images/{cover.replace('-', '/')}/{size}x{size}.jpg"
