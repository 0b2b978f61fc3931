"""FLAC decoders that outlive a track: programs of their own, each decoding one stream after
another, so a track costs the daemon a pipe's worth of writes instead of a program's start.

A decoder is ``python -m tidalq.media.decoders``: libFLAC (the library ``flac -t`` is
built on) through ctypes, MD5 checked, every decode error fatal, as ``flac -t``; beyond it,
the samples decoded must add up to what STREAMINFO says. It runs apart from the daemon, so
a stream crafted to crash the decoder crashes that program only; the track fails and the
next one gets a new decoder.

On the decoder's stdin, a stream is a run of frames, each a 4-byte big-endian length and
that many bytes, ended by an empty frame. On its stdout, one line per stream: ``ok`` or
``fail <why>``, written as soon as the verdict is known (a broken stream is told before its
end), after which it skips to the stream's end.

:class:`StreamDecode` is the daemon's side: a decoder taken from :class:`Decoders` (idle
ones are kept, and closed after a minute unused) for one stream, returned after a clean
verdict and killed otherwise (a cancelled job, a fetch that starts over, a broken stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import fcntl
import functools
import os
import subprocess
import sys
import weakref
from collections.abc import Callable
from typing import Any, NoReturn

from tidalq.errors import IntegrityFailed

DECODE_TIMEOUT_S = 600
IDLE_CLOSE_S = 60.0  # an idle decoder is closed after this long (its memory is given back)
KEPT_IDLE = 8
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Linux; Python 3.10+ names it
PIPE_BYTES = 1 << 20  # what an unprivileged process may ask (/proc/sys/fs/pipe-max-size)
END_OF_STREAM = b"\0\0\0\0"


@functools.cache
def libflac_name() -> str | None:
    """The libFLAC a decoder loads, or None when this machine has none."""
    return ctypes.util.find_library("FLAC")


# -- the decoder program ---------------------------------------------------------------------
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


# -- the daemon's side -----------------------------------------------------------------------
class _Process:
    """A running decoder, its stdin made non-blocking, its verdicts read on the loop."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        assert proc.stdin is not None and proc.stdout is not None
        self.stdin = proc.stdin.fileno()
        self.stdout = proc.stdout.fileno()
        os.set_blocking(self.stdin, False)
        os.set_blocking(self.stdout, False)
        with contextlib.suppress(OSError):  # a smaller pipe only means more waits
            fcntl.fcntl(self.stdin, F_SETPIPE_SZ, PIPE_BYTES)
        self._said = b""
        self.verdict: asyncio.Future[str] | None = None
        self.idle_timer: asyncio.TimerHandle | None = None

    def listen(self) -> asyncio.Future[str]:
        """The next verdict (or why none will come) as a future."""
        loop = asyncio.get_running_loop()
        self.verdict = verdict = loop.create_future()
        loop.add_reader(self.stdout, self._readable)
        return verdict

    def _readable(self) -> None:
        try:
            more = os.read(self.stdout, 4096)
        except BlockingIOError:
            return
        except OSError:
            more = b""
        if more:
            self._said += more
            if b"\n" not in self._said:
                return
            line, self._said = self._said.split(b"\n", 1)
            self._settle(line.decode(errors="replace"))
        else:  # it ended: how is told once it is reaped (off the loop)
            loop = asyncio.get_running_loop()
            loop.remove_reader(self.stdout)
            ending = loop.run_in_executor(None, _how_it_ended, self.proc)
            ending.add_done_callback(
                lambda how: self._settle(f"fail the decoder ended ({how.result()})"))

    def _settle(self, line: str) -> None:
        asyncio.get_running_loop().remove_reader(self.stdout)
        if self.verdict is not None and not self.verdict.done():
            self.verdict.set_result(line)

    def kill(self) -> None:
        with contextlib.suppress(RuntimeError, ValueError):  # the loop is gone at exit
            asyncio.get_running_loop().remove_reader(self.stdout)
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        self.proc.kill()  # a no-op once it ended
        _reap(self.proc)

    def close(self) -> None:
        """Stdin closed: the decoder ends on its own."""
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        _reap(self.proc)


def _how_it_ended(proc: subprocess.Popen[bytes]) -> str:
    try:
        status = proc.wait(5)
    except subprocess.TimeoutExpired:
        return "closed its output"
    return f"killed by signal {-status}" if status < 0 else f"exit status {status}"


def _reap(proc: subprocess.Popen[bytes]) -> None:
    asyncio.get_running_loop().run_in_executor(None, _wait_quietly, proc)


def _wait_quietly(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        proc.wait()
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


def _spawn() -> _Process:
    proc = subprocess.Popen([sys.executable, "-m", "tidalq.media.decoders"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    return _Process(proc)


class Decoders:
    """Idle decoders kept for the next stream (up to :data:`KEPT_IDLE`, a minute each)."""

    def __init__(self, spawn: Callable[[], _Process] = _spawn) -> None:
        self._spawn = spawn
        self._idle: list[_Process] = []

    async def take(self) -> _Process:
        while self._idle:
            process = self._idle.pop()
            if process.idle_timer is not None:
                process.idle_timer.cancel()
            if process.proc.poll() is None:
                return process
            process.kill()
        # started on a thread: a fork of a big daemon is not the event loop's to wait for
        spawning = asyncio.get_running_loop().run_in_executor(None, self._spawn)
        try:
            return await asyncio.shield(spawning)
        except asyncio.CancelledError:  # the job was cancelled meanwhile: no orphan decoder
            spawning.add_done_callback(_kill_spawned)
            raise

    def give_back(self, process: _Process) -> None:
        if len(self._idle) >= KEPT_IDLE:
            process.close()
            return
        self._idle.append(process)
        process.idle_timer = asyncio.get_running_loop().call_later(
            IDLE_CLOSE_S, self._close_idle, process)

    def _close_idle(self, process: _Process) -> None:
        if process in self._idle:
            self._idle.remove(process)
            process.close()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


def _kill_spawned(spawning: asyncio.Future[_Process]) -> None:
    if not spawning.cancelled() and spawning.exception() is None:
        spawning.result().kill()


_LOOPS_DECODERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Decoders] = \
    weakref.WeakKeyDictionary()


def of_this_loop() -> Decoders:
    """The running event loop's decoders (their pipes are watched by that loop)."""
    loop = asyncio.get_running_loop()
    if loop not in _LOOPS_DECODERS:
        _LOOPS_DECODERS[loop] = Decoders()
    return _LOOPS_DECODERS[loop]


class StreamDecode:
    """One stream through a decoder as its bytes arrive: :meth:`start`, :meth:`feed` the
    bytes in order, :meth:`finish`; :meth:`kill` drops the decoder (idempotent)."""

    def __init__(self, name: str, decoders: Decoders | None = None) -> None:
        self.name = name  # the file's name, for errors
        self._decoders = decoders or of_this_loop()
        self._process: _Process | None = None
        self._verdict: asyncio.Future[str] | None = None

    async def start(self) -> None:
        self._process = process = await self._decoders.take()
        self._verdict = process.listen()

    async def feed(self, *pieces: bytes | memoryview) -> None:
        """Hand the decoder these bytes; waits while it is behind (its pipe is full).
        IntegrityFailed as soon as it found the stream broken."""
        size = sum(len(p) for p in pieces)
        await self._write([size.to_bytes(4, "big"), *pieces])

    async def finish(self) -> None:
        """The stream ended: IntegrityFailed unless the decoder passed all of it."""
        await self._write([END_OF_STREAM])
        process, verdict = self._running()
        try:
            said = await asyncio.wait_for(asyncio.shield(verdict), DECODE_TIMEOUT_S)
        except TimeoutError:
            self.kill()
            raise IntegrityFailed(f"{self.name} failed a full decode: no end after "
                                  f"{DECODE_TIMEOUT_S}s") from None
        self._judge(said)
        self._process = None
        self._decoders.give_back(process)

    async def _write(self, pieces: list[bytes | memoryview]) -> None:
        process, verdict = self._running()
        views = [memoryview(p) for p in pieces]
        while views:
            if verdict.done():
                self._stopped_early(verdict.result())
            try:
                sent = os.writev(process.stdin, views)
            except BlockingIOError:
                await self._writable(process.stdin, verdict)
                continue
            except (BrokenPipeError, ConnectionResetError):
                self._stopped_early(await asyncio.wait_for(asyncio.shield(verdict),
                                                           DECODE_TIMEOUT_S))
            while sent and views:
                taken = min(sent, len(views[0]))
                views[0] = views[0][taken:]
                sent -= taken
                if not views[0]:
                    views.pop(0)

    async def _writable(self, fd: int, verdict: asyncio.Future[str]) -> None:
        """Until the pipe takes bytes again, or the decoder spoke."""
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        loop.add_writer(fd, _wake, ready)
        try:
            await asyncio.wait_for(asyncio.wait([ready, verdict],
                                                return_when=asyncio.FIRST_COMPLETED),
                                   DECODE_TIMEOUT_S)
        except TimeoutError:
            raise IntegrityFailed(f"{self.name}: the decoder took nothing for "
                                  f"{DECODE_TIMEOUT_S}s") from None
        finally:
            loop.remove_writer(fd)
            if not ready.done():
                ready.cancel()

    def _judge(self, said: str) -> None:
        if said != "ok":
            self._broken(said.removeprefix("fail "))

    def _stopped_early(self, said: str) -> NoReturn:
        """The decoder spoke before the stream's end: it cannot have passed it."""
        self._broken(said.removeprefix("fail ") if said != "ok" else
                     "the decoder stopped before the end of the stream")

    def _broken(self, why: str) -> NoReturn:
        self.kill()
        raise IntegrityFailed(f"{self.name} failed a full decode: {why[:300]}")

    def _running(self) -> tuple[_Process, asyncio.Future[str]]:
        if self._process is None or self._verdict is None:
            raise IntegrityFailed(f"{self.name}: the decoder is not running")
        return self._process, self._verdict

    def kill(self) -> None:
        """Stop this stream's decoder (a cancelled job, a fetch that starts over)."""
        process, self._process = self._process, None
        if process is not None:
            process.kill()


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


def available() -> bool:
    """Whether streams can be decoded as they arrive here (libFLAC is installed)."""
    return libflac_name() is not None


if __name__ == "__main__":
    serve()
