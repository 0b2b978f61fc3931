"""The SQLite store's schema, its migrations and how a connection is opened."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from tidalq.errors import (
    StoreUnavailable,
)

SCHEMA_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    status TEXT NOT NULL,
    prio INTEGER NOT NULL,
    due_at INTEGER NOT NULL,
    lease_until INTEGER,
    dedupe_key TEXT NOT NULL,
    finished_at INTEGER,
    doc TEXT NOT NULL
);
CREATE INDEX jobs_claim ON jobs (status, prio, seq);
CREATE INDEX jobs_due ON jobs (status, due_at);
CREATE INDEX jobs_lease ON jobs (status, lease_until);
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_seq ON jobs (seq);
CREATE UNIQUE INDEX jobs_live ON jobs (dedupe_key)
    WHERE status IN ('queued', 'processing', 'paused');
CREATE TABLE counters (status TEXT PRIMARY KEY, n INTEGER NOT NULL);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL, kind TEXT NOT NULL, status TEXT NOT NULL,
    progress REAL NOT NULL, at INTEGER NOT NULL
);
INSERT INTO meta VALUES ('schema_version', '1'), ('queue_paused', '0');
"""

MIGRATIONS: list[str] = [
    SCHEMA_V1,
    "ALTER TABLE jobs ADD COLUMN worker TEXT;",
    "CREATE TABLE follows (id TEXT PRIMARY KEY, key TEXT NOT NULL UNIQUE, doc TEXT NOT NULL,"
    " due_at INTEGER NOT NULL, token TEXT NOT NULL DEFAULT '');",
    # listing one status newest first without walking the other statuses' rows (the
    # dashboard asks for failed and cancelled jobs that may not exist among 100,000)
    "CREATE INDEX jobs_status_seq ON jobs (status, seq);",
]
SCHEMA_VERSION = len(MIGRATIONS)
BUSY_TIMEOUT_MS = 30_000
# The next job to claim: walk the claim order and stop at the first job that is due. Left
# to itself the planner takes the (status, due_at) index and sorts every queued job.
CLAIM_NEXT = ("SELECT doc FROM jobs INDEXED BY jobs_claim WHERE status='queued'"
              " AND due_at <= ? ORDER BY prio, seq LIMIT 1")
MAX_GROUP = 64  # writes committed together at most: a group holds the file's write lock
EVENT_TRIM_EVERY = 500


def as_store_error(exc: Exception) -> Exception:
    if isinstance(exc, sqlite3.Error):
        return StoreUnavailable(f"SQLite store failed: {exc}")
    return exc


def _current_version(conn: sqlite3.Connection) -> int:
    has_meta = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
    if not has_meta:
        return 0
    return int(conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the file to ``target``; returns the version it had. Safe when several
    processes open a new file at once: each step re-reads the version under the lock."""
    found, target = _current_version(conn), len(MIGRATIONS)
    if found > target:
        raise StoreUnavailable(f"store schema {found} is newer than this tidalq "
                               f"({target}); upgrade tidalq")
    for number in range(found, target):
        conn.execute("BEGIN IMMEDIATE")
        try:
            if _current_version(conn) == number:
                for statement in MIGRATIONS[number].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("UPDATE meta SET value=? WHERE key='schema_version'",
                             (str(number + 1),))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    return found


def connect(path: str) -> sqlite3.Connection:
    Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                           timeout=BUSY_TIMEOUT_MS / 1000)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    migrate(conn)
    try:
        os.chmod(path, 0o600)
    except OSError:
        pass
    return conn


def connect_reader(path: str) -> sqlite3.Connection:
    """The reading connection: autocommit, read only, after :func:`connect` set WAL up."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                           timeout=BUSY_TIMEOUT_MS / 1000)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA query_only=1")
    return conn
