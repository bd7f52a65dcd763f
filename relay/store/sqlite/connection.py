"""Connections, migrations and transaction control."""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

from relay.store.db import SQLITE, Dialect, Operation, drive
from relay.store.records import Durability
from relay.store.sqlite.migrations import migrations

T = TypeVar("T")

#: Bytes a checkpointed WAL file is truncated to.
WAL_LIMIT = 64 * 1024 * 1024


#: The database and SQLite's files beside it hold the callback history and the secrets: the owner's alone.
PRIVATE = 0o600


def keep_private(path: Path) -> None:
    """Create the database file owner-only whatever the umask (SQLite gives its -wal and -shm the database
    file's mode), and take back what an older release left readable to others."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE))
    for each in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            if each.stat().st_mode & 0o077:
                each.chmod(PRIVATE)


def connect(
    path: Path, durability: Durability = "normal", busy_timeout: float = 5.0, *, create: bool = True
) -> sqlite3.Connection:
    """Open a connection in autocommit mode; transactions are explicit (BEGIN IMMEDIATE).

    ``busy_timeout`` is how long to wait for a lock another process holds before giving up. Without
    ``create``, SQLite's ``mode=rw`` refuses to make a file (one removed since the caller looked, say).
    """
    target: str | Path = path if create else f"{path.resolve().as_uri()}?mode=rw"
    conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False, timeout=busy_timeout, uri=not create)
    conn.row_factory = sqlite3.Row
    if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
        # A new file, before its first table (the only time it can be set without a VACUUM): pages freed by
        # pruning go back to the filesystem a batch at a time (`retention.reclaim_pages`). On an existing
        # incremental file, setting it again would take the write lock.
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    conn.execute("PRAGMA journal_mode = WAL")
    # A large prune writes much WAL; a checkpoint truncates the file back to this instead of keeping its peak.
    conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT}")
    # NORMAL in WAL mode loses nothing on a process crash; FULL adds an fsync per commit for power loss.
    conn.execute(f"PRAGMA synchronous = {durability.upper()}")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def migrate(conn: sqlite3.Connection) -> None:
    migrations.apply(sqlite_utils.Database(conn))


#: Seconds between tries for a write lock another process holds. SQLite's own busy handler backs
#: off to 100 ms sleeps, so a process waiting on a busy peer keeps missing the moments the lock is free.
LOCK_RETRY = (0.0002, 0.001)


def begin(conn: sqlite3.Connection, timeout: float = 0.0) -> None:
    """BEGIN IMMEDIATE, retrying about every half millisecond for up to ``timeout`` seconds while another
    process (a second worker, the CLI) holds the write lock. Meant for connections with no busy timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            # The extended code (busy recovering a WAL, say) carries the primary one in its low byte.
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                raise
        time.sleep(random.uniform(*LOCK_RETRY))


def commit(conn: sqlite3.Connection) -> None:
    conn.execute("COMMIT")


def rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def savepoint(conn: sqlite3.Connection) -> None:
    conn.execute("SAVEPOINT item")


def release(conn: sqlite3.Connection) -> None:
    conn.execute("RELEASE item")


def rollback_to_savepoint(conn: sqlite3.Connection) -> None:
    conn.execute("ROLLBACK TO item")
    conn.execute("RELEASE item")


def checkpoint(conn: sqlite3.Connection) -> None:
    """Copy the WAL into the database file and truncate it."""
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


class SqliteDb:
    """`relay.store.db.Db` on a sqlite3 connection: every call completes at once (see `relay.store.db.drive`)."""

    dialect: Dialect = SQLITE

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: object) -> int:
        return self._conn.execute(sql, args).rowcount

    async def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        self._conn.executemany(sql, rows)

    async def fetch(self, sql: str, *args: object) -> list[sqlite3.Row]:
        return self._conn.execute(sql, args).fetchall()

    async def fetchrow(self, sql: str, *args: object) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._conn.execute(sql, args).fetchone()
        return row

    async def fetchval(self, sql: str, *args: object) -> Any:
        row = self._conn.execute(sql, args).fetchone()
        return None if row is None else row[0]


def run(conn: sqlite3.Connection, operation: Operation[T]) -> T:
    """``operation`` on ``conn``, to its end, on this thread."""
    return drive(operation(SqliteDb(conn)))
