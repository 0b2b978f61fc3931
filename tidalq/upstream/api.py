"""The hifi-api client, the :class:`~tidalq.upstream.base.Upstream` of ``upstream =
"hifi"``: one aiohttp session, several servers, failover, typed failures.

Servers (``api_urls``) are tried in order. One that fails (5xx, connection error, timeout,
token error, a 200 whose body carries an error) is skipped for ``skip_window_s``; one that
answers 429 is skipped until its ``Retry-After``. When every server failed, the error of
the last one is raised, carrying its failure code and whether a retry can help. aiohttp's
exceptions are translated here and nowhere else.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp

from tidalq.errors import (
    AuthFailed,
    DownloadError,
    ManifestError,
    RateLimited,
    UpstreamNotFound,
    UpstreamUnavailable,
)
from tidalq.models import AlbumMeta, Collection, Discography, Release, SearchHit, TrackMeta
from tidalq.terms import Quality
from tidalq.upstream import listings as ls
from tidalq.upstream import manifest as mf
from tidalq.upstream import shapes
from tidalq.upstream.account import LoginRequired
from tidalq.upstream.base import Lyrics, as_in_its_album, cover_image_url
from tidalq.upstream.http import json_of, parse_retry_after, read_capped

log = logging.getLogger(__name__)

ALBUM_PAGE = 100
MAX_BODY_BYTES = 8 << 20


# what a 404 of each endpoint says does not exist
WHAT_IS_MISSING = {"info": "track", "track": "track", "trackManifests": "track",
                   "album": "album", "lyrics": "lyrics of track", "mix": "mix",
                   "playlist": "playlist (or it is private)", "artist": "artist"}
SEARCH_PARAMS = {"track": "s", "album": "al", "artist": "a", "playlist": "p"}
COLLECTION_PAGE = 100  # what we ask for; servers may answer fewer per page
MAX_PAGES = 1000


def unwrap(body: Any) -> Any:
    """The payload of a ``{"version": "2.x", "data": …}`` envelope, or a bare payload."""
    if isinstance(body, dict) and "data" in body and str(body.get("version", "2")).startswith("2") \
            and set(body) <= {"version", "data"}:
        return body["data"]
    return body


def body_error(body: Any) -> DownloadError | None:
    """A 200 whose body says the server failed (TIDAL errors, token problems)."""
    if not isinstance(body, dict):
        return None
    status = body.get("status")
    text = " ".join(str(body.get(k, "")) for k in ("userMessage", "detail", "message"))
    if "token" in text.lower() or body.get("subStatus"):
        return AuthFailed(f"upstream token problem: {text.strip()[:200] or body.get('subStatus')}")
    if isinstance(status, int) and status >= 400:
        if status == 404:
            return UpstreamNotFound(text.strip()[:200] or "not found")
        return UpstreamUnavailable(f"upstream error {status}: {text.strip()[:200]}")
    return None


class UpstreamClient:
    """Talks to hifi-api servers; see the module docstring for failover."""

    def __init__(self, session: aiohttp.ClientSession, api_urls: Sequence[str],
                 cover_url: str = "https://resources.tidal.com", *,
                 connect_timeout_s: float = 10, read_timeout_s: float = 30,
                 skip_window_s: float = 30,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.session = session
        self.api_urls = [u.rstrip("/") for u in api_urls]
        self.cover_base = cover_url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(sock_connect=connect_timeout_s,
                                             sock_read=read_timeout_s)
        self.skip_window_s = skip_window_s
        self._clock = clock
        self._skip_until: dict[str, float] = {}

    def problem(self) -> str | None:
        return None if self.api_urls else "no upstream configured: set api_urls"

    async def search(self, kind: str, query: str, limit: int) -> list[SearchHit]:
        """``/search/`` with the kind's parameter (``s``, ``al``, ``a``, ``p``)."""
        payload = await self.get_json("search", {SEARCH_PARAMS[kind]: query})
        hits = (shapes.search_hit(raw, kind) for raw in shapes.search_items(payload, kind))
        return [h for h in hits if h is not None][:limit]

    async def favorites(self, kind: str) -> list[int | str]:
        raise LoginRequired("favourites come from your own TIDAL account: run tidalq login "
                            "and add \"tidal\" to upstream")

    # -- failover --------------------------------------------------------------------------
    def resting(self) -> dict[str, float]:
        """Servers skipped for now (rate limited or failing), with seconds left."""
        now = self._clock()
        return {u: round(t - now, 1) for u, t in self._skip_until.items() if t > now}

    def _order(self) -> list[str]:
        now = self._clock()
        ready = [u for u in self.api_urls if self._skip_until.get(u, 0) <= now]
        return ready or sorted(self.api_urls, key=lambda u: self._skip_until.get(u, 0))

    async def get_json(self, path: str, params: dict[str, str | int]) -> Any:
        """GET ``path`` from the first server that answers well; typed errors otherwise."""
        if not self.api_urls:
            raise UpstreamUnavailable("no upstream configured: set api_urls")
        last: DownloadError | None = None
        for base in self._order():
            try:
                return await self._get_one(base, path, params)
            except UpstreamNotFound as exc:
                noun = WHAT_IS_MISSING.get(path, path)
                raise UpstreamNotFound(f"{noun} {params.get('id')} does not exist on TIDAL "
                                       f"({exc})") from exc
            except RateLimited as exc:
                self._skip_until[base] = self._clock() + (exc.retry_after_s or self.skip_window_s)
                last = exc
            except DownloadError as exc:
                if not exc.retryable:
                    raise
                self._skip_until[base] = self._clock() + self.skip_window_s
                last = exc
            log.info("upstream %s failed for %s: %s", base, path, last)
        assert last is not None
        raise last

    async def _get_one(self, base: str, path: str, params: dict[str, str | int]) -> Any:
        url = f"{base}/{path.strip('/')}/"
        try:
            async with self.session.get(url, params=params, timeout=self.timeout) as resp:
                raw = await read_capped(resp, MAX_BODY_BYTES)
                return self._answer(resp.status, resp.headers, raw, url)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise UpstreamUnavailable(f"{base} did not answer: {type(exc).__name__} {exc}") from exc

    @staticmethod
    def _answer(status: int, headers: Any, raw: bytes, url: str) -> Any:
        body = json_of(raw, MAX_BODY_BYTES, url)
        if status == 404:
            raise UpstreamNotFound(f"not found upstream: {url}")
        if status == 429:
            raise RateLimited(f"rate limited by {url}",
                              retry_after_s=parse_retry_after(headers.get("Retry-After")))
        if status in (401, 403):
            raise AuthFailed(f"{url} refused us ({status}): {str(body)[:200]}")
        if status >= 400:
            raise UpstreamUnavailable(f"{url} answered {status}")
        if body is None:
            raise UpstreamUnavailable(f"{url} answered something that is not JSON")
        error = body_error(body) or body_error(unwrap(body))
        if error is not None:
            raise error
        return unwrap(body)

    # -- endpoints -------------------------------------------------------------------------
    async def track(self, track_id: int) -> TrackMeta:
        return shapes.parse_track(await self.get_json("info", {"id": track_id}))

    async def track_in_album(self, track_id: int) -> TrackMeta:
        return await as_in_its_album(await self.track(track_id), self.album)

    async def stream(self, track_id: int, quality: Quality) -> mf.Served:
        """The stream for a track: hi-res DASH (``/trackManifests/``) when asked and
        available, else ``/track/`` at the quality asked (LOSSLESS for hi-res)."""
        if quality is Quality.HI_RES_LOSSLESS:
            try:
                hires = await self.hires(track_id)
            except UpstreamNotFound:
                hires = None  # an older server without /trackManifests/
            if hires is not None:
                return hires
            return await self.playback(track_id, Quality.LOSSLESS)
        return await self.playback(track_id, quality)

    async def playback(self, track_id: int, quality: Quality) -> mf.Served:
        payload = await self.get_json("track", {"id": track_id, "quality": quality.value})
        return mf.parse_playback(playback_info(payload))

    async def hires(self, track_id: int) -> mf.Served | None:
        """The hi-res DASH stream, or None when the track has no hi-res version."""
        payload = await self.get_json("trackManifests", {
            "id": track_id, "quality": "HI_RES_LOSSLESS", "adaptive": "false",
            "formats": "FLAC_HIRES"})
        attrs = mf.manifest_attributes(payload)
        if "FLAC_HIRES" not in (attrs.get("formats") or []):
            return None
        stream = await self._hires_stream(attrs)
        gains = {}
        for key, prefix in (("trackAudioNormalizationData", "track"),
                            ("albumAudioNormalizationData", "album")):
            norm = attrs.get(key) or {}
            if isinstance(norm.get("replayGain"), int | float):
                gains[f"{prefix}ReplayGain"] = float(norm["replayGain"])
            if isinstance(norm.get("peakAmplitude"), int | float):
                gains[f"{prefix}PeakAmplitude"] = float(norm["peakAmplitude"])
        return mf.Served(stream, Quality.HI_RES_LOSSLESS, 24, stream.sample_rate, gains)

    async def _hires_stream(self, attrs: dict[str, Any]) -> mf.DashStream:
        text = attrs.get("manifest")
        if isinstance(text, str) and text.strip():
            raw = text.encode() if text.lstrip().startswith("<") else mf.decode_base64(text)
            return mf.parse_mpd(raw)
        uri = attrs.get("uri")
        if not isinstance(uri, str):
            raise ManifestError("manifest resource has neither manifest nor uri")
        mf.check_url(uri)
        try:
            async with self.session.get(uri, timeout=self.timeout) as resp:
                if resp.status == 403:
                    raise UpstreamUnavailable("MPD URL expired")
                if resp.status >= 400:
                    raise UpstreamUnavailable(f"MPD fetch answered {resp.status}")
                raw = await read_capped(resp, mf.MAX_MANIFEST_BYTES)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise UpstreamUnavailable(f"MPD fetch failed: {exc}") from exc
        return mf.parse_mpd(raw, uri)

    async def album(self, album_id: int) -> AlbumMeta:
        first = album_page(await self.get_json(
            "album", {"id": album_id, "limit": ALBUM_PAGE, "offset": 0}))
        album, items = first
        wanted = int(album.get("numberOfTracks") or 0)
        tracks = shapes.tracks_of(items, album)
        offset = len(items)
        pages = 1
        while len(shapes.numbering(tracks)) < wanted and items and pages < wanted // ALBUM_PAGE + 5:
            _, items = album_page(await self.get_json(
                "album", {"id": album_id, "limit": ALBUM_PAGE, "offset": offset}))
            tracks += shapes.tracks_of(items, album)
            offset += len(items)
            pages += 1
        if len(shapes.numbering(tracks)) < wanted:
            raise UpstreamUnavailable(f"album {album_id} came back incomplete: "
                                      f"{len(shapes.numbering(tracks))} of {wanted} tracks")
        return shapes.parse_album(album, shapes.dedupe(tracks))

    # -- collections ---------------------------------------------------------------------
    async def playlist(self, uuid: str) -> Collection:
        """Every item of a playlist, page by page until the promised count is in hand:
        fewer is an error, never a shorter playlist."""
        items: list[Any] = []
        playlist: dict[str, Any] = {}
        for _ in range(MAX_PAGES):
            playlist, page = ls.collection_page(await self.get_json(
                "playlist", {"id": uuid, "limit": COLLECTION_PAGE, "offset": len(items)}),
                "playlist")
            items += page
            if not page or len(items) >= ls.promised(playlist):
                break
        return ls.collection_of("playlist", uuid, str(playlist.get("title") or uuid), items,
                                ls.promised(playlist))

    async def mix(self, mix_id: str) -> Collection:
        mix, items = ls.collection_page(await self.get_json("mix", {"id": mix_id}), "mix")
        return ls.collection_of("mix", mix_id, str(mix.get("title") or mix_id), items)

    async def discography(self, artist_id: int, include: tuple[str, ...]) -> Discography:
        """An artist's releases of the included kinds, each listing read in full; when
        the server only has its plain, capped listing, the answer says it may be short."""
        about = await self.get_json("artist", {"id": artist_id})
        artist = about.get("artist") if isinstance(about, dict) else None
        name = str((artist or {}).get("name") or f"artist {artist_id}")
        found: dict[int, Release] = {}
        complete = True
        for listing, kinds in ls.LISTINGS.items():
            if not set(kinds) & set(include):
                continue
            albums, paged = await self._listing(artist_id, listing)
            complete &= paged
            for release in ls.releases(albums, listing if paged else None, include):
                found.setdefault(release.album_id, release)
        return Discography(name, tuple(found.values()), complete)

    async def _listing(self, artist_id: int, listing: str) -> tuple[list[dict[str, Any]], bool]:
        albums: list[dict[str, Any]] = []
        for _ in range(MAX_PAGES):
            page, total = ls.release_page(await self.get_json("artist", {
                "f": artist_id, "filter": listing, "limit": COLLECTION_PAGE,
                "offset": len(albums), "skip_tracks": "true"}))
            if total is None:  # the plain listing: no paging, no totals, no compilations
                return page, False
            albums += page
            if not page or len(albums) >= total:
                if len(albums) < total:
                    raise UpstreamUnavailable(f"artist {artist_id}'s {listing} came back "
                                              f"incomplete: {len(albums)} of {total}")
                return albums, True
        raise UpstreamUnavailable(f"artist {artist_id}'s {listing} never ended")

    async def lyrics(self, track_id: int) -> Lyrics | None:
        """Lyrics when the upstream has them; any failure just means none."""
        try:
            return shapes.parse_lyrics(await self.get_json("lyrics", {"id": track_id}))
        except DownloadError:
            return None

    def cover_url(self, cover: str, size: int = 1280) -> str:
        return cover_image_url(self.cover_base, cover, size)


# -- shapes --------------------------------------------------------------------------------

def playback_info(payload: Any) -> dict[str, Any]:
    """The playback info of ``/track/``, also from the legacy list shape."""
    if isinstance(payload, list):
        payload = next((p for p in payload if isinstance(p, dict) and "manifest" in p), None)
    if not isinstance(payload, dict):
        raise ManifestError("playback info has an unknown shape")
    return payload


def album_page(payload: Any) -> tuple[dict[str, Any], list[Any]]:
    """(album, items) of one ``/album/`` page, also from the legacy ``[album, {items}]``."""
    if isinstance(payload, list) and len(payload) >= 2 and isinstance(payload[0], dict) \
            and isinstance(payload[1], dict):
        return payload[0], list(payload[1].get("items") or [])
    if isinstance(payload, dict):
        items = payload.get("items")
        return payload, list(items) if isinstance(items, list) else []
    raise UpstreamUnavailable("album answer has an unknown shape")
