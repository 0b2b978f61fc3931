"""The control socket: a Unix stream socket speaking the JSON-RPC of :mod:`tidalq.protocol`.

- Created ``0600`` (``0660`` with ``socket_group``) inside a directory only the owner (and
  that group) can enter; a stale socket file is replaced, a live daemon behind it makes us
  refuse to start. Under systemd socket activation the listening socket is inherited.
- Each connection's peer is checked with ``SO_PEERCRED``: the daemon's uid, root, or a
  member of ``socket_group``.
- A line over 1 MiB or one that is not JSON is answered with an error and the connection
  closed; bad params are answered and the connection kept. Nothing a client sends can
  stop the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import pwd
import socket
import stat
import struct
from pathlib import Path
from typing import Any

from tidalq.errors import ConfigError, InvalidInput, StoreUnavailable, TidalqError
from tidalq.protocol import MAX_LINE_BYTES, ErrorCode, ProtocolError, notification, parse_request
from tidalq.protocol import error as rpc_error
from tidalq.protocol import result as rpc_result
from tidalq.rpc import METHOD_TABLE, Context, dispatch, error_code

log = logging.getLogger(__name__)

SD_LISTEN_FDS_START = 3
HANG_UP_S = 2.0
HANG_UP_MAX_BYTES = 64 << 20


class SocketInUse(TidalqError):
    """Raised when another daemon already answers on the control socket."""


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


def peer_allowed(uid: int, gid: int, group: str | None) -> bool:
    if uid in (os.getuid(), 0):
        return True
    if group is None:
        return False
    try:
        group_gid = grp.getgrnam(group).gr_gid
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        return False
    return gid == group_gid or group_gid in os.getgrouplist(name, gid)


def inherited_socket() -> socket.socket | None:
    """The listening socket systemd passed (socket activation), if any."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    if int(os.environ.get("LISTEN_FDS", "0") or 0) < 1:
        return None
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(var, None)
    return socket.socket(fileno=SD_LISTEN_FDS_START)


def bind_socket(path: Path, group: str | None) -> socket.socket:
    """Create the listening socket, replacing a stale file, refusing a live daemon and a
    folder someone else could have prepared (another user could serve a fake daemon)."""
    try:
        gid = grp.getgrnam(group).gr_gid if group else -1
    except KeyError:
        raise ConfigError(f"socket_group {group!r} is not a group on this system",
                          "socket_group") from None
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750 if group else 0o700)
    _check_socket_dir(path.parent)
    _restrict_dir(path.parent, gid)
    if path.exists() or path.is_symlink():
        st = path.lstat()
        if not stat.S_ISSOCK(st.st_mode):
            raise SocketInUse(f"{path} exists and is not a socket; remove it or set socket")
        if _answers(path):
            raise SocketInUse(f"another tidalq daemon is already running on {path}")
        if st.st_uid != os.getuid():
            raise SocketInUse(f"{path} belongs to uid {st.st_uid}: remove it or set socket")
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o117 if group else 0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    if group:
        os.chown(path, -1, gid)
    sock.listen(64)
    return sock


def _check_socket_dir(directory: Path) -> None:
    """Ours, or root's and not open to others (a sticky /tmp-like folder is fine)."""
    st = directory.lstat()
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise SocketInUse(f"socket folder {directory} is not a plain folder; remove it or "
                          "set socket")
    if st.st_uid == os.getuid():
        return
    open_to_others = st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX
    if st.st_uid != 0 or open_to_others:
        raise SocketInUse(f"socket folder {directory} belongs to uid {st.st_uid}, not to us: "
                          "another user could answer our clients there; remove it or set "
                          "socket")


def _restrict_dir(directory: Path, gid: int) -> None:
    st = directory.stat()
    if st.st_uid == os.getuid():
        os.chmod(directory, 0o750 if gid >= 0 else 0o700)
        if gid >= 0:
            os.chown(directory, -1, gid)


def _answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


async def _hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send what is queued, close our side, and drop what the client still sends (for a
    bounded time), so the client reads our error instead of a connection reset."""
    await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()
    with contextlib.suppress(TimeoutError, ConnectionError):
        await asyncio.wait_for(_drop_input(reader, HANG_UP_MAX_BYTES), HANG_UP_S)


async def _drop_input(reader: asyncio.StreamReader, limit: int) -> None:
    dropped = 0
    while dropped < limit and (chunk := await reader.read(65536)):
        dropped += len(chunk)


async def _until_eof(reader: asyncio.StreamReader) -> None:
    """Read and drop whatever a subscriber sends, until it hangs up."""
    while await reader.read(65536):
        pass


class ControlServer:
    """Serves JSON-RPC connections until closed."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.closing = False
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self, sock: socket.socket) -> None:
        self._server = await asyncio.start_unix_server(self._connection, sock=sock,
                                                       limit=MAX_LINE_BYTES + 1)

    async def close(self) -> None:
        """Stop serving. A client still waiting (``wait``, ``watch``) is told the daemon is
        stopping before its connection ends."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            if self._admit(writer):
                await self._serve(reader, writer)
            else:
                await _hang_up(reader, writer)  # the refused peer can still read why
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            if not self.closing:
                raise
        except Exception:  # the daemon never dies of what a client sends
            log.exception("control connection failed")
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _admit(self, writer: asyncio.StreamWriter) -> bool:
        sock = writer.get_extra_info("socket")
        pid, uid, gid = peer_credentials(sock)
        if peer_allowed(uid, gid, self.ctx.settings.socket_group):
            return True
        log.warning("refused control connection from pid %s uid %s", pid, uid)
        writer.write(rpc_error(None, ErrorCode.FORBIDDEN,
                               f"uid {uid} may not use this daemon"))
        return False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.LimitOverrunError:
                writer.write(rpc_error(None, ErrorCode.INVALID_REQUEST,
                                       f"message longer than {MAX_LINE_BYTES} bytes"))
                await _hang_up(reader, writer)
                return
            except asyncio.IncompleteReadError as exc:
                if exc.partial.strip():
                    writer.write(rpc_error(None, ErrorCode.PARSE_ERROR,
                                           "parse error: message without a final newline"))
                    await writer.drain()
                return
            if not line.strip():
                continue
            if not await self._handle(line, reader, writer):
                return

    async def _handle(self, line: bytes, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> bool:
        """Answer one line; False closes the connection."""
        try:
            request_id, method, params = parse_request(line)
        except ProtocolError as exc:
            writer.write(rpc_error(exc.request_id, exc.code, str(exc)))
            if exc.close:
                await _hang_up(reader, writer)
                return False
            await writer.drain()
            return True
        if method == "events.subscribe":
            try:
                await self._subscribe(request_id, params, reader, writer)
            except asyncio.CancelledError:
                await self._say_stopping(writer, notification("daemon.stopping", {}))
                raise
            return False
        try:
            answer = await self._call(request_id, method, params)
        except asyncio.CancelledError:
            await self._say_stopping(writer, rpc_error(request_id, ErrorCode.DAEMON_STOPPING,
                                                       "the daemon is stopping"))
            raise
        writer.write(answer)
        await writer.drain()
        return True

    async def _say_stopping(self, writer: asyncio.StreamWriter, message: bytes) -> None:
        if not self.closing or writer.is_closing():
            return
        writer.write(message)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.drain(), 1.0)

    async def _call(self, request_id: Any, method: str, params: dict[str, Any]) -> bytes:
        if method not in METHOD_TABLE:
            return rpc_error(request_id, ErrorCode.METHOD_NOT_FOUND, f"unknown method {method!r}")
        try:
            value = await dispatch(self.ctx, method, params)
        except InvalidInput as exc:
            return rpc_error(request_id, ErrorCode.INVALID_PARAMS, str(exc),
                             {"field": exc.field} if exc.field else None)
        except TidalqError as exc:
            return rpc_error(request_id, error_code(exc), str(exc))
        except (TypeError, ValueError, KeyError, OverflowError, RecursionError) as exc:
            return rpc_error(request_id, ErrorCode.INVALID_PARAMS, f"invalid params: {exc}"[:300])
        try:
            return rpc_result(request_id, value)
        except (UnicodeEncodeError, ValueError, TypeError) as exc:
            log.error("answer to %s could not be encoded: %s", method, exc)
            return rpc_error(request_id, ErrorCode.INTERNAL_ERROR,
                             f"the answer to {method} could not be encoded (text that is not "
                             "valid Unicode); see the daemon's log")

    async def _subscribe(self, request_id: Any, params: dict[str, Any],
                         reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Stream events as ``event`` notifications until the client hangs up."""
        store = self.ctx.store
        after = params.get("after")
        if after is not None and not isinstance(after, str | int):
            writer.write(rpc_error(request_id, ErrorCode.INVALID_PARAMS, "after must be an id"))
            return
        try:
            cursor = str(after) if after is not None else await store.last_event_id()
        except StoreUnavailable as exc:
            writer.write(rpc_error(request_id, ErrorCode.STORE_UNAVAILABLE, str(exc)))
            return
        writer.write(rpc_result(request_id, {"subscribed": True, "after": cursor}))
        await writer.drain()
        hangup = asyncio.create_task(_until_eof(reader))
        try:
            while not hangup.done():
                try:
                    events = await store.wait_events(cursor, 1.0)
                except StoreUnavailable:
                    await asyncio.sleep(1)
                    continue
                for event in events:
                    writer.write(notification("event", event.to_json()))
                    cursor = event.id
                await writer.drain()
        finally:
            hangup.cancel()
