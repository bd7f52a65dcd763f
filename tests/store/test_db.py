"""The shared operations' seam (relay.store.db): one SQL text for both backends, run to its end on SQLite."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3

import pytest

from relay.store.db import POSTGRES, SQLITE, Db, drive
from relay.store.postgres.connection import numbered
from relay.store.sqlite.connection import SqliteDb, run


def test_placeholders_are_numbered_in_order_for_postgresql() -> None:
    assert numbered("SELECT 1 WHERE a = ? AND b IN (?, ?)") == "SELECT 1 WHERE a = $1 AND b IN ($2, $3)"
    assert numbered("SELECT 1") == "SELECT 1"


def test_a_list_of_values_is_one_array_on_postgresql_and_one_placeholder_each_on_sqlite() -> None:
    assert POSTGRES.among("id", [1, 2, 3]) == ("id = ANY(CAST(? AS bigint[]))", ([1, 2, 3],))
    assert SQLITE.among("id", [1, 2, 3]) == ("id IN (?,?,?)", (1, 2, 3))


def test_an_operation_runs_to_its_end_on_a_sqlite_connection_on_the_calling_thread() -> None:
    async def operation(db: Db) -> tuple[int, object]:
        await db.execute("CREATE TABLE t(x)")
        added = await db.execute("INSERT INTO t(x) VALUES (?), (?)", 1, 2)
        return added, await db.fetchval("SELECT sum(x) FROM t WHERE x IN (?, ?)", 1, 2)

    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        assert run(conn, operation) == (2, 3)


def test_an_operation_that_waits_for_something_is_refused_on_sqlite() -> None:
    async def waits(db: Db) -> None:
        await asyncio.sleep(0)

    with contextlib.closing(sqlite3.connect(":memory:")) as conn, pytest.raises(RuntimeError, match="waited"):
        drive(waits(SqliteDb(conn)))
