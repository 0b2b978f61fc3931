"""A fake hifi-api server with real media and switchable faults.

Serves the API (``/info/``, ``/track/``, ``/trackManifests/``, ``/album/``, ``/lyrics/``,
``/playlist/``, ``/mix/``, ``/artist/``), and the CDN (``/cdn/…``) and cover art
(``/images/…``, both :mod:`tidalq.testing.fakecdn`) from one origin. Tests start it on
``127.0.0.1:0`` with :func:`start_fake`; a person or another process runs
``python -m tidalq.testing.fakeapi --port 8080``. Faults are set in-process through
``FakeUpstream.faults`` or over HTTP with ``POST /_fake/faults`` (JSON); every request is
recorded (``FakeUpstream.requests``, ``GET /_fake/requests``), and what each CDN body
sent before it ended (``GET /_fake/cdn``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from tidalq.testing import media
from tidalq.testing.catalog import Catalog, FakeTrack
from tidalq.testing.fakecdn import FakeCdn, Faults
from tidalq.testing.fakemb import FakeMusicBrainz
from tidalq.testing.faketidal import FakeTidal


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    range: str | None
    at: float = 0.0  # time.time() when it arrived


class FakeUpstream:
    """The aiohttp application and its state."""

    def __init__(self, cache_dir: Path, track_bytes: int | None = None) -> None:
        self.catalog = Catalog(track_bytes)
        self.faults = Faults()
        self.media = FakeCdn(self.catalog, cache_dir, self.faults)
        self.requests: list[Request] = []
        self.app = web.Application(middlewares=[self._record])
        r = self.app.router
        for path, handler in (("/info/", self.info), ("/track/", self.track),
                              ("/trackManifests/", self.track_manifests),
                              ("/album/", self.album), ("/lyrics/", self.lyrics)):
            r.add_get(path, self._api(handler))
        for path, named in (("/playlist/", self.playlist), ("/mix/", self.mix),
                            ("/artist/", self.artist), ("/search/", self.search)):
            r.add_get(path, self._api(named, parse_id=False))
        self.media.add_to(r)
        r.add_post("/_fake/faults", self.set_faults)
        r.add_get("/_fake/requests", self.get_requests)
        r.add_get("/_fake/cdn", self.get_cdn_bodies)
        r.add_post("/_fake/reset", self.reset)
        # MusicBrainz for this catalogue, for daemons in other processes (musicbrainz_url =
        # <fake>/mb); in-process tests may start a FakeMusicBrainz of their own
        self.app.add_subapp("/mb/", FakeMusicBrainz(self.catalog).app())
        # TIDAL's own login and API over the same catalogue and CDN (upstream = "tidal")
        self.tidal = FakeTidal(self)
        self.app.add_subapp("/tidal/", self.tidal.app())

    # -- bookkeeping -----------------------------------------------------------------------
    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not request.path.startswith("/_fake/"):
            self.requests.append(Request(request.method, request.path, dict(request.query),
                                         request.headers.get("Range"), time.time()))
        result: web.StreamResponse = await handler(request)
        return result

    def source_md5(self, track_id: int, hires: bool = False) -> bytes:
        """The MD5 of the decoded audio the CDN serves for a track (see :class:`FakeCdn`)."""
        return self.media.source_md5(track_id, hires)

    def count(self, path_prefix: str) -> int:
        return sum(1 for r in self.requests if r.path.startswith(path_prefix))

    def _api(self, handler: Any, parse_id: bool = True) -> Any:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            f = self.faults
            if f.api_stall_s:
                await asyncio.sleep(f.api_stall_s)
            if f.take("rate_limit"):
                headers = {"Retry-After": f.retry_after} if f.retry_after else {}
                return web.json_response({"detail": "Too many requests"}, status=429,
                                         headers=headers)
            if f.take("server_error"):
                return web.json_response({"detail": "Upstream error"}, status=500)
            if f.take("token_error"):
                return web.json_response({"status": 401, "subStatus": 11002,
                                          "userMessage": "Token is invalid"})
            if not parse_id:
                named: web.StreamResponse = await handler(request)
                return named
            try:
                track_or_album = int(request.query.get("id", ""))
            except ValueError:
                return web.json_response({"detail": "id must be an integer"}, status=422)
            result: web.StreamResponse = await handler(request, track_or_album)
            return result

        return wrapped

    def _wrap(self, payload: Any) -> web.Response:
        if self.faults.legacy:
            return web.json_response(payload)
        return web.json_response({"version": "2.0", "data": payload})

    @staticmethod
    def _not_found() -> web.Response:
        return web.json_response({"detail": "Resource not found"}, status=404)

    def _is_preview(self, track: FakeTrack) -> bool:
        return track.preview or track.id in self.faults.preview

    # -- API --------------------------------------------------------------------------------
    async def info(self, request: web.Request, track_id: int) -> web.Response:
        track = self.catalog.tracks.get(track_id)
        if track is None:
            return self._not_found()
        return self._wrap(self.catalog.track_json(track, self.media.duration(track)))

    async def track(self, request: web.Request, track_id: int) -> web.Response:
        track = self.catalog.tracks.get(track_id)
        if track is None:
            return self._not_found()
        quality = request.query.get("quality", "LOSSLESS")
        info = await self.playback(request, track, quality)
        if self.faults.legacy:
            return web.json_response([self.catalog.track_json(track), info,
                                      {"OriginalTrackUrl": "unused"}])
        return self._wrap(info)

    async def playback(self, request: web.Request, track: FakeTrack,
                        quality: str) -> dict[str, Any]:
        origin, sig = self.media.origin(request), f"token={self.media.token}"
        if quality in ("LOW", "HIGH"):
            bts = {"mimeType": "audio/mp4", "codecs": "mp4a.40.2", "encryptionType": "NONE",
                   "urls": [f"{origin}/cdn/{track.id}/track.m4a?{sig}"]}
            served, depth, rate, mime = quality, None, 44100, "application/vnd.tidal.bts"
            manifest = json.dumps(bts).encode()
        elif quality == "HI_RES_LOSSLESS" and track.hires:
            stream = self.media.stream(track, True)
            layout = await self.media.layout(track)
            manifest = media.mpd(stream, layout, f"{origin}/cdn/{track.id}/dash/", sig).encode()
            served, depth, rate, mime = "HI_RES_LOSSLESS", 24, 96000, "application/dash+xml"
        else:
            bts = {"mimeType": "audio/flac", "codecs": "flac", "encryptionType": "NONE",
                   "urls": [f"{origin}/cdn/{track.id}/track.flac?{sig}"]}
            served, depth, rate, mime = "LOSSLESS", 16, 44100, "application/vnd.tidal.bts"
            manifest = json.dumps(bts).encode()
        encoded = base64.urlsafe_b64encode(manifest).decode().rstrip("=")
        return {"trackId": track.id,
                "assetPresentation": "PREVIEW" if self._is_preview(track) else "FULL",
                "audioMode": "STEREO", "audioQuality": served, "bitDepth": depth,
                "sampleRate": rate, "manifestMimeType": mime, "manifest": encoded,
                "trackReplayGain": -7.5, "trackPeakAmplitude": 0.98,
                "albumReplayGain": -8.0, "albumPeakAmplitude": 0.99}

    async def track_manifests(self, request: web.Request, track_id: int) -> web.Response:
        track = self.catalog.tracks.get(track_id)
        if track is None:
            return self._not_found()
        attrs: dict[str, Any] = {
            "trackPresentation": "PREVIEW" if self._is_preview(track) else "FULL",
            "formats": ["FLAC", "FLAC_HIRES"] if track.hires else ["FLAC"],
            "trackAudioNormalizationData": {"replayGain": -7.5, "peakAmplitude": 0.98},
            "albumAudioNormalizationData": {"replayGain": -8.0, "peakAmplitude": 0.99},
        }
        if self._is_preview(track):
            attrs["previewReason"] = "FULL_REQUIRES_SUBSCRIPTION"
        if track.hires:
            origin, sig = self.media.origin(request), f"token={self.media.token}"
            text = media.mpd(self.media.stream(track, True), await self.media.layout(track),
                             f"{origin}/cdn/{track.id}/dash/", sig)
            if self.faults.manifest_uri:
                attrs["uri"] = f"{origin}/cdn/{track.id}/dash/manifest.mpd?{sig}"
            else:
                attrs["manifest"] = base64.b64encode(text.encode()).decode()
        return self._wrap({"data": {"id": str(track.id), "type": "trackManifests",
                                    "attributes": attrs}})

    async def album(self, request: web.Request, album_id: int) -> web.Response:
        album = self.catalog.albums.get(album_id)
        if album is None:
            return self._not_found()
        limit = min(int(request.query.get("limit", "100")), 100)
        offset = int(request.query.get("offset", "0"))
        durations = {t.id: self.media.duration(t) for t in album.tracks}
        items = self.catalog.album_items(album, durations)[offset:offset + limit]
        body = self.catalog.album_json(album)
        if self.faults.legacy:
            return web.json_response([body, {"items": items, "limit": limit, "offset": offset,
                                             "totalNumberOfItems": len(album.tracks)}])
        return self._wrap({**body, "items": items})

    # -- collections ------------------------------------------------------------------------
    def _page(self, request: web.Request, items: list[Any]) -> tuple[list[Any], int, int]:
        limit = min(int(request.query.get("limit", "100") or 100), self.faults.page_cap)
        offset = int(request.query.get("offset", "0") or 0)
        return items[offset:offset + limit], limit, offset

    def listed_track(self, track_id: int) -> dict[str, Any]:
        """A track as a collection lists it: its album lacks artist and disc count."""
        track = self.catalog.tracks.get(track_id)
        if track is None:  # removed from TIDAL since it was added
            return {"id": track_id, "title": "Gone Song", "duration": 4, "trackNumber": 1,
                    "volumeNumber": 1, "artist": {"id": 1, "name": "Nobody"},
                    "artists": [{"id": 1, "name": "Nobody", "type": "MAIN"}],
                    "album": {"id": 99_999, "title": "Gone Album"}}
        return self.catalog.track_json(track, self.media.duration(track))

    async def playlist(self, request: web.Request) -> web.Response:
        playlist = self.catalog.playlists.get(request.query.get("id", ""))
        if playlist is None:
            return self._not_found()
        listed, _, _ = self._page(request, playlist.items)  # only this page is built
        page = [{"type": "video", "item": {"id": i[1], "title": "A Video"}, "cut": None}
                if isinstance(i, tuple) else
                {"type": "track", "item": self.listed_track(i), "cut": None}
                for i in listed]
        if self.faults.playlist_short:
            page = page[:max(0, len(page) - self.faults.playlist_short)]
        videos = sum(1 for i in playlist.items if isinstance(i, tuple))
        count = len(playlist.items)
        return web.json_response({"version": "2.4", "playlist": {
            "uuid": playlist.uuid, "title": playlist.title, "description": "",
            "numberOfTracks": count - videos, "numberOfVideos": videos,
            "duration": 4 * count, "creator": {"id": 0}, "type": "USER",
            "squareImage": None}, "items": page})

    async def mix(self, request: web.Request) -> web.Response:
        mix = self.catalog.mixes.get(request.query.get("id", ""))
        if mix is None:
            return self._not_found()
        return web.json_response({"version": "2.4", "mix": {
            "id": mix.uuid, "title": mix.title, "subTitle": "made for you",
            "mixType": "DISCOVERY_MIX"},
            "items": [self.listed_track(i) for i in mix.items if isinstance(i, int)]})

    async def artist(self, request: web.Request) -> web.Response:
        q = request.query
        if "id" in q:
            found = self.catalog.artists.get(int(q["id"]) if q["id"].isdigit() else -1)
            if found is None:
                return self._not_found()
            return web.json_response({"version": "2.4", "artist": {
                "id": found.id, "name": found.name, "mixes": {}}, "cover": None})
        artist = self.catalog.artists.get(int(q.get("f", "0") or 0) if
                                          q.get("f", "").isdigit() else -1)
        listings = artist.listings if artist else {}
        if "filter" in q and not self.faults.plain_artist:
            ids = listings.get(q["filter"], [])
            albums = [self.catalog.album_json(self.catalog.albums[i]) for i in ids]
            page, limit, offset = self._page(request, albums)
            return web.json_response({"version": "2.4", "albums": {
                "limit": limit, "offset": offset, "totalNumberOfItems": len(albums),
                "items": page}, "tracks": []})
        own = [*listings.get("ALBUMS", []), *listings.get("EPSANDSINGLES", [])][:100]
        return web.json_response({"version": "2.4", "albums": {"items": [
            self.catalog.album_json(self.catalog.albums[i]) for i in own]}, "tracks": []})

    async def search(self, request: web.Request) -> web.Response:
        """``s`` answers TIDAL's track search page; ``al``, ``a``, ``p`` its top hits, one
        page per type (``a`` finds artists and tracks)."""
        given = [k for k in ("s", "al", "a", "p", "v") if k in request.query]
        if len(given) != 1:
            return web.json_response({"detail": "give exactly one of s, al, a, p, v"},
                                     status=400)
        key, query = given[0], request.query[given[0]]
        if key == "s":
            items = self.catalog.search("track", query)[:25]
            return self._wrap({"limit": 25, "offset": 0, "totalNumberOfItems": len(items),
                               "items": items})
        kinds = {"al": ["album"], "a": ["artist", "track"], "p": ["playlist"], "v": []}[key]
        return self._wrap({f"{k}s": {"limit": 25, "offset": 0,
                                     "items": self.catalog.search(k, query)[:25]}
                           for k in kinds})

    async def lyrics(self, request: web.Request, track_id: int) -> web.Response:
        track = self.catalog.tracks.get(track_id)
        if track is None or not track.lyrics:
            return self._not_found()
        return self._wrap({"trackId": track_id, "lyrics": "First line\nSecond line",
                           "subtitles": "[00:00.50] First line\n[00:02.00] Second line"})

    # -- control ----------------------------------------------------------------------------
    async def set_faults(self, request: web.Request) -> web.Response:
        body = await request.json()
        for key, value in body.items():
            if not hasattr(self.faults, key):
                return web.json_response({"error": f"unknown fault {key}"}, status=400)
            setattr(self.faults, key, value)
        return web.json_response(asdict(self.faults))

    async def get_requests(self, request: web.Request) -> web.Response:
        return web.json_response([asdict(r) for r in self.requests])

    async def get_cdn_bodies(self, request: web.Request) -> web.Response:
        return web.json_response(self.media.bodies)

    async def reset(self, request: web.Request) -> web.Response:
        self.faults.__dict__.update(asdict(Faults()))  # in place: the CDN shares it
        self.requests.clear()
        self.media.bodies.clear()
        return web.json_response({"ok": True})


@dataclass
class RunningFake:
    upstream: FakeUpstream
    runner: web.AppRunner
    url: str

    @property
    def faults(self) -> Faults:
        return self.upstream.faults

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_fake(cache_dir: Path, port: int = 0, host: str = "127.0.0.1",
                     track_bytes: int | None = None) -> RunningFake:
    upstream = FakeUpstream(cache_dir, track_bytes)
    runner = web.AppRunner(upstream.app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = port or runner.addresses[0][1]
    return RunningFake(upstream, runner, f"http://{host}:{bound}")


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the fake hifi-api upstream.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--cache", help="where generated media is kept (default: a temp dir)")
    parser.add_argument("--track-mb", type=float, help="size of the benchmark album's tracks")
    args = parser.parse_args()

    async def serve() -> None:
        with tempfile.TemporaryDirectory(prefix="tidalq-fake-") as tmp:
            cache = Path(args.cache) if args.cache else Path(tmp)
            cache.mkdir(parents=True, exist_ok=True)
            size = int(args.track_mb * 1_000_000) if args.track_mb else None
            fake = await start_fake(cache, args.port, args.host, size)
            print(f"fake upstream on {fake.url}  (api_urls = [\"{fake.url}\"], "
                  f"cover_url = \"{fake.url}\")", flush=True)
            try:
                await asyncio.Event().wait()
            finally:
                await fake.close()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
