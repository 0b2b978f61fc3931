"""A fake hifi-api server with real media and switchable faults.

Serves the API (``/info/``, ``/track/``, ``/trackManifests/``, ``/album/``, ``/lyrics/``),
the CDN (``/cdn/…``) and cover art (``/images/…``) from one origin. Tests start it on
``127.0.0.1:0`` with :func:`start_fake`; a person or another process runs
``python -m tidalq.testing.fakeapi --port 8080``. Faults are set in-process through
``FakeUpstream.faults`` or over HTTP with ``POST /_fake/faults`` (JSON); every request is
recorded (``FakeUpstream.requests``, ``GET /_fake/requests``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from tidalq.testing import media
from tidalq.testing.catalog import DURATION_S, Catalog, FakeTrack
from tidalq.testing.fakemb import FakeMusicBrainz

CHUNK = 64 * 1024


@dataclass
class Faults:
    """Switchable misbehaviour. Counters are consumed one request at a time."""

    rate_limit: int = 0  # next N API requests answer 429
    retry_after: str | None = "1"
    server_error: int = 0  # next N API requests answer 500
    token_error: int = 0  # next N API requests answer 200 with a token error body
    api_stall_s: float = 0.0  # every API request waits this long first
    cdn_403: int = 0  # next N CDN requests answer 403 (expired signature)
    cdn_cut_after: int | None = None  # CDN bodies stop after this many bytes…
    cdn_cuts: int = 0  # …for the next N CDN requests
    cdn_resets: int = 0  # next N CDN requests: connection reset before any answer
    cdn_500: int = 0  # next N CDN requests answer 500
    cdn_corrupt: int = 0  # next N CDN bodies have bytes flipped in the middle
    cdn_stall_s: float = 0.0  # CDN waits this long mid-body (once per request)
    throttle_bps: int | None = None  # CDN bytes per second per connection
    ranges: bool = True  # honour Range requests
    preview: list[int] = field(default_factory=list)  # extra track ids served as previews
    legacy: bool = False  # answer with legacy shapes, no envelope
    manifest_uri: bool = False  # /trackManifests/ answers a uri instead of inline MPD
    cdn_base: str | None = None  # manifests name this CDN origin instead of the fake's own
    page_cap: int = 4  # playlist and artist pages hold at most this many items
    plain_artist: bool = False  # a hifi-api without the paged ?f=&filter= extension
    playlist_short: int = 0  # playlist pages come back with this many items missing

    def take(self, name: str) -> bool:
        count = getattr(self, name)
        if count > 0:
            setattr(self, name, count - 1)
            return True
        return False


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    range: str | None


class FakeUpstream:
    """The aiohttp application and its state."""

    def __init__(self, cache_dir: Path, track_bytes: int | None = None) -> None:
        self.catalog = Catalog(track_bytes)
        self.cache = cache_dir
        self.faults = Faults()
        self.requests: list[Request] = []
        self.token = "sig1"
        self._locks: dict[str, asyncio.Lock] = {}
        self.app = web.Application(middlewares=[self._record])
        r = self.app.router
        for path, handler in (("/info/", self.info), ("/track/", self.track),
                              ("/trackManifests/", self.track_manifests),
                              ("/album/", self.album), ("/lyrics/", self.lyrics)):
            r.add_get(path, self._api(handler))
        for path, named in (("/playlist/", self.playlist), ("/mix/", self.mix),
                            ("/artist/", self.artist)):
            r.add_get(path, self._api(named, parse_id=False))
        r.add_get("/cdn/{track}/{name}", self.cdn)
        r.add_get("/cdn/{track}/dash/{name}", self.cdn)
        r.add_get("/images/{tail:.+}", self.cover)
        r.add_post("/_fake/faults", self.set_faults)
        r.add_get("/_fake/requests", self.get_requests)
        r.add_post("/_fake/reset", self.reset)
        # MusicBrainz for this catalogue, for daemons in other processes (musicbrainz_url =
        # <fake>/mb); in-process tests may start a FakeMusicBrainz of their own
        self.app.add_subapp("/mb/", FakeMusicBrainz(self.catalog).app())

    # -- bookkeeping -----------------------------------------------------------------------
    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not request.path.startswith("/_fake/"):
            self.requests.append(Request(request.method, request.path, dict(request.query),
                                         request.headers.get("Range")))
        result: web.StreamResponse = await handler(request)
        return result

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

    def _origin(self, request: web.Request) -> str:
        return self.faults.cdn_base or f"{request.scheme}://{request.host}"

    # -- media ------------------------------------------------------------------------------
    def _stream(self, track: FakeTrack, hires: bool) -> media.FlacStream:
        fmt = media.HI_RES if hires else media.CD
        if track.size_bytes:
            return media.FlacStream.for_size(fmt, track.size_bytes, track.id)
        return media.FlacStream.for_duration(fmt, DURATION_S, track.id)

    def source_md5(self, track_id: int, hires: bool = False) -> bytes:
        """The MD5 of the decoded audio the CDN serves for a track (FLAC's convention:
        signed little-endian interleaved samples), at CD quality or as hi-res DASH."""
        return self._stream(self.catalog.tracks[track_id], hires).md5()

    def duration(self, track: FakeTrack) -> float:
        return self._stream(track, False).duration_s

    async def _ensure(self, key: str, make: Any) -> Path:
        path = self.cache / key
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if not path.exists():
                tmp = self.cache / (key + ".part")
                await asyncio.to_thread(make, tmp)
                tmp.rename(path)
        return path

    async def flac_file(self, track: FakeTrack) -> Path:
        stream = self._stream(track, False)
        return await self._ensure(f"{track.id}.flac", stream.write_flac)

    async def dash_dir(self, track: FakeTrack) -> Path:
        stream = self._stream(track, True)
        return await self._ensure(f"{track.id}-dash", lambda p: media.write_dash(stream, p))

    def _is_preview(self, track: FakeTrack) -> bool:
        return track.preview or track.id in self.faults.preview

    # -- API --------------------------------------------------------------------------------
    async def info(self, request: web.Request, track_id: int) -> web.Response:
        track = self.catalog.tracks.get(track_id)
        if track is None:
            return self._not_found()
        return self._wrap(self.catalog.track_json(track, self.duration(track)))

    async def track(self, request: web.Request, track_id: int) -> web.Response:
        track = self.catalog.tracks.get(track_id)
        if track is None:
            return self._not_found()
        quality = request.query.get("quality", "LOSSLESS")
        info = await self._playback(request, track, quality)
        if self.faults.legacy:
            return web.json_response([self.catalog.track_json(track), info,
                                      {"OriginalTrackUrl": "unused"}])
        return self._wrap(info)

    async def _playback(self, request: web.Request, track: FakeTrack,
                        quality: str) -> dict[str, Any]:
        origin, sig = self._origin(request), f"token={self.token}"
        if quality in ("LOW", "HIGH"):
            bts = {"mimeType": "audio/mp4", "codecs": "mp4a.40.2", "encryptionType": "NONE",
                   "urls": [f"{origin}/cdn/{track.id}/track.m4a?{sig}"]}
            served, depth, rate, mime = quality, None, 44100, "application/vnd.tidal.bts"
            manifest = json.dumps(bts).encode()
        elif quality == "HI_RES_LOSSLESS" and track.hires:
            stream = self._stream(track, True)
            layout = await self._layout(track)
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

    async def _layout(self, track: FakeTrack) -> media.DashLayout:
        directory = await self.dash_dir(track)
        segments = len(list(directory.glob("seg-*.mp4")))
        return media.DashLayout(48, segments)

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
            origin, sig = self._origin(request), f"token={self.token}"
            text = media.mpd(self._stream(track, True), await self._layout(track),
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
        durations = {t.id: self.duration(t) for t in album.tracks}
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

    def _listed_track(self, track_id: int) -> dict[str, Any]:
        """A track as a collection lists it: its album lacks artist and disc count."""
        track = self.catalog.tracks.get(track_id)
        if track is None:  # removed from TIDAL since it was added
            return {"id": track_id, "title": "Gone Song", "duration": 4, "trackNumber": 1,
                    "volumeNumber": 1, "artist": {"id": 1, "name": "Nobody"},
                    "artists": [{"id": 1, "name": "Nobody", "type": "MAIN"}],
                    "album": {"id": 99_999, "title": "Gone Album"}}
        return self.catalog.track_json(track, self.duration(track))

    async def playlist(self, request: web.Request) -> web.Response:
        playlist = self.catalog.playlists.get(request.query.get("id", ""))
        if playlist is None:
            return self._not_found()
        items = [{"type": "video", "item": {"id": i[1], "title": "A Video"}, "cut": None}
                 if isinstance(i, tuple) else
                 {"type": "track", "item": self._listed_track(i), "cut": None}
                 for i in playlist.items]
        page, _, _ = self._page(request, items)
        if self.faults.playlist_short:
            page = page[:max(0, len(page) - self.faults.playlist_short)]
        videos = sum(1 for i in playlist.items if isinstance(i, tuple))
        return web.json_response({"version": "2.4", "playlist": {
            "uuid": playlist.uuid, "title": playlist.title, "description": "",
            "numberOfTracks": len(items) - videos, "numberOfVideos": videos,
            "duration": 4 * len(items), "creator": {"id": 0}, "type": "USER",
            "squareImage": None}, "items": page})

    async def mix(self, request: web.Request) -> web.Response:
        mix = self.catalog.mixes.get(request.query.get("id", ""))
        if mix is None:
            return self._not_found()
        return web.json_response({"version": "2.4", "mix": {
            "id": mix.uuid, "title": mix.title, "subTitle": "made for you",
            "mixType": "DISCOVERY_MIX"},
            "items": [self._listed_track(i) for i in mix.items if isinstance(i, int)]})

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

    async def lyrics(self, request: web.Request, track_id: int) -> web.Response:
        track = self.catalog.tracks.get(track_id)
        if track is None or not track.lyrics:
            return self._not_found()
        return self._wrap({"trackId": track_id, "lyrics": "First line\nSecond line",
                           "subtitles": "[00:00.50] First line\n[00:02.00] Second line"})

    # -- CDN --------------------------------------------------------------------------------
    async def cdn(self, request: web.Request) -> web.StreamResponse:
        f = self.faults
        if f.take("cdn_resets") and request.transport is not None:
            request.transport.abort()  # the client sees a reset connection
            return web.Response(status=500)
        if request.query.get("token") != self.token or f.take("cdn_403"):
            return web.Response(status=403, text="AccessDenied: Request has expired")
        if f.take("cdn_500"):
            return web.Response(status=500, text="Internal error")
        track = self.catalog.tracks.get(int(request.match_info["track"]))
        if track is None:
            return web.Response(status=404)
        name = request.match_info["name"]
        if name == "track.m4a":
            return await self._send(request, media.fixture("track.m4a"))
        if name == "track.flac":
            return await self._send(request, await self.flac_file(track))
        if name == "manifest.mpd":
            text = media.mpd(self._stream(track, True), await self._layout(track),
                             f"{self._origin(request)}/cdn/{track.id}/dash/",
                             f"token={self.token}")
            return web.Response(text=text, content_type="application/dash+xml")
        directory = await self.dash_dir(track)
        path = directory / name
        if not path.is_file() or "/" in name:
            return web.Response(status=404)
        return await self._send(request, path)

    async def _send(self, request: web.Request, source: Path | bytes) -> web.StreamResponse:
        size = len(source) if isinstance(source, bytes) else source.stat().st_size
        start, status = 0, 200
        headers = {"Content-Type": "application/octet-stream"}
        if self.faults.ranges:
            headers["Accept-Ranges"] = "bytes"
            spec = request.headers.get("Range", "")
            first = spec[6:].split("-")[0]
            if spec.startswith("bytes=") and first.isascii() and first.isdigit():
                start = int(first)
                if start >= size:
                    return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
                status = 206
                headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = size - start
        await resp.prepare(request)
        await self._body(request, resp, source, start, size)
        return resp

    async def _body(self, request: web.Request, resp: web.StreamResponse,
                    source: Path | bytes, start: int, size: int) -> None:
        f = self.faults
        cut = f.cdn_cut_after if f.cdn_cut_after is not None and f.take("cdn_cuts") else None
        corrupt_at = (start + size) // 2 if f.take("cdn_corrupt") else -1
        stalled = False
        sent, loop = 0, asyncio.get_running_loop()
        began = loop.time()
        handle = None if isinstance(source, bytes) else source.open("rb")
        if handle is not None:
            handle.seek(start)
        try:
            pos = start
            while pos < size:
                n = min(CHUNK, size - pos)
                chunk = source[pos:pos + n] if isinstance(source, bytes) else handle.read(n)  # type: ignore[union-attr]
                if pos <= corrupt_at < pos + len(chunk):
                    flip = corrupt_at - pos
                    chunk = chunk[:flip] + bytes(b ^ 0x5A for b in chunk[flip:flip + 64]) \
                        + chunk[flip + 64:]
                if cut is not None and sent + len(chunk) > cut:
                    await resp.write(chunk[:max(0, cut - sent)])
                    assert request.transport is not None
                    request.transport.close()
                    return
                await resp.write(chunk)
                sent += len(chunk)
                pos += len(chunk)
                if f.cdn_stall_s and not stalled and sent >= (size - start) // 2:
                    stalled = True
                    await asyncio.sleep(f.cdn_stall_s)
                if f.throttle_bps:
                    ahead = sent / f.throttle_bps - (loop.time() - began)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
        finally:
            if handle is not None:
                handle.close()
        await resp.write_eof()

    async def cover(self, request: web.Request) -> web.Response:
        return web.Response(body=media.fixture("cover.jpg"), content_type="image/jpeg")

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

    async def reset(self, request: web.Request) -> web.Response:
        self.faults = Faults()
        self.requests.clear()
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
