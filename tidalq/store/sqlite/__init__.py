"""The embedded default store: one SQLite file, WAL, ``synchronous=FULL``.

Every state change loads the job document inside a ``BEGIN IMMEDIATE`` transaction,
applies :mod:`tidalq.store.rules`, writes the document with its index columns, bumps the
per-status counters and appends an event; so several processes may share a file safely.
Changes asked for at the same time are committed together (group commit), each in its
own savepoint, so concurrent workers share one fsync. All SQLite calls run on one
dedicated thread, never on the event loop.

Schema history (``meta.schema_version``; each migration runs once, in order):

1. jobs, counters, events, meta — the first released layout (frozen in tests/data/).
2. adds ``jobs.worker`` (who holds the lease, for diagnostics).

The store by concern: :mod:`.schema` (tables, migrations, opening), :mod:`.base` (the
store's thread, group commit, rows, counters and events), :mod:`.jobs`, :mod:`.follows`
and :mod:`.events`; :class:`SqliteStore` is all of them.
"""

from tidalq.store.sqlite.jobs import SqliteStore
from tidalq.store.sqlite.schema import CLAIM_NEXT, MIGRATIONS, SCHEMA_VERSION, migrate

__all__ = ["CLAIM_NEXT", "MIGRATIONS", "SCHEMA_VERSION", "SqliteStore", "migrate"]
