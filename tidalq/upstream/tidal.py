"""The user's own TIDAL account as an :class:`~tidalq.upstream.base.Upstream`
(``upstream = "tidal"``): TIDAL's v1 API with the login of :mod:`tidalq.upstream.account`.

Every request carries the bearer token and the session's ``countryCode``, waits its turn
at the account's :class:`~tidalq.upstream.pace.Pace` (``request_pace`` a minute), and after
a 429 pauses the whole upstream for its ``Retry-After``: a short pause is waited out, a
long one ends the job with ``RATE_LIMITED`` and the time to come back. A 401 refreshes the
login once. The catalogue answers have the shapes hifi-api passes through, so the same
parsers (:mod:`tidalq.upstream.shapes`) turn them into tracks and albums, and playback
info goes through the same manifest parsers (BTS and DASH).
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp

from tidalq.errors import (
    AuthFailed,
    DownloadError,
    RateLimited,
    UpstreamNotFound,
    UpstreamUnavailable,
)
from tidalq.models import AlbumMeta, Collection, Discography, Release, SearchHit, TrackMeta
from tidalq.terms import Quality
from tidalq.upstream import listings as ls
from tidalq.upstream import manifest as mf
from tidalq.upstream import shapes
from tidalq.upstream.account import Account, LoginRequired
from tidalq.upstream.base import Lyrics, as_in_its_album, cover_image_url
from tidalq.upstream.http import json_of, parse_retry_after, read_capped
from tidalq.upstream.pace import Pace

log = logging.getLogger(__name__)

PAGE = 100  # TIDAL's largest page
MAX_PAGES = 1000
MAX_BODY_BYTES = 8 << 20
WAIT_OUT_S = 30.0  # a 429 pause this short is waited out inside the request
DEFAULT_PAUSE_S = 60.0  # a 429 without Retry-After
MAX_429_IN_A_ROW = 3
FAVORITE_KINDS = ("tracks", "albums", "playlists", "artists")
# TIDAL's 403 sub-statuses: what each means for a job
NOT_HERE = {4032, 4035}  # not available in the account's country
NO_SUBSCRIPTION = 4033
MONTHLY_QUOTA = 4010


class TidalClient:
    """TIDAL's v1 API for one logged-in account; see the module docstring."""

    def __init__(self, session: aiohttp.ClientSession, account: Account, api_url: str,
                 cover_url: str, pace: Pace, *, read_timeout_s: float = 30) -> None:
        self.session = session
        self.account = account
        self.api_url = api_url.rstrip("/")
        self.cover_base = cover_url.rstrip("/")
        self.pace = pace
        self.timeout = aiohttp.ClientTimeout(sock_connect=10, sock_read=read_timeout_s)

    def problem(self) -> str | None:
        return self.account.problem()

    def resting(self) -> dict[str, float]:
        paused = self.pace.paused_for()
        return {"tidal": round(paused, 1)} if paused > 0 else {}

    # -- requests --------------------------------------------------------------------------
    async def get_json(self, path: str, params: dict[str, str | int] | None = None) -> Any:
        """GET ``{api_url}/{path}`` as the account; typed errors (see the module docstring)."""
        refreshed, limited = False, 0
        while True:
            await self.pace.turn(WAIT_OUT_S)
            token = await self.account.bearer()
            assert self.account.tokens is not None
            query = {**(params or {}), "countryCode": self.account.tokens.country_code}
            status, headers, body = await self._get(path, query, token)
            if status == 401 and not refreshed:
                refreshed = True
                await self.account.refresh(token)
                continue
            if status == 429:
                limited += 1
                wait_s = parse_retry_after(headers.get("Retry-After")) or DEFAULT_PAUSE_S
                self.pace.pause(wait_s)
                log.warning("TIDAL rate limit: every request paused for %.0f s", wait_s)
                if limited >= MAX_429_IN_A_ROW:
                    raise RateLimited("TIDAL keeps answering 429", retry_after_s=wait_s)
                continue
            return answer(status, body, path)

    async def _get(self, path: str, query: dict[str, str | int], token: str
                   ) -> tuple[int, Any, Any]:
        url = f"{self.api_url}/{path}"
        try:
            async with self.session.get(url, params=query, timeout=self.timeout,
                                        headers={"Authorization": f"Bearer {token}"}) as resp:
                raw = await read_capped(resp, MAX_BODY_BYTES)
                status, headers = resp.status, resp.headers
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise UpstreamUnavailable(f"TIDAL did not answer: {type(exc).__name__} {exc}"
                                      ) from exc
        return status, headers, json_of(raw, MAX_BODY_BYTES, "TIDAL")

    async def pages(self, path: str, params: dict[str, str | int] | None = None
                    ) -> tuple[list[Any], int]:
        """Every item of a paged listing (``{limit, offset, totalNumberOfItems, items}``);
        fewer than its total is an error, never a shorter list."""
        items: list[Any] = []
        total = 0
        for _ in range(MAX_PAGES):
            page = await self.get_json(path, {**(params or {}), "limit": PAGE,
                                              "offset": len(items)})
            if not isinstance(page, dict) or not isinstance(page.get("items"), list):
                raise UpstreamUnavailable(f"TIDAL's {path} has an unknown shape")
            total = int(page.get("totalNumberOfItems") or 0)
            items += page["items"]
            if not page["items"] or len(items) >= total:
                break
        if len(items) < total:
            raise UpstreamUnavailable(f"TIDAL's {path} came back incomplete: {len(items)} of "
                                      f"{total}")
        return items, total

    # -- the catalogue -----------------------------------------------------------------------
    async def track_in_album(self, track_id: int) -> TrackMeta:
        meta = shapes.parse_track(await self.get_json(f"tracks/{track_id}"))
        return await as_in_its_album(meta, self.album)

    async def album(self, album_id: int) -> AlbumMeta:
        album = await self.get_json(f"albums/{album_id}")
        if not isinstance(album, dict):
            raise UpstreamUnavailable(f"album {album_id} has an unknown shape")
        items, _ = await self.pages(f"albums/{album_id}/items")
        tracks = shapes.tracks_of(items, album)
        wanted = int(album.get("numberOfTracks") or 0)
        if len(shapes.numbering(tracks)) < wanted:
            raise UpstreamUnavailable(f"album {album_id} came back incomplete: "
                                      f"{len(shapes.numbering(tracks))} of {wanted} tracks")
        return shapes.parse_album(album, shapes.dedupe(tracks))

    async def playlist(self, uuid: str) -> Collection:
        about = await self.get_json(f"playlists/{uuid}")
        if not isinstance(about, dict):
            raise UpstreamUnavailable(f"playlist {uuid} has an unknown shape")
        items, _ = await self.pages(f"playlists/{uuid}/items")
        return ls.collection_of("playlist", uuid, str(about.get("title") or uuid), items,
                                ls.promised(about))

    async def mix(self, mix_id: str) -> Collection:
        items, _ = await self.pages(f"mixes/{mix_id}/items")
        return ls.collection_of("mix", mix_id, await self._mix_title(mix_id), items)

    async def _mix_title(self, mix_id: str) -> str:
        """A mix's title is on its page, not in its items; the id when the page fails."""
        try:
            page = await self.get_json("pages/mix", {"mixId": mix_id, "deviceType": "BROWSER"})
        except DownloadError as exc:
            if isinstance(exc, LoginRequired):
                raise
            return mix_id
        title = page.get("title") if isinstance(page, dict) else None
        return str(title) if title else mix_id

    async def discography(self, artist_id: int, include: tuple[str, ...]) -> Discography:
        about = await self.get_json(f"artists/{artist_id}")
        name = str((about or {}).get("name") or f"artist {artist_id}") \
            if isinstance(about, dict) else f"artist {artist_id}"
        found: dict[int, Release] = {}
        for listing, kinds in ls.LISTINGS.items():
            if not set(kinds) & set(include):
                continue
            albums, _ = await self.pages(f"artists/{artist_id}/albums", {"filter": listing})
            for release in ls.releases([a for a in albums if isinstance(a, dict)], listing,
                                       include):
                found.setdefault(release.album_id, release)
        return Discography(name, tuple(found.values()), True)

    async def stream(self, track_id: int, quality: Quality) -> mf.Served:
        """The stream at ``quality`` or the best below it TIDAL serves this account: the
        answer says which (the caller enforces a minimum)."""
        info = await self.get_json(f"tracks/{track_id}/playbackinfopostpaywall", {
            "audioquality": quality.value, "playbackmode": "STREAM",
            "assetpresentation": "FULL"})
        if not isinstance(info, dict):
            raise UpstreamUnavailable(f"playback info of track {track_id} has an unknown shape")
        return mf.parse_playback(info)

    async def lyrics(self, track_id: int) -> Lyrics | None:
        try:
            return shapes.parse_lyrics(await self.get_json(f"tracks/{track_id}/lyrics"))
        except LoginRequired:
            raise
        except DownloadError:
            return None

    def cover_url(self, cover: str, size: int = 1280) -> str:
        return cover_image_url(self.cover_base, cover, size)

    async def search(self, kind: str, query: str, limit: int) -> list[SearchHit]:
        payload = await self.get_json("search", {
            "query": query, "types": shapes.SEARCH_SECTIONS[kind].upper(), "limit": limit})
        hits = (shapes.search_hit(raw, kind) for raw in shapes.search_items(payload, kind))
        return [h for h in hits if h is not None][:limit]

    # -- the account's own ----------------------------------------------------------------------
    async def favorites(self, kind: str) -> list[int | str]:
        """The ids (uuids for playlists) of the account's favourites of one kind, newest
        first."""
        tokens = self.account.tokens
        if tokens is None:
            raise LoginRequired("not logged in to TIDAL: run tidalq login")
        items, _ = await self.pages(f"users/{tokens.user_id}/favorites/{kind}",
                                    {"order": "DATE", "orderDirection": "DESC"})
        key = "uuid" if kind == "playlists" else "id"
        found: list[int | str] = []
        for entry in items:
            item = entry.get("item") if isinstance(entry, dict) else None
            ref = item.get(key) if isinstance(item, dict) else None
            if isinstance(ref, int | str) and not isinstance(ref, bool):
                found.append(ref)
        return found


def answer(status: int, body: Any, path: str) -> Any:
    """The body of a good answer; the typed error of a bad one."""
    sub = body.get("subStatus") if isinstance(body, dict) else None
    said = str(body.get("userMessage") or "")[:200] if isinstance(body, dict) else ""
    if status == 404:
        raise UpstreamNotFound(f"{path} does not exist on TIDAL ({said or 'not found'})")
    if status == 403 and sub in NOT_HERE:
        raise UpstreamNotFound(f"{path} is not available in this account's country ({said})")
    if status == 403 and sub == NO_SUBSCRIPTION:
        raise LoginRequired(f"the TIDAL subscription does not allow this: {said}")
    if status == 403 and sub == MONTHLY_QUOTA:
        raise RateLimited(f"TIDAL's monthly quota is used up: {said}", retry_after_s=6 * 3600)
    if status in (401, 403):
        raise AuthFailed(f"TIDAL refused {path} ({status} {sub}): {said}")
    if status >= 400:
        raise UpstreamUnavailable(f"TIDAL answered {status} to {path}")
    if body is None:
        raise UpstreamUnavailable(f"TIDAL answered {path} with something that is not JSON")
    return body
