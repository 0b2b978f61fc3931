"""The decoder program: ``python -m tidalq.media.decoder_program``, one CDN file after
another, each downloaded, written and decoded where it arrives (the daemon's side, and why,
are in :mod:`tidalq.media.decoders`).

For each file the daemon sends a request: a JSON line (the URL, the staging file, how to
talk to the CDN) and the tag blocks that go ahead of the frames. The program fetches the
file (:mod:`tidalq.media.cdn_body`: resumes, redirects, the address rules), puts tidalq's
tags ahead of the frames (:class:`~tidalq.media.flachead.FlacHead`), writes the bytes to
the staging file and hands the same bytes to libFLAC (the library ``flac -t`` is built on,
through ctypes): MD5 checked, every decode error fatal, as ``flac -t``; beyond it, the
samples decoded must add up to what STREAMINFO says. A stream libFLAC rejects stops the
download there. Once the file passed, it is synced to disk.

A request ``{"file": path}`` (no tag blocks) asks for a finished file to be decoded
instead (libFLAC reads it itself); its verdict is ``ok`` or ``fail decode <why>``.

On stdout, ``p <bytes> <total>`` as the bytes come (the first, then every quarter second),
then one verdict line: ``ok <size> <bytes> <STREAMINFO in hex>`` (the file's size, the
CDN's bytes), ``fail decode <why>`` (the stream is broken), or ``fail <error>
<errno> <message>`` (the download failed: a tidalq error's name, or ``OSError`` when the
staging file could not be written). It imports what it needs only: several run beside the
daemon.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import IO, Any

from tidalq.errors import TidalqError
from tidalq.media.cdn_body import CdnBody, CdnSettings, Connections, StartOver
from tidalq.media.flachead import Block, FlacHead

MAX_STARTS = 6  # a file taken from its first byte again this often is given up on
PROGRESS_EVERY_S = 0.25

@functools.cache
def libflac_name() -> str | None:
    """The libFLAC a decoder loads, or None when this machine has none (the daemon finds
    it once and names it to each decoder: finding it runs ``ldconfig``)."""
    import ctypes.util

    return ctypes.util.find_library("FLAC")


# libFLAC's enums, as stream_decoder.h numbers them
_READ_CONTINUE, _READ_END_OF_STREAM, _READ_ABORT = 0, 1, 2
_WRITE_CONTINUE, _WRITE_ABORT = 0, 1
_ERRORS = {0: "lost sync", 1: "bad header", 2: "frame CRC mismatch", 3: "unparseable stream",
           4: "bad metadata"}


class _Libflac:
    """The few libFLAC calls a test decode needs."""

    P = ctypes.c_void_p
    READ = ctypes.CFUNCTYPE(ctypes.c_int, P, P, ctypes.POINTER(ctypes.c_size_t), P)
    WRITE = ctypes.CFUNCTYPE(ctypes.c_int, P, P, P, P)
    METADATA = ctypes.CFUNCTYPE(None, P, P, P)
    ERROR = ctypes.CFUNCTYPE(None, P, ctypes.c_int, P)

    def __init__(self, name: str) -> None:
        lib = ctypes.CDLL(name)
        p = self.P
        lib.FLAC__stream_decoder_new.restype = p
        lib.FLAC__stream_decoder_new.argtypes = []
        lib.FLAC__stream_decoder_init_stream.argtypes = [
            p, self.READ, p, p, p, p, self.WRITE, self.METADATA, self.ERROR, p]
        lib.FLAC__stream_decoder_init_file.argtypes = [
            p, ctypes.c_char_p, self.WRITE, self.METADATA, self.ERROR, p]
        lib.FLAC__stream_decoder_set_md5_checking.argtypes = [p, ctypes.c_int]
        for call in ("process_until_end_of_stream", "finish", "delete",
                     "get_total_samples"):
            getattr(lib, f"FLAC__stream_decoder_{call}").argtypes = [p]
        lib.FLAC__stream_decoder_get_total_samples.restype = ctypes.c_uint64
        self.lib = lib


_memory_view = ctypes.pythonapi.PyMemoryView_FromMemory
_memory_view.restype = ctypes.py_object
_memory_view.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_int]
_PYBUF_WRITE = 0x200


def _memory_at(address: int, size: int) -> memoryview:
    """libFLAC's buffer as a writable memoryview: the bytes are read straight into it."""
    view: memoryview = _memory_view(address, size, _PYBUF_WRITE)
    return view


def _block_size(frame: int) -> int:
    """A decoded frame's samples per channel: a FLAC__Frame starts with its header's
    ``blocksize``, a uint32."""
    return int.from_bytes(ctypes.string_at(frame, 4), sys.byteorder)




class _Watch:
    """libFLAC's write and error callbacks for one stream: the samples decoded, and the
    errors seen (any is fatal, as for ``flac -t``: libFLAC would resynchronise and go on)."""

    def __init__(self, flac: _Libflac) -> None:
        self.problems: list[str] = []
        self.decoded = 0

        def write(_d: Any, frame: int, _b: Any, _c: Any) -> int:
            self.decoded += _block_size(frame)
            return _WRITE_ABORT if self.problems else _WRITE_CONTINUE

        def error(_d: Any, status: int, _c: Any) -> None:
            self.problems.append(_ERRORS.get(status, f"decoder error {status}"))

        self.callbacks = (flac.WRITE(write), flac.METADATA(lambda *a: None),
                          flac.ERROR(error))


def _run(flac: _Libflac, watch: _Watch, start: Callable[[int], int],
         stopped: Callable[[], bool] = lambda: False) -> str | None:
    """Decode the stream ``start`` sets a new decoder up for (it returns libFLAC's init
    status); None when it passed, else why not. ``stopped``: the bytes stopped coming
    for a reason of their own (which the caller tells instead)."""
    lib = flac.lib
    decoder = lib.FLAC__stream_decoder_new()
    try:
        lib.FLAC__stream_decoder_set_md5_checking(decoder, 1)
        if start(decoder) != 0:
            return "libFLAC could not start a decoder"
        went_through = lib.FLAC__stream_decoder_process_until_end_of_stream(decoder)
        expected = lib.FLAC__stream_decoder_get_total_samples(decoder)
        md5_ok = lib.FLAC__stream_decoder_finish(decoder)
    finally:
        lib.FLAC__stream_decoder_delete(decoder)
    if watch.problems:
        return watch.problems[0]
    if stopped():
        return None
    if not went_through:
        return "the stream does not decode"
    if not md5_ok:
        return "MD5 signature mismatch"
    if expected and watch.decoded != expected:
        return f"{watch.decoded} samples decoded of the {expected} STREAMINFO names"
    return None


def _decode(flac: _Libflac, source: _Source) -> str | None:
    """Decode what ``source`` gives as it comes; None when it passed, else why not (when
    the source itself failed, its ``failure`` says so instead)."""
    watch = _Watch(flac)

    def read(_d: Any, buffer: int, size: Any, _c: Any) -> int:
        got = -1 if watch.problems else source.read_into(_memory_at(buffer, size[0]))
        size[0] = max(got, 0)
        return _READ_ABORT if got < 0 else _READ_CONTINUE if got else _READ_END_OF_STREAM

    reader = flac.READ(read)
    return _run(flac, watch, lambda decoder: flac.lib.FLAC__stream_decoder_init_stream(
        decoder, reader, None, None, None, None, *watch.callbacks, None),
        lambda: source.failure is not None)


def check_file(flac: _Libflac, path: str) -> str:
    """Decode a finished file (libFLAC reads it itself); returns the verdict line."""
    try:
        os.stat(path)
    except OSError as exc:
        return f"fail decode cannot be read: {exc.strerror}"
    watch = _Watch(flac)
    why = _run(flac, watch, lambda decoder: flac.lib.FLAC__stream_decoder_init_file(
        decoder, os.fsencode(path), *watch.callbacks, None))
    return "ok" if why is None else f"fail decode {why}"


class _Source:
    """The file's bytes for libFLAC: each chunk from the CDN goes through the head, is
    written to the staging file, and is kept until libFLAC has read it."""

    def __init__(self, chunks: Iterator[bytes], head: FlacHead, out: IO[bytes],
                 say: Callable[[int], None]) -> None:
        self._chunks = chunks
        self._head = head
        self._out = out
        self._say = say
        self._pieces: deque[memoryview] = deque()
        self.failure: BaseException | None = None  # why the bytes stopped coming, if so

    def read_into(self, buffer: memoryview) -> int:
        """Up to ``len(buffer)`` bytes; 0 at the file's end, -1 once it failed."""
        try:
            while not self._pieces:
                chunk = next(self._chunks, None)
                if chunk is None:
                    return 0
                self._take(chunk)
        except BaseException as exc:  # libFLAC is between us and the caller: kept for it
            self.failure = exc
            return -1
        piece = self._pieces[0]
        k = min(len(buffer), len(piece))
        buffer[:k] = piece[:k]
        if k == len(piece):
            self._pieces.popleft()
        else:
            self._pieces[0] = piece[k:]
        return k

    def _take(self, chunk: bytes) -> None:
        for piece in self._head.feed(chunk):
            self._out.write(piece)  # an OSError here (a full disk) is the verdict's
            self._pieces.append(memoryview(piece))
        self._say(self._head.consumed)

    def close(self) -> None:
        """Stop taking bytes (a broken stream): the connection is not kept."""
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


class _Progress:
    """Tells how far the download is: its first bytes at once (a slow start shows), then
    at most every :data:`PROGRESS_EVERY_S` (the rest of a file that arrives faster is
    told by its verdict)."""

    def __init__(self, say: Callable[[int], None]) -> None:
        self._say = say
        self._next = 0.0

    def took(self, consumed: int) -> None:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + PROGRESS_EVERY_S
            self._say(consumed)


def fetch_and_check(flac: _Libflac, connections: Connections, request: dict[str, Any],
                    tags: list[Block], say: Callable[[str], None]) -> str:
    """Fetch, write and decode one file; returns the verdict line."""
    body = CdnBody(request["url"], CdnSettings.of_json(request["cdn"]), connections)
    head = FlacHead(tags)
    progress = _Progress(lambda n: say(f"p {n} {body.total or -1}"))
    try:
        with open(request["path"], "wb", buffering=0) as out:
            for _ in range(MAX_STARTS):
                source = _Source(body.chunks(0), head, out, progress.took)
                why = _decode(flac, source)
                source.close()
                if isinstance(source.failure, StartOver):
                    out.seek(0)
                    out.truncate()
                    head.restart()
                    continue
                if source.failure is not None:
                    raise source.failure
                info = head.finish()  # the stream ended inside its header: that says more
                if why is not None:
                    return f"fail decode {why}"
                os.fsync(out.fileno())
                return f"ok {out.tell()} {head.consumed} {info.pack().hex()}"
            return "fail UpstreamUnavailable 0 the CDN kept cutting the download short"
    except OSError as exc:  # the staging file could not be opened, written or synced (the
        # CDN's socket errors are cuts, or UpstreamUnavailable, inside cdn_body)
        return f"fail OSError {exc.errno or 0} {exc}"
    except TidalqError as exc:
        return f"fail {type(exc).__name__} 0 {exc}"


def pack_tags(tags: list[Block]) -> bytes:
    """Tag blocks as the daemon sends them: a kind byte, a 4-byte length, the body."""
    return b"".join(bytes([kind]) + len(body).to_bytes(4, "big") + body for kind, body in tags)


def unpack_tags(data: bytes) -> list[Block]:
    """What :func:`pack_tags` made."""
    blocks, at = [], 0
    while at < len(data):
        size = int.from_bytes(data[at + 1:at + 5], "big")
        blocks.append((data[at], data[at + 5:at + 5 + size]))
        at += 5 + size
    return blocks


def serve(stdin: IO[bytes], stdout: IO[bytes], name: str | None) -> None:
    """The decoder program: requests on ``stdin``, reports on ``stdout``, until stdin ends;
    ``name`` is the libFLAC to load."""
    if name is None:
        raise SystemExit("tidalq decoder: no libFLAC on this machine")
    flac = _Libflac(name)
    connections = Connections()

    def say(line: str) -> None:
        stdout.write(line.replace("\n", " ").encode(errors="replace") + b"\n")
        stdout.flush()

    while line := stdin.readline():
        request = json.loads(line)
        tags = unpack_tags(stdin.read(request["tags_bytes"]))
        try:
            say(check_file(flac, request["file"]) if "file" in request else
                fetch_and_check(flac, connections, request, tags, say))
        except Exception as exc:  # what no rule foresaw: told as such, and no kept state
            say(f"fail UpstreamUnavailable 0 the download failed: {type(exc).__name__}: "
                f"{exc}")
            connections = Connections()


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer,
          sys.argv[1] if len(sys.argv) > 1 else libflac_name())
