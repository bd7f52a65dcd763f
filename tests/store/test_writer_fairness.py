"""The writer's fairness: the delivery worker's urgent writes never wait for a group of ordinary ones."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from relay.store.sqlite.writer import MAX_BATCH, Writer

pytestmark = pytest.mark.anyio


def connect(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(db, isolation_level=None, check_same_thread=False)


async def test_an_urgent_write_commits_before_the_rest_of_a_group_already_under_way(
    tmp_path: Path, sqlite_only: None
) -> None:
    # SQLite only: the single writer thread and its group commits are SQLite's (PostgreSQL writes in parallel).
    writer = Writer(lambda: connect(tmp_path / "w.db"))
    ran: list[str] = []
    urgent_queued = threading.Event()
    commits: list[int] = []

    def ordinary(name: str, blocks: bool = False) -> Callable[[sqlite3.Connection], str]:
        def write(conn: sqlite3.Connection) -> str:
            if blocks:  # the group is under way when the urgent write arrives
                assert urgent_queued.wait(10)
            ran.append(name)
            return name

        return write

    def urgent(conn: sqlite3.Connection) -> str:
        ran.append("urgent")
        return "urgent"

    writer._observe = lambda seconds, error: commits.append(len(ran))
    # Queued before the thread starts, so all three are one group.
    group = [asyncio.ensure_future(writer.run(ordinary(n, n == "first"))) for n in ("first", "second", "third")]
    await asyncio.sleep(0)
    writer.start()
    try:
        quick = asyncio.ensure_future(writer.run(urgent, urgent=True))
        await asyncio.sleep(0)
        urgent_queued.set()
        assert await quick == "urgent"
        assert [await write for write in group] == ["first", "second", "third"]
    finally:
        writer.stop()
    assert ran == ["first", "urgent", "second", "third"]
    assert commits == [1, 2, 4]  # the group committed early, the urgent write alone, then the rest together


async def test_stopping_the_writer_finishes_urgent_and_ordinary_writes_already_queued(
    tmp_path: Path, sqlite_only: None
) -> None:
    # SQLite only: the single writer thread is SQLite's.
    writer = Writer(lambda: connect(tmp_path / "w.db"))

    def value(n: int) -> Callable[[sqlite3.Connection], int]:
        return lambda conn: n

    writes = [asyncio.ensure_future(writer.run(value(n), urgent=n % 2 == 0)) for n in range(6)]
    await asyncio.sleep(0)
    writer.start()
    await asyncio.to_thread(writer.stop)
    assert [await write for write in writes] == list(range(6))


async def test_more_urgent_writes_than_one_transaction_takes_all_commit_with_nothing_else_arriving(
    tmp_path: Path, sqlite_only: None
) -> None:
    # SQLite only. Their wake-ups are taken at once, a transaction takes at most MAX_BATCH: the rest must not wait
    # for a write that may never come.
    writer = Writer(lambda: connect(tmp_path / "w.db"))
    release = threading.Event()

    def held(conn: sqlite3.Connection) -> int:
        assert release.wait(10)
        return -1

    def value(n: int) -> Callable[[sqlite3.Connection], int]:
        return lambda conn: n

    writer.start()
    try:
        busy = asyncio.ensure_future(writer.run(held))
        await asyncio.sleep(0)
        count = MAX_BATCH + 10
        writes = [asyncio.ensure_future(writer.run(value(n), urgent=True)) for n in range(count)]
        await asyncio.sleep(0)
        release.set()
        done = await asyncio.wait_for(asyncio.gather(*writes), timeout=10)
        assert done == list(range(count))
        assert await busy == -1
    finally:
        writer.stop()
