"""The SQLite store's follows: the items the daemon checks for new releases."""

from __future__ import annotations

import json
import sqlite3

from tidalq.errors import (
    FollowNotFound,
)
from tidalq.models import (
    Follow,
    now_ms,
)
from tidalq.store import rules
from tidalq.store.base import (
    lease_ms,
)
from tidalq.store.sqlite.base import SqliteBase


class SqliteFollows(SqliteBase):
    """Follows, leased to one checker at a time."""

    # -- follows --------------------------------------------------------------------------
    async def add_follow(self, follow: Follow) -> tuple[Follow, bool]:
        def fn(conn: sqlite3.Connection) -> tuple[Follow, bool]:
            row = conn.execute("SELECT doc FROM follows WHERE key=?", (follow.key,)).fetchone()
            if row is not None:
                return Follow.from_json(json.loads(row[0])), False
            conn.execute("INSERT INTO follows (id, key, doc, due_at) VALUES (?,?,?,?)",
                         (follow.id, follow.key, json.dumps(follow.to_json()),
                          follow.next_check_at))
            return follow, True

        return await self._write(fn)

    async def list_follows(self) -> list[Follow]:
        def fn() -> list[Follow]:
            rows = self._reader.execute("SELECT doc FROM follows ORDER BY key").fetchall()
            return [Follow.from_json(json.loads(r[0])) for r in rows]

        return await self._read(fn)

    async def remove_follow(self, follow_id: str) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            if conn.execute("DELETE FROM follows WHERE id=?", (follow_id,)).rowcount == 0:
                raise FollowNotFound(f"no follow {follow_id}")

        await self._write(fn)

    async def claim_follow(self, lease_s: float) -> tuple[Follow, str] | None:
        ms, token = lease_ms(lease_s), rules.new_token()

        def fn(conn: sqlite3.Connection) -> tuple[Follow, str] | None:
            now = now_ms()
            row = conn.execute("SELECT id, doc FROM follows WHERE due_at <= ? "
                               "ORDER BY due_at LIMIT 1", (now,)).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE follows SET due_at=?, token=? WHERE id=?",
                         (now + ms, token, row[0]))
            return Follow.from_json(json.loads(row[1])), token

        return await self._write(fn)

    async def finish_follow(self, follow: Follow, token: str) -> bool:
        def fn(conn: sqlite3.Connection) -> bool:
            done = conn.execute("UPDATE follows SET doc=?, due_at=?, token='' WHERE id=? "
                                "AND token=?", (json.dumps(follow.to_json()),
                                                follow.next_check_at, follow.id, token))
            return done.rowcount == 1

        return await self._write(fn)
