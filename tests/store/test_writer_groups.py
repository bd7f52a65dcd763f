"""The writer's group commits: writes share a transaction, and a failing one undoes only its own changes."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from relay.store.sqlite.writer import Writer

pytestmark = pytest.mark.anyio


def connect(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    conn.execute("CREATE TABLE IF NOT EXISTS t (name TEXT PRIMARY KEY)")
    return conn


def insert(name: str, *, then_fail: bool = False) -> Callable[[sqlite3.Connection], str]:
    def write(conn: sqlite3.Connection) -> str:
        conn.execute("INSERT INTO t(name) VALUES (?)", (name,))
        if then_fail:
            raise ValueError(f"{name} failed after writing")
        return name

    return write


def names(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [row[0] for row in conn.execute("SELECT name FROM t ORDER BY name")]


async def test_a_write_that_fails_after_writing_undoes_only_its_own_changes_and_the_group_commits(
    tmp_path: Path, sqlite_only: None
) -> None:
    # SQLite only: the single writer thread and its group commits are SQLite's.
    db = tmp_path / "w.db"
    writer = Writer(lambda: connect(db))
    commits: list[str | None] = []
    writer._observe = lambda seconds, error: commits.append(error)
    # Queued before the thread starts, so all four are one group.
    writes = [insert("a"), insert("b", then_fail=True), insert("c"), insert("a")]  # the last breaks the key
    group = [asyncio.ensure_future(writer.run(write)) for write in writes]
    await asyncio.sleep(0)
    writer.start()
    try:
        outcomes = await asyncio.gather(*group, return_exceptions=True)
    finally:
        writer.stop()
    assert outcomes[0] == "a"
    assert outcomes[2] == "c"
    assert isinstance(outcomes[1], ValueError)
    assert isinstance(outcomes[3], sqlite3.IntegrityError)
    assert names(db) == ["a", "c"]
    assert commits == [None]  # one transaction committed, whatever failed inside it


async def test_a_write_cancelled_before_it_began_never_runs_even_when_its_group_runs_again(
    tmp_path: Path, sqlite_only: None
) -> None:
    db = tmp_path / "w.db"
    writer = Writer(lambda: connect(db))
    ran: list[str] = []

    def counted(name: str, *, then_fail: bool = False) -> Callable[[sqlite3.Connection], str]:
        def write(conn: sqlite3.Connection) -> str:
            ran.append(name)
            return insert(name, then_fail=then_fail)(conn)

        return write

    first = asyncio.ensure_future(writer.run(counted("a")))
    gone = asyncio.ensure_future(writer.run(counted("b")))
    failing = asyncio.ensure_future(writer.run(counted("c", then_fail=True)))
    await asyncio.sleep(0)
    gone.cancel()
    writer.start()
    try:
        assert await first == "a"
        with pytest.raises(ValueError, match="c failed"):
            await failing
    finally:
        writer.stop()
    assert names(db) == ["a"]
    assert "b" not in ran
    assert ran.count("a") == 2  # once optimistically, once again in its own savepoint after "c" failed
