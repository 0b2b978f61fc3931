"""The CLI's side of the control socket: a small synchronous JSON-RPC client.

Plain sockets, no asyncio and none of the daemon's dependencies, so ``tidalq status``
starts fast. Connection problems become :class:`~tidalq.errors.DaemonUnreachable`; error
answers become :class:`~tidalq.errors.RpcError`.
"""

from __future__ import annotations

import itertools
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tidalq.errors import DaemonUnreachable, RpcError
from tidalq.protocol import (
    MAX_LINE_BYTES,
    PROTOCOL_VERSION,
    ErrorCode,
    parse_response,
    request,
)


class DaemonClient:
    """One connection per call; ``events()`` keeps its connection open."""

    def __init__(self, socket_path: Path, timeout_s: float | None = 30.0,
                 own_socket_only: bool = False) -> None:
        """``own_socket_only``: the path is the default one, in a folder anyone could have
        made first; only a socket of this user (or root) is talked to."""
        self.socket_path = socket_path
        self.timeout_s = timeout_s
        self.own_socket_only = own_socket_only
        self._ids = itertools.count(1)

    def _check_owner(self) -> None:
        try:
            owner = os.stat(self.socket_path).st_uid
        except OSError:
            return  # connecting will say what is wrong
        if owner not in (os.getuid(), 0):
            raise DaemonUnreachable(
                f"refusing {self.socket_path}: it belongs to uid {owner}, not to you, so it "
                "may not be your daemon; remove its folder or set TIDALQ_SOCKET")

    def _connect(self, timeout_s: float | None) -> socket.socket:
        if self.own_socket_only:
            self._check_owner()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout_s)
        try:
            sock.connect(str(self.socket_path))
        except FileNotFoundError:
            sock.close()
            raise DaemonUnreachable(f"the daemon is not running (no socket at "
                                    f"{self.socket_path})") from None
        except ConnectionRefusedError:
            sock.close()
            raise DaemonUnreachable(f"the daemon is not running (nothing answers on "
                                    f"{self.socket_path})") from None
        except PermissionError:
            sock.close()
            raise DaemonUnreachable(f"permission denied on {self.socket_path}: run as the "
                                    "daemon's user or join its socket_group") from None
        except OSError as exc:
            sock.close()
            raise DaemonUnreachable(f"cannot reach the daemon at {self.socket_path}: "
                                    f"{exc}") from None
        return sock

    @staticmethod
    def _read(stream: Any) -> dict[str, Any]:
        line = stream.readline(MAX_LINE_BYTES + 1)
        if not line:
            raise DaemonUnreachable("the daemon closed the connection without answering")
        return parse_response(line)

    @staticmethod
    def _unwrap(answer: dict[str, Any]) -> dict[str, Any]:
        if "error" in answer:
            err = answer["error"]
            if err.get("code") == ErrorCode.DAEMON_STOPPING:
                raise DaemonUnreachable("the daemon stopped before it could answer")
            raise RpcError(int(err.get("code", 0)), str(err.get("message")), err.get("data"))
        value = answer.get("result")
        return value if isinstance(value, dict) else {"value": value}

    def call(self, method: str, params: dict[str, Any] | None = None,
             timeout_s: float | None = -1.0) -> dict[str, Any]:
        """Call one method; ``timeout_s=None`` waits as long as it takes."""
        timeout = self.timeout_s if timeout_s == -1.0 else timeout_s
        sock = self._connect(timeout)
        try:
            sock.sendall(request(next(self._ids), method, params))
            with sock.makefile("rb") as stream:
                return self._unwrap(self._read(stream))
        except TimeoutError:
            raise DaemonUnreachable(f"the daemon did not answer {method} in time") from None
        except (ConnectionError, ValueError) as exc:
            raise DaemonUnreachable(f"the connection to the daemon broke: {exc}") from None
        finally:
            sock.close()

    def hello(self) -> dict[str, Any]:
        return self.call("daemon.hello", {"protocol": PROTOCOL_VERSION, "client": "tidalq-cli"})

    def events(self, after: str | None = None) -> Iterator[dict[str, Any]]:
        """Yield job events as they happen (until the connection ends)."""
        sock = self._connect(None)
        try:
            sock.sendall(request(next(self._ids), "events.subscribe",
                                 {"after": after} if after else None))
            with sock.makefile("rb") as stream:
                self._unwrap(self._read(stream))
                while True:
                    msg = self._read(stream)
                    if msg.get("method") == "event":
                        yield msg.get("params") or {}
                    elif msg.get("method") == "daemon.stopping":
                        raise DaemonUnreachable("the daemon is stopping")
        except (ConnectionError, ValueError) as exc:
            raise DaemonUnreachable(f"the connection to the daemon broke: {exc}") from None
        finally:
            sock.close()
