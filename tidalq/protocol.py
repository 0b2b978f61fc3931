"""The control socket's wire vocabulary: JSON-RPC 2.0, one JSON object per line.

Framing: each message is one UTF-8 JSON object terminated by ``\\n``; a line longer than
:data:`MAX_LINE_BYTES` is refused (error -32600) and the connection closed, as is a line
that is not JSON (-32700). Requests carry ``id`` (a string or a number); notifications
from the daemon (``method: "event"``) do not. Clients may send ``daemon.hello`` to
exchange versions; no method requires it. ``socat - UNIX-CONNECT:PATH`` is enough to
drive the daemon by hand::

    {"jsonrpc": "2.0", "id": 1, "method": "queue.stats"}

No I/O here: both the CLI's client and the daemon import this module.
"""

from __future__ import annotations

import json
from enum import IntEnum
from typing import Any

from tidalq.errors import TidalqError
from tidalq.jsontext import loads_strict

PROTOCOL_VERSION = 1
MAX_LINE_BYTES = 1 << 20
MAX_IDS_PER_CALL = 1000
MAX_JOBS_PER_SUBMIT = 1000


class ErrorCode(IntEnum):
    """JSON-RPC's standard codes, then tidalq's own (positive, above them)."""

    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL_ERROR = -32603
    JOB_NOT_FOUND = 1001
    AMBIGUOUS_JOB_ID = 1002
    ILLEGAL_TRANSITION = 1003
    STORE_UNAVAILABLE = 1004
    FORBIDDEN = 1006
    DAEMON_STOPPING = 1007


class ProtocolError(TidalqError):
    """Raised when a message cannot be handled; carries the JSON-RPC error to answer with."""

    def __init__(self, code: ErrorCode, message: str, request_id: Any = None,
                 close: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.request_id = request_id
        self.close = close


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def request(request_id: int | str, method: str, params: dict[str, Any] | None = None) -> bytes:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params:
        msg["params"] = params
    return encode(msg)


def result(request_id: Any, value: Any) -> bytes:
    return encode({"jsonrpc": "2.0", "id": request_id, "result": value})


def error(request_id: Any, code: int, message: str, data: Any = None) -> bytes:
    err: dict[str, Any] = {"code": int(code), "message": message}
    if data is not None:
        err["data"] = data
    return encode({"jsonrpc": "2.0", "id": request_id, "error": err})


def notification(method: str, params: dict[str, Any]) -> bytes:
    return encode({"jsonrpc": "2.0", "method": method, "params": params})


def parse_request(line: bytes) -> tuple[Any, str, dict[str, Any]]:
    """(id, method, params) of one request line; ProtocolError otherwise."""
    if len(line) > MAX_LINE_BYTES:
        raise ProtocolError(ErrorCode.INVALID_REQUEST,
                            f"message longer than {MAX_LINE_BYTES} bytes", close=True)
    try:
        msg = loads_strict(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(ErrorCode.PARSE_ERROR, f"parse error: {exc}"[:200],
                            close=True) from None
    if not isinstance(msg, dict):
        raise ProtocolError(ErrorCode.INVALID_REQUEST, "a request must be a JSON object")
    request_id = msg.get("id")
    if not (request_id is None or isinstance(request_id, str | int | float)) \
            or isinstance(request_id, bool):
        raise ProtocolError(ErrorCode.INVALID_REQUEST, "id must be a string or a number")
    if msg.get("jsonrpc") != "2.0":
        raise ProtocolError(ErrorCode.INVALID_REQUEST, 'jsonrpc must be "2.0"', request_id)
    method = msg.get("method")
    if not isinstance(method, str):
        raise ProtocolError(ErrorCode.INVALID_REQUEST, "method must be a string", request_id)
    params = msg.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ProtocolError(ErrorCode.INVALID_PARAMS, "params must be an object", request_id)
    return request_id, method, params


def parse_response(line: bytes) -> dict[str, Any]:
    """A daemon's answer or notification (the client's side)."""
    msg = json.loads(line.decode("utf-8"))
    if not isinstance(msg, dict):
        raise ValueError("the daemon sent something that is not a JSON object")
    return msg
