"""The decoder programs that fetch a FLAC file and decode it as it downloads
(:mod:`tidalq.media.decoders`): real processes fetching over real HTTP on loopback files
made by the real ``flac`` and then broken in the ways a CDN or a crafted file can break
them, and answers a CDN gives turned into the daemon's errors."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.test_checked_download import metadata_and_frames
from tidalq.errors import (
    CdnExpired,
    FilesystemError,
    IntegrityFailed,
    ManifestError,
    UpstreamUnavailable,
)
from tidalq.media.cdn_body import CdnSettings, connect_first
from tidalq.media.checked import fetch_checked
from tidalq.media.decoders import _LOOPS_DECODERS, Decoders
from tidalq.media.flachead import FlacHead


def a_flac(tmp_path: Path, seconds: float = 2.0) -> bytes:
    """A real FLAC file of noise (so its frames are big): its length and MD5 in STREAMINFO,
    as a CDN's files have them (an encoder writing to a pipe cannot go back for them)."""
    pcm = os.urandom(int(44100 * seconds) * 4)
    out = tmp_path / "noise.flac"
    subprocess.run(["flac", "-s", "--force-raw-format", "--endian=little", "--sign=signed",
                    "--channels=2", "--bps=16", "--sample-rate=44100", "-", "-o", str(out)],
                   input=pcm, check=True)
    return out.read_bytes()


def with_streaminfo(data: bytes, extra_samples: int = 0, md5: bytes | None = None) -> bytes:
    """``data`` with its STREAMINFO's sample count raised and its MD5 replaced."""
    out = bytearray(data)
    packed = int.from_bytes(out[18:26], "big")  # rate, channels, depth, 36-bit sample count
    samples = packed & ((1 << 36) - 1)
    out[18:26] = ((packed & ~((1 << 36) - 1)) | (samples + extra_samples)).to_bytes(8, "big")
    if md5 is not None:
        out[26:42] = md5
    return bytes(out)


class Cdn:
    """A CDN on loopback serving what a test puts at a path (a real aiohttp server)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.answers: dict[str, tuple[int, dict[str, str]]] = {}
        self.requests: list[str] = []
        self.peers: list[object] = []  # the connection each request came on
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self, keepalive_s: float = 75, tls: ssl.SSLContext | None = None,
                    host: str = "127.0.0.1") -> Cdn:
        app = web.Application()
        app.router.add_get("/{name}", self._serve)
        self._runner = web.AppRunner(app, keepalive_timeout=keepalive_s)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=tls)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"{'https' if tls else 'http'}://{host}:{port}"
        return self

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.requests.append(name)
        assert request.transport is not None
        self.peers.append(request.transport.get_extra_info("peername"))
        if name in self.answers:
            status, headers = self.answers[name]
            return web.Response(status=status, headers=headers)
        if name.startswith("chunked"):  # no length: the body comes in chunks to its end
            resp = web.StreamResponse()
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            data = self.files[name]
            for at in range(0, len(data), 100_000):
                await resp.write(data[at:at + 100_000])
            await resp.write_eof()
            return resp
        return web.Response(body=self.files[name], headers={"Accept-Ranges": "bytes"})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def cdn() -> AsyncIterator[Cdn]:
    server = await Cdn().start()
    yield server
    await server.stop()


LOOPBACK = CdnSettings(allowed=("loopback",))


async def fetch(cdn: Cdn, data: bytes, tmp_path: Path, decoders: Decoders,
                settings: CdnSettings = LOOPBACK, name: str = "t.flac") -> tuple[int, int]:
    """``data`` served and fetched through a decoder from ``decoders``; returns
    (the decoder's pid, the file's size)."""
    cdn.files[name] = data
    dest = tmp_path / name
    got: list[int] = []

    async def taken() -> tuple[Any, int]:
        return await fetch_checked(f"{cdn.url}/{name}", dest, [], settings,
                                   lambda done, total: got.append(done))

    with _pool(decoders):
        _, size = await taken()
    assert got and got[-1] == len(data)  # progress reported as the bytes came
    return decoders._idle[-1].proc.pid, size


@contextlib.contextmanager
def _pool(decoders: Decoders) -> Iterator[None]:
    """``decoders`` as this loop's pool for the duration."""
    loop = asyncio.get_running_loop()
    before = _LOOPS_DECODERS.get(loop)
    _LOOPS_DECODERS[loop] = decoders
    try:
        yield
    finally:
        if before is None:
            del _LOOPS_DECODERS[loop]
        else:
            _LOOPS_DECODERS[loop] = before


async def test_a_decoder_takes_file_after_file_and_a_broken_one_costs_it(
        cdn: Cdn, tmp_path: Path) -> None:
    decoders = Decoders()
    good = a_flac(tmp_path)
    try:
        await fetch(cdn, good, tmp_path, decoders, name="chunked.flac")  # as some CDNs send
        first, size = await fetch(cdn, good, tmp_path, decoders)
        assert (await fetch(cdn, good, tmp_path, decoders))[0] == first  # the same program
        written = (tmp_path / "t.flac").read_bytes()
        assert len(written) == size and metadata_and_frames(written)[1] == \
            metadata_and_frames(good)[1]  # the CDN's frames, our head
        subprocess.run(["flac", "-t", "-s", str(tmp_path / "t.flac")], check=True)

        broken = bytearray(good)
        broken[len(broken) // 2] ^= 0xFF
        with pytest.raises(IntegrityFailed, match=r"t.flac failed a full decode: .*(CRC|sync)"):
            await fetch(cdn, bytes(broken), tmp_path, decoders)
        assert (await fetch(cdn, good, tmp_path, decoders))[0] != first  # that one dropped
    finally:
        decoders.close()


@pytest.mark.parametrize(("change", "why"), [
    (lambda d: d, None),
    (lambda d: with_streaminfo(d, md5=bytes(16)), None),  # an unset MD5 is no fault
    (lambda d: with_streaminfo(d, md5=b"\x01" * 16), "MD5 signature mismatch"),
    # frames missing at the end, MD5 unset: only the sample count shows it
    (lambda d: with_streaminfo(d, extra_samples=4096, md5=bytes(16)),
     "samples decoded of the"),
    (lambda d: d[:len(d) // 2], "MD5 signature mismatch|samples decoded"),  # cut short
    (lambda d: b"ID3 and then nothing like FLAC" * 100, "not FLAC"),
    (lambda d: b"", "ended inside its FLAC header"),
])
async def test_what_the_decoder_finds(change: Callable[[bytes], bytes], why: str | None,
                                      cdn: Cdn, tmp_path: Path) -> None:
    decoders = Decoders()
    data = change(a_flac(tmp_path))
    try:
        if why is None:
            await fetch(cdn, data, tmp_path, decoders)
        else:
            with pytest.raises(IntegrityFailed, match=why):
                await fetch(cdn, data, tmp_path, decoders)
    finally:
        decoders.close()


async def test_a_connection_is_kept_for_the_next_file_and_replaced_once_closed(
        tmp_path: Path) -> None:
    cdn = await Cdn().start(keepalive_s=0.3)
    decoders = Decoders()
    good = a_flac(tmp_path)
    try:
        await fetch(cdn, good, tmp_path, decoders)
        await fetch(cdn, good, tmp_path, decoders)
        assert cdn.peers[0] == cdn.peers[1]  # one connection for both files
        await asyncio.sleep(0.6)  # the server closes the idle connection meanwhile
        await fetch(cdn, good, tmp_path, decoders)  # no cut, no failure: a new one
        assert cdn.peers[2] != cdn.peers[1] and len(cdn.requests) == 3
    finally:
        decoders.close()
        await cdn.stop()


def test_an_address_that_never_answers_costs_a_moment_not_the_connect_timeout() -> None:
    """Happy eyeballs: a name's first address silent (as IPv6 is on many home networks),
    the next one is tried a quarter second later and wins."""
    there = socket.create_server(("127.0.0.1", 0))
    silent = socket.socket()  # a listener whose queue is full drops what comes next
    silent.bind(("127.0.0.1", 0))
    silent.listen(0)
    queued = [socket.socket() for _ in range(3)]
    for sock in queued:
        sock.setblocking(False)
        sock.connect_ex(silent.getsockname())
    at = (socket.AF_INET, socket.SOCK_STREAM, 6, "")
    began = time.monotonic()
    try:
        with connect_first([(*at, silent.getsockname()), (*at, there.getsockname())],
                           timeout_s=10) as sock:
            assert sock.getpeername() == there.getsockname()
        assert time.monotonic() - began < 2
        with pytest.raises(TimeoutError):  # nothing answers
            connect_first([(*at, silent.getsockname())], timeout_s=0.5)
    finally:
        for sock in [there, silent, *queued]:
            sock.close()


def a_certificate(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for ``name`` (and its key), made by the real openssl."""
    cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}",
                    "-keyout", str(key), "-out", str(cert)], check=True,
                   capture_output=True)
    return cert, key


async def test_a_cdn_over_tls_is_fetched_and_a_wrong_certificate_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As real CDNs serve: HTTPS, the certificate checked against the host's name."""
    cert, key = a_certificate(tmp_path, "localhost")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the decoders trust it, as a CA
    cdn = await Cdn().start(tls=tls, host="localhost")
    decoders = Decoders()
    good = a_flac(tmp_path)
    try:
        await fetch(cdn, good, tmp_path, decoders)
        subprocess.run(["flac", "-t", "-s", str(tmp_path / "t.flac")], check=True)

        other, _ = a_certificate(tmp_path, "cdn.example.org")  # trusted, for another name
        monkeypatch.setenv("SSL_CERT_FILE", str(other))
        decoders.close()
        decoders = Decoders()
        with pytest.raises(UpstreamUnavailable, match="certificate was refused"):
            await fetch(cdn, good, tmp_path, decoders)
    finally:
        decoders.close()
        await cdn.stop()


async def test_a_decoder_that_says_nothing_fails_its_track_and_is_dropped(
        cdn: Cdn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    decoders = Decoders()
    monkeypatch.setattr("tidalq.media.decoders.REPLY_TIMEOUT_S", 0.5)
    good = a_flac(tmp_path)
    try:
        first, _ = await fetch(cdn, good, tmp_path, decoders)
        os.kill(first, signal.SIGSTOP)  # alive, and silent
        with pytest.raises(IntegrityFailed, match=r"the decoder said nothing for 0\.5s"):
            await fetch(cdn, good, tmp_path, decoders)
        assert (await fetch(cdn, good, tmp_path, decoders))[0] != first
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(first, signal.SIGCONT)
        decoders.close()


async def test_what_the_cdn_answers_becomes_the_daemons_errors(cdn: Cdn,
                                                                 tmp_path: Path) -> None:
    decoders = Decoders()
    good = a_flac(tmp_path)
    cdn.files["moved.flac"] = good
    cdn.answers["old.flac"] = (302, {"Location": "/moved.flac"})
    cdn.answers["expired.flac"] = (403, {})
    cdn.answers["down.flac"] = (503, {})
    try:
        with _pool(decoders):
            await fetch_checked(f"{cdn.url}/old.flac", tmp_path / "a.flac", [], LOOPBACK,
                                lambda *a: None)  # a redirect is followed
            assert cdn.requests[-2:] == ["old.flac", "moved.flac"]
            with pytest.raises(CdnExpired):
                await fetch_checked(f"{cdn.url}/expired.flac", tmp_path / "b.flac", [],
                                    LOOPBACK, lambda *a: None)
            with pytest.raises(UpstreamUnavailable, match="answered 503"):
                await fetch_checked(f"{cdn.url}/down.flac", tmp_path / "c.flac", [],
                                    LOOPBACK, lambda *a: None)
            # the address rules: a loopback CDN where no upstream is on loopback
            with pytest.raises(ManifestError, match=r"refusing to connect to 127\.0\.0\.1"):
                await fetch_checked(f"{cdn.url}/moved.flac", tmp_path / "d.flac", [],
                                    CdnSettings(allowed=("public",)), lambda *a: None)
            with pytest.raises(ManifestError, match="refusing to connect"):  # by name too
                await fetch_checked(f"{cdn.url.replace('127.0.0.1', 'localhost')}/moved.flac",
                                    tmp_path / "d.flac", [], CdnSettings(allowed=("public",)),
                                    lambda *a: None)
            with pytest.raises(FilesystemError):  # the staging folder is gone
                await fetch_checked(f"{cdn.url}/moved.flac", tmp_path / "gone" / "e.flac",
                                    [], LOOPBACK, lambda *a: None)
            with pytest.raises(UpstreamUnavailable, match="could not be resolved"):
                await fetch_checked("http://no-such-host.invalid/t.flac", tmp_path / "f.flac",
                                    [], LOOPBACK, lambda *a: None)
            for nowhere in ("http://a..b/t.flac", "http://cdn.example.org:99999/t.flac"):
                with pytest.raises(ManifestError, match="no valid host and port"):
                    await fetch_checked(nowhere, tmp_path / "g.flac", [], LOOPBACK,
                                        lambda *a: None)
        assert cdn.requests.count("moved.flac") == 1  # refused ones never reached it
    finally:
        decoders.close()


@pytest.mark.parametrize("chunk", [7, 4096, 1 << 20])
def test_the_header_is_replaced_however_the_stream_is_cut(chunk: int, tmp_path: Path) -> None:
    """The CDN's bytes come in chunks of any size; the file is the same bytes each time:
    our tags ahead of the CDN's frames, unchanged."""
    data = a_flac(tmp_path)
    head = FlacHead([(4, b"\x00" * 8 + b"\x00\x00\x00\x00")])  # an empty Vorbis comment
    out = b"".join(bytes(piece) for at in range(0, len(data), chunk)
                   for piece in head.feed(data[at:at + chunk]))
    assert head.finish().total_samples == 88200 and head.consumed == len(data)
    blocks, frames = metadata_and_frames(out)
    assert blocks == ["STREAMINFO", "VORBIS_COMMENT", "PADDING"]  # the encoder's tags gone
    assert frames == metadata_and_frames(data)[1]
    path = tmp_path / "out.flac"
    path.write_bytes(out)
    subprocess.run(["flac", "-t", "-s", str(path)], check=True)
