"""The decoder program: ``python -m tidalq.media.decoder_program``, one FLAC stream after
another on its stdin, a verdict for each on its stdout (the daemon's side, and why, are in
:mod:`tidalq.media.decoders`).

libFLAC (the library ``flac -t`` is built on) through ctypes: MD5 checked, every decode
error fatal, as ``flac -t``; beyond it, the samples decoded must add up to what STREAMINFO
says. On stdin, a stream is a run of frames, each a 4-byte big-endian length and that many
bytes, ended by an empty frame. On stdout, one line per stream: ``ok`` or ``fail <why>``,
written as soon as the verdict is known (a broken stream is told before its end), after
which the program skips to the stream's end. It imports only what it needs: several run
beside the daemon.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys
from typing import Any


@functools.cache
def libflac_name() -> str | None:
    """The libFLAC a decoder loads, or None when this machine has none."""
    return ctypes.util.find_library("FLAC")


# libFLAC's enums, as stream_decoder.h numbers them
_READ_CONTINUE, _READ_END_OF_STREAM, _READ_ABORT = 0, 1, 2
_WRITE_CONTINUE, _WRITE_ABORT = 0, 1
_ERRORS = {0: "lost sync", 1: "bad header", 2: "frame CRC mismatch", 3: "unparseable stream",
           4: "bad metadata"}


class _Stdin:
    """The frames on stdin, read from the pipe a block at a time (libFLAC asks for 8 kB
    at a time: a read from the pipe for each would cost more than the copy)."""

    BLOCK = 256 * 1024

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.left = 0  # bytes of the current frame not handed on yet
        self.ended = False  # the empty frame came: this stream is over
        self.closed = False  # stdin itself ended: no more streams
        self._view = memoryview(bytearray(self.BLOCK))
        self._have = self._at = 0  # bytes in the block, and how many were handed on

    def _refill(self) -> bool:
        """The next block from the pipe; False at its end."""
        self._have, self._at = os.readv(self.fd, [self._view]), 0
        if not self._have:
            self.closed = self.ended = True
        return bool(self._have)

    def _take(self, n: int) -> bytes | None:
        taken = b""
        while len(taken) < n:
            if self._at == self._have and not self._refill():
                return None
            k = min(n - len(taken), self._have - self._at)
            taken += self._view[self._at:self._at + k]
            self._at += k
        return taken

    def next_frame(self) -> None:
        header = self._take(4)
        if header is None:
            self.closed = self.ended = True
            return
        self.left = int.from_bytes(header, "big")
        self.ended = self.left == 0

    def read_into(self, buffer: memoryview) -> int:
        """Up to ``len(buffer)`` bytes of this stream; 0 once it ended."""
        while not self.left and not self.ended:
            self.next_frame()
        if self.ended or (self._at == self._have and not self._refill()):
            return 0
        k = min(len(buffer), self.left, self._have - self._at)
        buffer[:k] = self._view[self._at:self._at + k]
        self._at += k
        self.left -= k
        return k

    def skip_to_end(self) -> None:
        while not self.ended:
            if not self.left:
                self.next_frame()
            elif self._at < self._have or self._refill():
                k = min(self.left, self._have - self._at)
                self._at += k
                self.left -= k


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


def _decode_one(flac: _Libflac, stdin: _Stdin) -> str | None:
    """Decode the stream on stdin; None when it passed, else why not."""
    lib = flac.lib
    problems: list[str] = []
    decoded = [0]

    # any decode error is fatal, as for ``flac -t``: libFLAC would resynchronise and go on
    def read(_d: Any, buffer: int, size: Any, _c: Any) -> int:
        if problems:
            size[0] = 0
            return _READ_ABORT
        got = stdin.read_into(_memory_at(buffer, size[0]))
        size[0] = got
        return _READ_CONTINUE if got else _READ_END_OF_STREAM

    def write(_d: Any, frame: int, _b: Any, _c: Any) -> int:
        decoded[0] += _block_size(frame)
        return _WRITE_ABORT if problems else _WRITE_CONTINUE

    def error(_d: Any, status: int, _c: Any) -> None:
        problems.append(_ERRORS.get(status, f"decoder error {status}"))

    callbacks = (flac.READ(read), flac.WRITE(write), flac.METADATA(lambda *a: None),
                 flac.ERROR(error))
    decoder = lib.FLAC__stream_decoder_new()
    try:
        lib.FLAC__stream_decoder_set_md5_checking(decoder, 1)
        if lib.FLAC__stream_decoder_init_stream(decoder, callbacks[0], None, None, None, None,
                                                *callbacks[1:], None) != 0:
            return "libFLAC could not start a decoder"
        went_through = lib.FLAC__stream_decoder_process_until_end_of_stream(decoder)
        expected = lib.FLAC__stream_decoder_get_total_samples(decoder)
        md5_ok = lib.FLAC__stream_decoder_finish(decoder)
    finally:
        lib.FLAC__stream_decoder_delete(decoder)
    if problems or not went_through:
        return problems[0] if problems else "the stream does not decode"

    if not md5_ok:
        return "MD5 signature mismatch"
    if expected and decoded[0] != expected:
        return f"{decoded[0]} samples decoded of the {expected} STREAMINFO names"
    return None


def serve(fd_in: int = 0, out: Any = None) -> None:
    """The decoder program: streams on ``fd_in``, verdicts on stdout, until stdin ends."""
    out = out or sys.stdout
    name = libflac_name()
    if name is None:
        raise SystemExit("tidalq decoder: no libFLAC on this machine")
    flac = _Libflac(name)
    stdin = _Stdin(fd_in)
    while True:
        stdin.next_frame()
        if stdin.closed:
            return
        if stdin.ended:  # an empty stream
            why: str | None = "an empty stream"
        else:
            why = _decode_one(flac, stdin)
        out.write("ok\n" if why is None else f"fail {why}\n")
        out.flush()
        stdin.skip_to_end()
        if stdin.closed:
            return


if __name__ == "__main__":
    serve()
