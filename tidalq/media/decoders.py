"""Decoder programs that outlive a track (:mod:`tidalq.media.decoder_program`): each takes
one CDN file after another, downloads it, writes it with tidalq's tags ahead of the frames
and decodes it with libFLAC (as ``flac -t``) as it arrives. So a track's bytes never pass
through the daemon (the event loop stays free for the API calls, the store, the other
tracks), and a track costs a request and a few lines of reply instead of a program's start.
A decoder runs apart from the daemon, so a stream crafted to crash it crashes that program
only; the track fails and the next one gets a new decoder.

:class:`Decoders` keeps idle ones for the next file (closed after a minute unused);
:func:`exchange` sends one request and reads the replies, giving the decoder back after a
clean verdict and killing it otherwise (a cancelled job, a broken stream, a failed fetch).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import weakref
from collections.abc import Callable, Mapping

from tidalq import errors
from tidalq.media.decoder_program import libflac_name

REPLY_TIMEOUT_S = 600  # a decoder silent this long is given up on (its reads time out first)
IDLE_CLOSE_S = 60.0  # an idle decoder is closed after this long (its memory is given back)
KEPT_IDLE = 8
ENDED = "fail ended"  # how a decoder that ended is told, before how it ended


class _Process:
    """A running decoder: requests written to its stdin, its reply lines read on the loop."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        assert proc.stdin is not None and proc.stdout is not None
        self.stdin = proc.stdin.fileno()
        self.stdout = proc.stdout.fileno()
        os.set_blocking(self.stdin, False)
        os.set_blocking(self.stdout, False)
        self._said = b""
        self._lines: asyncio.Queue[str] = asyncio.Queue()
        self._listening = False
        self.ended = False  # its output ended (it did, or will soon)
        self.idle_timer: asyncio.TimerHandle | None = None

    async def send(self, data: bytes) -> None:
        """Write ``data`` to the decoder, waiting while its pipe is full."""
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.stdin, view):]
            except BlockingIOError:
                await self._writable()
            except (BrokenPipeError, ConnectionResetError):
                return  # it ended: its reply says how

    async def _writable(self) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        loop.add_writer(self.stdin, _wake, ready)
        try:
            await ready
        finally:
            loop.remove_writer(self.stdin)

    async def next_line(self) -> str:
        """Its next reply line (or why none will come)."""
        if not self._listening:
            asyncio.get_running_loop().add_reader(self.stdout, self._readable)
            self._listening = True
        async with asyncio.timeout(REPLY_TIMEOUT_S):
            return await self._lines.get()

    def _readable(self) -> None:
        try:
            more = os.read(self.stdout, 65536)
        except BlockingIOError:
            return
        except OSError:
            more = b""
        if more:
            self._said += more
            *lines, self._said = self._said.split(b"\n")
            for line in lines:
                self._lines.put_nowait(line.decode(errors="replace"))
        else:  # it ended: how is told once it is reaped (off the loop)
            self.ended = True
            loop = asyncio.get_running_loop()
            self._stop_listening()
            ending = loop.run_in_executor(None, _how_it_ended, self.proc)
            ending.add_done_callback(lambda how: self._lines.put_nowait(
                f"{ENDED} the decoder ended ({how.result()})"))

    def _stop_listening(self) -> None:
        if self._listening:
            self._listening = False
            with contextlib.suppress(RuntimeError, ValueError):  # the loop is gone at exit
                asyncio.get_running_loop().remove_reader(self.stdout)

    def kill(self) -> None:
        self._stop_listening()
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        self.proc.kill()  # a no-op once it ended
        _reap(self.proc)

    def close(self) -> None:
        """Stdin closed: the decoder ends on its own."""
        self._stop_listening()
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
    name = libflac_name()  # found once here: each program would run ldconfig for it
    proc = subprocess.Popen([sys.executable, "-m", "tidalq.media.decoder_program",
                             *([name] if name else [])],
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
            if not process.ended:  # an idle one that ended was heard ending
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


async def exchange(request: Mapping[str, object], tags: bytes = b"",
                   on_progress: Callable[[int, int | None], None] = lambda *_: None,
                   decoders: Decoders | None = None) -> str:
    """Send one request (``tags`` after its JSON line) to a decoder: a CDN file to fetch
    and check, or ``{"file": path}``, a finished file to decode. Reports ``p`` lines to
    ``on_progress`` and returns the verdict line. The decoder is given
    back after ``ok``; killed after anything else, or if the caller is cancelled."""
    pool = decoders or of_this_loop()
    process = await pool.take()
    try:
        await process.send(json.dumps({**request, "tags_bytes": len(tags)}).encode()
                           + b"\n" + tags)
        while (line := await process.next_line()).startswith("p "):
            done, total = line.split()[1:3]
            on_progress(int(done), int(total) if total != "-1" else None)
    except TimeoutError:  # its own reads time out long before: it is stuck
        line = f"{ENDED} the decoder said nothing for {REPLY_TIMEOUT_S}s"
    except BaseException:  # cancelled: the decoder's state is unknown
        process.kill()
        raise
    if line.split(" ", 1)[0] == "ok":
        pool.give_back(process)
    else:
        process.kill()
    return line


# the errors a decoder program may name in its verdict (anything else is a broken decoder)
_NAMED: dict[str, type[errors.DownloadError]] = {
    cls.__name__: cls for cls in (errors.CdnExpired, errors.UpstreamUnavailable,
                                  errors.ManifestError, errors.IntegrityFailed)}


def error_of(verdict: str, name: str) -> errors.DownloadError:
    """The daemon's error for a verdict other than ``ok`` about the file ``name``:
    ``CdnExpired`` (the caller asks for a fresh URL), ``UpstreamUnavailable``,
    ``ManifestError``, a filesystem error, or ``IntegrityFailed`` (a broken stream, or a
    decoder that ended or fell silent)."""
    kind, _, rest = verdict.removeprefix("fail ").partition(" ")
    number, _, message = rest.partition(" ")
    if kind == "OSError":
        return errors.from_os_error(OSError(int(number) if number.isdigit() else 0, message))
    if kind in _NAMED:
        return _NAMED[kind](message)
    return errors.IntegrityFailed(f"{name} failed a full decode: {rest[:300]}")


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


def available() -> bool:
    """Whether streams can be decoded as they arrive here (libFLAC is installed)."""
    return libflac_name() is not None
