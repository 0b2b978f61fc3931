"""How tests/data/queue-v1.db was made (kept for the record; the file itself is frozen).

Runs the SQLite store at schema version 1: one queued track job, one cancelled album job.
"""

import asyncio
import sys

from tidalq.models import JobSpec
from tidalq.store import sqlite
from tidalq.store.sqlite import schema
from tidalq.terms import Quality


async def main(path: str) -> None:
    schema.SCHEMA_VERSION = 1
    schema.MIGRATIONS = schema.MIGRATIONS[:1]
    store = await sqlite.SqliteStore.open(path)
    await store.submit(JobSpec("track", 1001, Quality.LOSSLESS, track_title="Old"))
    album, _ = await store.submit(JobSpec("album", 2002, Quality.HI_RES_LOSSLESS))
    await store.cancel(album.id)
    await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
