"""Test helpers: real redis-server processes, free ports, waiting for conditions."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0,
               what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


async def await_until(predicate: Callable[[], Awaitable[bool]], timeout_s: float = 10.0,
                      what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


class RedisServer:
    """A real redis-server on a free loopback port in its own directory."""

    def __init__(self, workdir: Path, appendonly: bool = False) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed; run scripts/test")
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--save", "", "--appendonly", "yes" if self.appendonly else "no",
                "--appendfsync", "always", "--daemonize", "no", "--logfile",
                str(self.dir / "redis.log")]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self._answers, 10, f"redis-server on port {self.port}")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(repo_root()) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class DaemonProcess:
    """``tidalq daemon`` in a real process, configured through its environment."""

    def __init__(self, workdir: Path, env: dict[str, str], name: str = "daemon") -> None:
        self.workdir = workdir
        self.socket = workdir / f"{name}-run" / "tidalq.sock"
        self.env = subprocess_env(TIDALQ_SOCKET=str(self.socket), **env)
        self.env.pop("TIDALQ_CONFIG", None)
        self.env["XDG_CONFIG_HOME"] = str(workdir / "no-config")
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._own_session = False  # set by start(); a test may set proc itself
        self.wrapper: list[str] = []  # e.g. ["unshare", "--pid", "--fork"]: in its group

    def start(self, wait: bool = True, *flags: str, **popen: object) -> None:
        log = self.log_path.open("ab")
        # a session of its own: stop() kills a wrapper's children with it
        self.proc = subprocess.Popen([*self.wrapper, sys.executable, "-m", "tidalq", "daemon",
                                      *flags],
                                     cwd=repo_root(), env=self.env, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     **popen)  # type: ignore[call-overload]
        self._own_session = True
        log.close()
        if wait:
            wait_until(self.ready, 20, f"daemon socket {self.socket}")

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
        return self.cli("status", check=False).returncode == 0

    def cli(self, *args: str, check: bool = True, timeout: float = 60,
            ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "tidalq", *args], cwd=repo_root(),
                                env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"tidalq {' '.join(args)} -> {result.returncode}\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    def cli_process(self, *args: str, **popen: Any) -> subprocess.Popen[str]:
        """A running ``tidalq`` command that Ctrl-C (SIGINT) interrupts as at a terminal,
        even when the tests run where SIGINT is ignored (a background job of a script):
        an ignored signal stays ignored across exec, and Python then never raises
        KeyboardInterrupt."""
        return subprocess.Popen([sys.executable, "-m", "tidalq", *args], cwd=repo_root(),
                                env=self.env, text=True, preexec_fn=_default_sigint,
                                **popen)

    def connections(self) -> int:
        """Sockets bound to the daemon's socket path as the kernel lists them: the
        listener and each connection it accepted."""
        table = Path("/proc/net/unix").read_text().splitlines()
        return sum(1 for line in table if line.endswith(" " + str(self.socket)))

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """Kill the daemon, and whatever its wrapper started (``unshare --fork`` leaves its
        child running when killed itself) when start() gave it a session of its own."""
        if self.proc is None:
            return
        if self._own_session:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        elif self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def at_a_terminal(d: DaemonProcess, columns: int, *args: str) -> list[str]:
    """What ``tidalq ARGS`` shows on a terminal ``columns`` wide (a pseudo-terminal), its
    colours taken out."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "tidalq", *args], cwd=repo_root(),
                            env={**d.env, "COLUMNS": str(columns), "LINES": "50"},
                            stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    shown, deadline = b"", time.monotonic() + 30
    try:
        while time.monotonic() < deadline and select.select([leader], [], [], 1)[0]:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the program closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        assert proc.wait(10) == 0, shown
    finally:
        os.close(leader)
        proc.kill()
    return re.sub(r"\x1b\[[0-9;]*m", "", shown.decode()).replace("\r", "").splitlines()


class FakeProcess:
    """The fake upstream in its own process (``python -m tidalq.testing.fakeapi``)."""

    def __init__(self, cache: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tidalq.testing.fakeapi", "--port", str(self.port),
             "--cache", str(cache)], cwd=repo_root(), env=subprocess_env(),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self._up, 20, "fake upstream")

    def _up(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        import urllib.request

        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def faults(self, **values: Any) -> None:
        self._post("/_fake/faults", values)

    def requests(self) -> list[dict[str, Any]]:
        import urllib.request

        with urllib.request.urlopen(self.url + "/_fake/requests", timeout=10) as resp:
            return list(json.loads(resp.read()))

    def cdn_bodies(self) -> list[dict[str, Any]]:
        """What the CDN sent of each body: path, sent, size, ended (time.time())."""
        import urllib.request

        with urllib.request.urlopen(self.url + "/_fake/cdn", timeout=10) as resp:
            return list(json.loads(resp.read()))

    def env(self) -> dict[str, str]:
        return {"TIDALQ_API_URLS": self.url, "TIDALQ_COVER_URL": self.url}

    def tidal_env(self) -> dict[str, str]:
        """A daemon downloading through the fake TIDAL (after `tidalq login`) only."""
        return {"TIDALQ_UPSTREAM": "tidal", "TIDALQ_API_URLS": "",
                "TIDALQ_COVER_URL": self.url,
                "TIDALQ_TIDAL_API_URL": f"{self.url}/tidal/v1",
                "TIDALQ_TIDAL_AUTH_URL": f"{self.url}/tidal/auth/v1/oauth2",
                "TIDALQ_REQUEST_PACE": "1000"}

    def tidal_faults(self, **values: Any) -> None:
        self._post("/tidal/_fake/faults", values)

    def favourites(self, **kinds: list[Any]) -> None:
        self._post("/tidal/_fake/favourites", kinds)

    def approve(self, user_code: str, deny: bool = False) -> str:
        """What the person does on their phone: open the link and approve (or refuse)."""
        import urllib.request

        url = f"{self.url}/tidal/link/{user_code}" + ("?deny=1" if deny else "")
        with urllib.request.urlopen(url, timeout=10) as resp:
            return str(resp.read().decode())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def read_line(stream: Any, timeout_s: float, what: str = "a line") -> str:
    """One line from a child's pipe, or an AssertionError after ``timeout_s``."""
    import selectors

    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        if not sel.select(timeout_s):
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
    return str(stream.readline())


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone, or going while read
        return False


def slow_decoder(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A decoder named ``name`` on PATH that never ends; it writes its pid to the file
    returned."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    pid_file = tmp_path / f"{name}.pid"
    program = bin_dir / name
    program.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 60\n")
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return pid_file


async def started_pid(pid_file: Path) -> int:
    """The pid a :func:`slow_decoder` wrote once it started."""
    async def written() -> bool:
        return pid_file.exists() and bool(pid_file.read_text().strip())

    await await_until(written, 10, "the decoder to start")
    return int(pid_file.read_text())


async def decoder_ended(pid: int) -> None:
    async def gone() -> bool:
        return not running(pid)

    await await_until(gone, 5, "the decoder to be killed with its job")


class CuttableProxy:
    """A TCP proxy on loopback the test can cut: while cut, every open connection is reset
    and new ones are accepted and left hanging (a partition, not a refusal); ``heal`` lets
    traffic through again. Runs its own event loop in a thread."""

    def __init__(self, target_port: int) -> None:
        import threading

        self.target_port = target_port
        self.port = free_port()
        self.cut_off = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", self.port))
        self._ready.set()
        self._loop.run_forever()
        server.close()
        self._reset_all()
        self._loop.run_until_complete(server.wait_closed())
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while self.cut_off:  # held: no answer, no reset, until healed
                await asyncio.sleep(0.05)
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            self._writers.add(up_writer)
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer),
                                 return_exceptions=True)
        except OSError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while not self.cut_off:
                data = await src.read(65536)
                if not data or self.cut_off:
                    break
                dst.write(data)
                await dst.drain()
        finally:
            self._writers.discard(dst)
            dst.close()

    def _reset_all(self) -> None:
        for writer in list(self._writers):
            transport = writer.transport
            transport.abort()
        self._writers.clear()

    def cut(self) -> None:
        self.cut_off = True
        self._loop.call_soon_threadsafe(self._reset_all)

    def heal(self) -> None:
        self.cut_off = False

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
