"""HTTP helpers shared by every catalogue and the CDN fetcher (no catalogue in here)."""

from __future__ import annotations

import aiohttp


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
