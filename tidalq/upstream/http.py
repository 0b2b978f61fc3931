"""HTTP helpers shared by every catalogue and the CDN fetcher (no catalogue in here)."""

from __future__ import annotations

import email.utils
import time
from typing import Any

import aiohttp

from tidalq.errors import UpstreamUnavailable
from tidalq.jsontext import loads_repaired

RETRY_AFTER_LIMIT_S = 7 * 86400.0  # a server asking for more is wrong; the worker caps lower


async def read_capped(resp: aiohttp.ClientResponse, cap: int) -> bytes:
    """The whole body, or ``cap + 1`` bytes when it is larger (callers refuse those)."""
    if resp.content_length is not None and resp.content_length > cap:
        return b"\0" * (cap + 1)
    body = bytearray()
    async for chunk in resp.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > cap:
            break
    return bytes(body)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(float(value), RETRY_AFTER_LIMIT_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):
        return None
    wait_s = when.timestamp() - (now if now is not None else time.time())
    return min(max(0.0, wait_s), RETRY_AFTER_LIMIT_S)


def json_of(raw: bytes, cap: int, where: str) -> Any:
    """The JSON of an answer read by :func:`read_capped`: None when it is empty or not JSON
    (callers say what that means), UpstreamUnavailable when it is over ``cap``."""
    if len(raw) > cap:
        raise UpstreamUnavailable(f"{where} answered more than {cap} bytes")
    try:
        return loads_repaired(raw) if raw else None
    except (ValueError, RecursionError):
        return None
