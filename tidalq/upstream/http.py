"""HTTP helpers shared by every catalogue and the CDN fetcher (no catalogue in here)."""

from __future__ import annotations

import email.utils
import time

import aiohttp

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
