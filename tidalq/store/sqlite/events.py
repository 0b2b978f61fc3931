"""The SQLite store's event stream: what `watch` and `wait` follow."""

from __future__ import annotations

import asyncio

from tidalq.models import (
    Event,
)
from tidalq.store.sqlite.base import SqliteBase


class SqliteEvents(SqliteBase):
    """Events after a cursor, waited for without polling the file in a loop."""

    # -- events ---------------------------------------------------------------------------
    async def last_event_id(self) -> str:
        row = await self._read(lambda: self._reader.execute(
            "SELECT COALESCE(MAX(id), 0) FROM events").fetchone())
        return str(row[0])

    async def events_after(self, after: str, limit: int = 500) -> list[Event]:
        start = int(after) if after.isascii() and after.isdigit() else 0
        rows = await self._read(lambda: self._reader.execute(
            "SELECT id, job_id, kind, status, progress, at FROM events WHERE id > ?"
            " ORDER BY id LIMIT ?", (start, limit)).fetchall())
        return [Event(str(r[0]), r[1], r[2], r[3], r[4], r[5]) for r in rows]

    async def wait_events(self, after: str, timeout_s: float, limit: int = 500) -> list[Event]:
        changed = self._changed
        found = await self.events_after(after, limit)
        if found:
            return found
        # Another process may write the same file: look again at least every half second.
        try:
            await asyncio.wait_for(changed.wait(), min(timeout_s, 0.5))
        except TimeoutError:
            pass
        return await self.events_after(after, limit)
