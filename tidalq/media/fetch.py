"""Streaming downloads from the CDN into staging files: memory never grows with file size.

- Direct files: streamed in chunks, ``Content-Length`` checked; a cut body resumes with
  ``Range`` when the server sends ``Accept-Ranges: bytes`` (else starts over), a bounded
  number of times per attempt. A partial staging file left by an earlier attempt is
  resumed the same way.
- DASH: the init segment, then media segments fetched with bounded parallelism (each
  retried on its own) and fed in order to the remuxer.
- A 403 means the signed URL expired: :class:`~tidalq.errors.CdnExpired` tells the caller
  to ask the API for a fresh manifest.
- A FLAC served whole, where libFLAC is here, is fetched by a decoder program instead
  (:meth:`Fetcher.fetch_checked`, :mod:`tidalq.media.checked`), by the same rules
  (:mod:`tidalq.media.cdn_body`): its bytes never pass through the daemon.

Cancellation is asyncio's: cancelling the task aborts the HTTP stream at once.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import aiohttp

from tidalq.errors import CdnExpired, UpstreamUnavailable, from_os_error
from tidalq.media import checked
from tidalq.media.cdn_body import CHUNK_BYTES, MAX_RESUMES, CdnSettings, Cut, status_error
from tidalq.media.flac import StreamInfo
from tidalq.media.flachead import Block
from tidalq.media.remux import FlacRemuxer
from tidalq.media.verify import AudioFacts
from tidalq.upstream.http import read_capped
from tidalq.upstream.manifest import DashStream

ProgressFn = checked.ProgressFn
SEGMENT_TRIES = 4
MAX_SEGMENT_BYTES = 64 << 20


class FileSink:
    """A staging file, as the bytes come; a partial one left by an earlier try is resumed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._out: BinaryIO | None = None
        self.offset = path.stat().st_size if path.exists() else 0

    def __enter__(self) -> FileSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    async def write(self, chunk: bytes) -> None:
        if self._out is None:
            self._out = self.path.open("ab")
        self._out.write(chunk)
        self.offset += len(chunk)

    async def restart(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
        self.offset = 0


class Fetcher:
    """Downloads over one aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession, *, read_timeout_s: float = 30,
                 connect_timeout_s: float = 10, segment_parallel: int = 4,
                 on_bytes: Callable[[int], None] | None = None,
                 address_kinds: set[str] | None = None) -> None:
        self.session = session
        self.on_bytes = on_bytes or (lambda n: None)
        self.timeout = aiohttp.ClientTimeout(sock_connect=connect_timeout_s,
                                             sock_read=read_timeout_s)
        self.segment_parallel = segment_parallel
        # what a decoder program fetching for us needs to know (the session's rules)
        self.cdn = CdnSettings(connect_timeout_s, read_timeout_s,
                               session.headers.get("User-Agent", "tidalq"),
                               tuple(sorted(address_kinds)) if address_kinds else None)

    # -- FLAC verified as it arrives, by a decoder program ----------------------------------
    async def fetch_checked(self, url: str, dest: Path, tags: list[Block],
                            progress: ProgressFn) -> tuple[AudioFacts, int]:
        """``url`` to ``dest`` with ``tags`` ahead of the frames, decoded as it arrives;
        (the stream's facts, the file's size) once it passed and is on disk."""
        counted = [0]

        def metered(done: int, total: int | None) -> None:
            self.on_bytes(max(0, done - counted[0]))  # a file started over counts again
            counted[0] = done
            progress(done, total)

        return await checked.fetch_checked(url, dest, tags, self.cdn, metered)

    # -- direct files -----------------------------------------------------------------------
    async def fetch_file(self, url: str, dest: Path, progress: ProgressFn) -> int:
        """Download ``url`` to ``dest`` (resuming what is there); returns the size."""
        with FileSink(dest) as sink:
            return await self.fetch_into(url, sink, progress)

    async def fetch_into(self, url: str, sink: FileSink, progress: ProgressFn) -> int:
        """Download ``url`` into ``sink``, from its offset on; returns the remote size."""
        restarts = 0
        while True:
            try:
                return await self._fetch_once(url, sink, progress)
            except Cut as cut:
                restarts += 1
                if restarts > MAX_RESUMES:
                    raise UpstreamUnavailable("the CDN kept cutting the download short") from None
                if not cut.resumable:
                    await sink.restart()
            except OSError as exc:
                raise from_os_error(exc) from exc

    async def _fetch_once(self, url: str, sink: FileSink, progress: ProgressFn) -> int:
        have = sink.offset
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            async with self.session.get(url, headers=headers, timeout=self.timeout) as resp:
                if resp.status == 416 and have:
                    raise Cut(resumable=False)  # what we have is not a prefix of this file
                if resp.status not in (200, 206):
                    raise status_error(resp.status, url)
                if resp.status == 200 and have:
                    await sink.restart()  # the server sends the whole file again
                    have = 0
                total = have + resp.content_length if resp.content_length is not None else None
                resumable = resp.headers.get("Accept-Ranges", "").lower() == "bytes"
                return await self._stream_body(resp, sink, have, total, resumable, progress)
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, socket.gaierror):  # no cut: nowhere to connect to
                raise UpstreamUnavailable(f"the CDN's host {exc.host} could not be "
                                          f"resolved: {exc.os_error.strerror}") from exc
            raise Cut(resumable=sink.offset > 0) from exc
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError,
                aiohttp.ClientOSError, TimeoutError) as exc:
            raise Cut(resumable=sink.offset > 0) from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailable(f"CDN request failed: {exc}") from exc

    async def _stream_body(self, resp: aiohttp.ClientResponse, sink: FileSink, have: int,
                           total: int | None, resumable: bool, progress: ProgressFn) -> int:
        done = have
        try:
            async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
                await sink.write(chunk)
                done += len(chunk)
                self.on_bytes(len(chunk))
                progress(done, total)
        except (aiohttp.ClientPayloadError, aiohttp.ClientOSError, TimeoutError):
            raise Cut(resumable) from None
        if total is not None and done != total:
            raise Cut(resumable)
        return done

    # -- DASH ---------------------------------------------------------------------------------
    async def fetch_segment(self, url: str) -> bytes:
        for attempt in range(SEGMENT_TRIES):
            try:
                async with self.session.get(url, timeout=self.timeout) as resp:
                    if resp.status != 200:
                        raise status_error(resp.status, url)
                    data = await read_capped(resp, MAX_SEGMENT_BYTES)
                    if len(data) > MAX_SEGMENT_BYTES:
                        raise UpstreamUnavailable("a DASH segment is implausibly large")
                    if resp.content_length is not None and len(data) != resp.content_length:
                        raise aiohttp.ClientPayloadError("segment cut short")
                    self.on_bytes(len(data))
                    return data
            except CdnExpired:
                raise
            except (aiohttp.ClientError, TimeoutError, UpstreamUnavailable) as exc:
                if attempt == SEGMENT_TRIES - 1:
                    raise UpstreamUnavailable(f"segment failed {SEGMENT_TRIES} times: {exc}") \
                        from exc
                await asyncio.sleep(0.2 * 2 ** attempt)
        raise AssertionError("unreachable")

    async def fetch_dash(self, stream: DashStream, dest: Path,
                         progress: ProgressFn) -> StreamInfo:
        """Fetch init + segments in order (a window of them in flight) and remux to FLAC."""
        init = await self.fetch_segment(stream.init_url)
        total_segments = len(stream.segment_urls)
        window: deque[asyncio.Task[bytes]] = deque()
        urls = iter(stream.segment_urls)
        try:
            with dest.open("wb") as out:
                remux = FlacRemuxer(out)
                await asyncio.to_thread(remux.feed_init, init)
                done_bytes = len(init)
                for index in range(total_segments):
                    while len(window) < self.segment_parallel and (url := next(urls, None)):
                        window.append(asyncio.create_task(self.fetch_segment(url)))
                    data = await window.popleft()
                    # parsing frames is CPU work: off the loop, so leases are still renewed
                    await asyncio.to_thread(remux.feed_segment, data)
                    done_bytes += len(data)
                    avg = done_bytes / (index + 1)
                    progress(done_bytes, int(avg * (total_segments + 1)))
                return remux.finish()
        except OSError as exc:
            raise from_os_error(exc) from exc
        finally:
            for task in window:
                task.cancel()
            if window:
                await asyncio.gather(*window, return_exceptions=True)
