"""FLAC decoders that outlive a track: programs of their own
(:mod:`tidalq.media.decoder_program`: libFLAC, as ``flac -t``), each decoding one stream
after another, so a track costs the daemon a pipe's worth of writes instead of a program's
start. A decoder runs apart from the daemon, so a stream crafted to crash it crashes that
program only; the track fails and the next one gets a new decoder.

:class:`StreamDecode` is the daemon's side: a decoder taken from :class:`Decoders` (idle
ones are kept, and closed after a minute unused) for one stream, returned after a clean
verdict and killed otherwise (a cancelled job, a fetch that starts over, a broken stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import subprocess
import sys
import weakref
from collections.abc import Callable
from typing import NoReturn

from tidalq.errors import IntegrityFailed
from tidalq.media.decoder_program import libflac_name

DECODE_TIMEOUT_S = 600
IDLE_CLOSE_S = 60.0  # an idle decoder is closed after this long (its memory is given back)
KEPT_IDLE = 8
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Linux; Python 3.10+ names it
PIPE_BYTES = 1 << 20  # what an unprivileged process may ask (/proc/sys/fs/pipe-max-size)
END_OF_STREAM = b"\0\0\0\0"


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
    proc = subprocess.Popen([sys.executable, "-m", "tidalq.media.decoder_program"],
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
