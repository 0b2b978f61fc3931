"""The fake's media and CDN: generated FLAC and hi-res DASH for each catalogue track,
cached on disk, served from ``/cdn/…`` with signed URLs, Range requests, and the CDN faults
of :class:`Faults` (resets, 403s, cut and corrupted bodies, stalls, throttling); covers from
``/images/…``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from tidalq.testing import media
from tidalq.testing.catalog import DURATION_S, Catalog, FakeTrack

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



class FakeCdn:
    """Media for ``catalog``'s tracks, misbehaving as ``faults`` says (shared with the API)."""

    def __init__(self, catalog: Catalog, cache_dir: Path, faults: Faults) -> None:
        self.catalog = catalog
        self.cache = cache_dir
        self.faults = faults
        self.token = "sig1"
        self.bodies: list[dict[str, Any]] = []  # what each CDN body sent before it ended
        self._locks: dict[str, asyncio.Lock] = {}

    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_get("/cdn/{track}/{name}", self.cdn)
        router.add_get("/cdn/{track}/dash/{name}", self.cdn)
        router.add_get("/images/{tail:.+}", self.cover)

    def origin(self, request: web.Request) -> str:
        return self.faults.cdn_base or f"{request.scheme}://{request.host}"

    # -- media ------------------------------------------------------------------------------
    def stream(self, track: FakeTrack, hires: bool) -> media.FlacStream:
        fmt = media.HI_RES if hires else media.CD
        if track.size_bytes:
            return media.FlacStream.for_size(fmt, track.size_bytes, track.id)
        return media.FlacStream.for_duration(fmt, DURATION_S, track.id)

    def source_md5(self, track_id: int, hires: bool = False) -> bytes:
        """The MD5 of the decoded audio the CDN serves for a track (FLAC's convention:
        signed little-endian interleaved samples), at CD quality or as hi-res DASH."""
        return self.stream(self.catalog.tracks[track_id], hires).md5()

    def duration(self, track: FakeTrack) -> float:
        return self.stream(track, False).duration_s

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
        stream = self.stream(track, False)
        return await self._ensure(f"{track.id}.flac", stream.write_flac)

    async def dash_dir(self, track: FakeTrack) -> Path:
        stream = self.stream(track, True)
        return await self._ensure(f"{track.id}-dash", lambda p: media.write_dash(stream, p))

    async def layout(self, track: FakeTrack) -> media.DashLayout:
        directory = await self.dash_dir(track)
        segments = len(list(directory.glob("seg-*.mp4")))
        return media.DashLayout(48, segments)

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
            text = media.mpd(self.stream(track, True), await self.layout(track),
                             f"{self.origin(request)}/cdn/{track.id}/dash/",
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
            half = (size - start) // 2
            while pos < size:
                n = min(CHUNK, size - pos)
                if f.cdn_stall_s and not stalled and start == 0 and sent < half:
                    n = min(n, half - sent)  # mid-body, even in a body of one chunk
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
                if f.cdn_stall_s and not stalled and sent >= half:
                    stalled = True
                    await asyncio.sleep(f.cdn_stall_s)
                if f.throttle_bps:
                    ahead = sent / f.throttle_bps - (loop.time() - began)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
        finally:
            if handle is not None:
                handle.close()
            self.bodies.append({"path": request.path, "sent": sent, "size": size - start,
                                "ended": time.time()})
        await resp.write_eof()

    async def cover(self, request: web.Request) -> web.Response:
        return web.Response(body=media.fixture("cover.jpg"), content_type="image/jpeg")
