"""The MusicBrainz web service (v2, JSON), by its rules: at most one request per second
from this daemon, a User-Agent naming tidalq, its version and a contact
(``musicbrainz_contact``), and answers cached. MusicBrainz being slow or down never fails
a download: :meth:`MusicBrainz.match` answers with the reason instead of a match.

Which release: the job's ``musicBrainzReleaseId`` when given; else, when asked to find it
(``experimentalMusicBrainzTagging`` or ``musicbrainz = "auto"``), by the album's barcode,
then by its tracks' ISRCs (:mod:`tidalq.upstream.mbmatch` decides).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import quote

import aiohttp

from tidalq import __version__
from tidalq.models import AlbumMeta
from tidalq.upstream.mbmatch import (
    Match,
    NoMatch,
    barcode_candidates,
    isrc_candidates,
    match_release,
)

log = logging.getLogger(__name__)

MIN_INTERVAL_S = 1.0
TIMEOUT_S = 15.0
CACHE_SIZE = 512
ISRC_PROBES = 3
RELEASE_INC = "recordings+artist-credits+release-groups+isrcs+media"


class Unavailable(Exception):
    """Raised when MusicBrainz cannot be asked (down, slow, or answering nonsense)."""


class MusicBrainz:
    """One daemon's polite client."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, contact: str) -> None:
        self.session = session
        self.base = base_url.rstrip("/")
        self.headers = {"User-Agent": f"tidalq/{__version__} ( {contact} )",
                        "Accept": "application/json"}
        self._gate = asyncio.Lock()
        self._last = 0.0
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()

    async def get(self, path: str) -> dict[str, Any]:
        """One answer, cached; at most one request a second, however many jobs ask."""
        if path in self._cache:
            self._cache.move_to_end(path)
            return self._cache[path]
        async with self._gate:
            if path in self._cache:
                return self._cache[path]
            wait = self._last + MIN_INTERVAL_S - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last = time.monotonic()
            answer = await self._fetch(path)
        self._cache[path] = answer
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return answer

    async def _fetch(self, path: str) -> dict[str, Any]:
        url = f"{self.base}/ws/2/{path}"
        try:
            async with self.session.get(url, headers=self.headers,
                                        timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as resp:
                if resp.status == 404:
                    return {}
                if resp.status != 200:
                    raise Unavailable(f"MusicBrainz answered {resp.status}")
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise Unavailable(f"MusicBrainz could not be reached: {exc or 'timed out'}") \
                from exc
        if not isinstance(body, dict):
            raise Unavailable("MusicBrainz answered something that is not an object")
        return body

    async def release(self, release_id: str) -> dict[str, Any]:
        return await self.get(f"release/{quote(release_id, safe='')}?inc={RELEASE_INC}"
                              "&fmt=json")

    async def match(self, album: AlbumMeta, release_id: str | None, strict: bool
                    ) -> tuple[Match | None, str]:
        """(the match, or None, and a sentence saying what happened)."""
        try:
            if release_id:
                return await self._try([release_id], album, "given", strict)
            found, why = await self._try(await self._by_barcode(album), album, "barcode",
                                         strict)
            if found is not None:
                return found, why
            return await self._try(await self._by_isrc(album), album, "isrc", strict)
        except Unavailable as exc:
            log.warning("album %s: %s; tagged without MusicBrainz", album.id, exc)
            if release_id:  # the user chose it: its id is written, unchecked
                return (Match(release_id, "given", {t.id: {"MUSICBRAINZ_ALBUMID": [release_id]}
                                                    for t in album.tracks}),
                        f"{exc}; tagged with the given release id only")
            return None, f"{exc}; tagged without MusicBrainz ids"

    async def _try(self, candidates: list[str], album: AlbumMeta, how: str, strict: bool
                   ) -> tuple[Match | None, str]:
        reasons = []
        for release_id in candidates:
            release = await self.release(release_id)
            if not release:
                reasons.append(f"release {release_id} does not exist")
                continue
            try:
                found = match_release(album, release, how, strict)
            except NoMatch as exc:
                reasons.append(str(exc))
                continue
            return found, found.summary(len(album.tracks))
        if not candidates:
            return None, f"no MusicBrainz release found by {how}"
        return None, "no confident MusicBrainz match: " + "; ".join(reasons)

    async def _by_barcode(self, album: AlbumMeta) -> list[str]:
        if not album.upc:
            return []
        search = await self.get(f"release?query=barcode:{quote(album.upc)}&fmt=json")
        return barcode_candidates(search)

    async def _by_isrc(self, album: AlbumMeta) -> list[str]:
        isrcs = [t.isrc for t in album.tracks if t.isrc][:ISRC_PROBES]
        answers = [await self.get(f"isrc/{quote(i)}?inc=releases&fmt=json") for i in isrcs]
        return isrc_candidates(answers)
