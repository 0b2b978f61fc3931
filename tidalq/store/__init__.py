"""Job stores: pick a backend from a URL (``sqlite:///PATH``, ``redis://…``, ``memory:``).

Backends are imported lazily so that ``import tidalq.store`` costs nothing. A backend
that fails to open raises :class:`~tidalq.errors.StoreUnavailable`; there is never a
silent fall-back to another store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tidalq.errors import InvalidInput

if TYPE_CHECKING:
    from tidalq.store.base import JobStore


async def open_store(url: str) -> JobStore:
    """Open (and migrate, for SQLite) the store the URL names."""
    if url == "memory:" or url.startswith("memory://"):
        from tidalq.store.memory import MemoryStore

        return MemoryStore()
    if url.startswith("sqlite:///"):
        from tidalq.store.sqlite import SqliteStore

        return await SqliteStore.open(url.removeprefix("sqlite://"))
    if url.startswith(("redis://", "rediss://", "unix://")):
        from tidalq.store.redis import RedisStore

        return await RedisStore.open(url)
    raise InvalidInput(f"unknown store URL {url!r}: use sqlite:///PATH, redis://HOST:PORT "
                       "or memory:", "store")
