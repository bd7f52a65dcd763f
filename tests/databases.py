"""Looking straight into a test's database, whichever backend it is on (for what no API shows)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from relay.store.records import Target


def rows(db: Target, query: str) -> list[dict[str, Any]]:
    """The rows ``query`` (no parameters, portable SQL) returns, as dicts."""
    if isinstance(db, Path):
        with sqlite3.connect(db) as conn:
            conn.row_factory = sqlite3.Row
            return [dict(row) for row in conn.execute(query)]
    with psycopg.connect(db.url, row_factory=dict_row) as conn:
        return list(conn.execute(query.encode()))


def values(db: Target, query: str, *params: object) -> list[tuple[Any, ...]]:
    """The rows ``query`` returns, as tuples; ``?`` marks each of ``params`` on both backends."""
    if isinstance(db, Path):
        # Read-only: beside a running gateway it never takes the write lock (WAL: never blocks it).
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
            return list(conn.execute(query, params))
    with psycopg.connect(db.url) as conn:
        return list(conn.execute(query.replace("?", "%s").encode(), params or None))


def count(db: Target, table: str) -> int:
    return int(rows(db, f"SELECT count(*) AS n FROM {table}")[0]["n"])  # noqa: S608


@contextlib.contextmanager
def locked(db: Target) -> Iterator[None]:
    """Another client holding the database's write lock (SQLite) or every table the gateway writes
    (PostgreSQL) until the block ends."""
    if isinstance(db, Path):
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        return
    with psycopg.connect(db.url) as conn, conn.transaction(force_rollback=True):
        conn.execute("LOCK TABLE callbacks, heartbeat IN ACCESS EXCLUSIVE MODE")
        yield
