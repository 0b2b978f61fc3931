"""A fake MusicBrainz web service (v2, JSON) for the fake upstream's catalogue.

Releases exist for albums 100 (found by its barcode; its track 1003 has no ISRC in
MusicBrainz: fine for a loose match, refused by a strict one), 200 (no barcode in
MusicBrainz: found by ISRC) and 110 (one track more than TIDAL lists: another edition,
refused by every match). Ids are UUID-shaped and derived from TIDAL's: release
``…-a000-<album>``, recording ``…-b000-<track>``, release track ``…-c000-<track>``,
artist ``…-d000-<artist>``, release group ``…-e000-<album>``. ``down`` answers 503,
``stall_s`` delays every answer; every request is recorded with its time.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tidalq.testing.catalog import Catalog, FakeAlbum


def mbid(kind: str, number: int) -> str:
    return f"00000000-0000-4000-{kind}000-{number:012d}"


@dataclass
class FakeMusicBrainz:
    catalog: Catalog = field(default_factory=Catalog)
    down: bool = False
    stall_s: float = 0.0
    requests: list[tuple[float, str]] = field(default_factory=list)
    user_agents: list[str] = field(default_factory=list)
    with_barcode: tuple[int, ...] = (100,)
    extra_track: tuple[int, ...] = (110,)
    no_isrc: tuple[int, ...] = (1003,)  # tracks whose recording has no ISRC here

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._faults])
        app.router.add_get("/ws/2/release/{id}", self.release)
        app.router.add_get("/ws/2/release", self.search)
        app.router.add_get("/ws/2/isrc/{isrc}", self.isrc)
        return app

    @web.middleware
    async def _faults(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((time.monotonic(), request.path_qs))
        self.user_agents.append(request.headers.get("User-Agent", ""))
        if self.stall_s:
            await asyncio.sleep(self.stall_s)
        if self.down:
            return web.json_response({"error": "service unavailable"}, status=503)
        result: web.StreamResponse = await handler(request)
        return result

    def _albums(self) -> dict[str, FakeAlbum]:
        return {mbid("a", a): self.catalog.albums[a] for a in (100, 110, 200)}

    def _release_json(self, album: FakeAlbum) -> dict[str, Any]:
        artist = {"id": mbid("d", album.artist["id"]), "name": album.artist["name"]}
        credit = [{"name": artist["name"], "joinphrase": "", "artist": artist}]
        media: dict[int, list[dict[str, Any]]] = {}
        for t in album.tracks:
            media.setdefault(t.disc, []).append({
                "id": mbid("c", t.id), "position": t.number, "number": str(t.number),
                "title": t.title, "artist-credit": credit,
                "recording": {"id": mbid("b", t.id), "title": t.title,
                              "isrcs": [] if t.id in self.no_isrc else [f"USFAKE{t.id:06d}"]}})
        if album.id in self.extra_track:
            last = media[max(media)]
            last.append({"id": mbid("c", 999_000 + album.id), "position": len(last) + 1,
                         "title": "Bonus", "recording": {"id": mbid("b", 999_000)}})
        return {"id": mbid("a", album.id), "title": album.title, "status": "Official",
                "country": "XW", "date": "2024-05-17",
                "barcode": f"00{album.id:010d}" if album.id in self.with_barcode else "",
                "artist-credit": credit,
                "release-group": {"id": mbid("e", album.id), "primary-type": "Album",
                                  "first-release-date": "2024-05-17"},
                "media": [{"position": d, "format": "Digital Media", "tracks": tracks}
                          for d, tracks in sorted(media.items())]}

    async def release(self, request: web.Request) -> web.Response:
        album = self._albums().get(request.match_info["id"])
        if album is None:
            return web.json_response({"error": "Not Found"}, status=404)
        return web.json_response(self._release_json(album))

    async def search(self, request: web.Request) -> web.Response:
        query = request.query.get("query", "")
        found = [{"id": rid, "score": 100, "title": a.title, "track-count": len(a.tracks)}
                 for rid, a in self._albums().items()
                 if a.id in self.with_barcode and query == f"barcode:00{a.id:010d}"]
        return web.json_response({"count": len(found), "offset": 0, "releases": found})

    async def isrc(self, request: web.Request) -> web.Response:
        code = request.match_info["isrc"]
        for rid, album in self._albums().items():
            for t in album.tracks:
                if code == f"USFAKE{t.id:06d}":
                    return web.json_response({"isrc": code, "recordings": [
                        {"id": mbid("b", t.id), "title": t.title,
                         "releases": [{"id": rid, "title": album.title}]}]})
        return web.json_response({"error": "Not Found"}, status=404)


async def start_fake_mb(fake: FakeMusicBrainz) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(fake.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"
