"""Group commit on PostgreSQL (relay.store.postgres.group): writes queued while a transaction commits share the
next one; a failing write fails alone; a database failure fails the batch at once; the urgent writes under way
commit before the next batch starts. The rules through a fake transaction, and the proof on a real PostgreSQL
through the store: concurrent callbacks all recorded in fewer transactions than callbacks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from relay.domain.callback import Received
from relay.ingest import Ingest, Reader
from relay.store import store_for
from relay.store.failures import StoreUnavailable
from relay.store.postgres.group import GroupCommit
from relay.store.records import PostgresUrl
from tests.conftest import callback_schema, fresh_database, job_body
from tests.databases import count
from tests.postgres import Cluster

pytestmark = pytest.mark.anyio


class FakeDatabase:
    """Runs a transaction's work on a list of rows, keeping them only if it all succeeded (a rollback)."""

    def __init__(self) -> None:
        self.rows: list[str] = []
        self.transactions: list[int] = []  # writes in each transaction that committed or failed
        self.down = False

    async def transaction(self, work: Callable[[Any], Awaitable[Any]]) -> Any:
        pending: list[str] = []
        await asyncio.sleep(0)  # a round trip: others queue meanwhile
        if self.down:
            raise StoreUnavailable("the database is unreachable", "unreachable")
        result = await work(pending)
        self.transactions.append(len(pending))
        self.rows += pending
        return result


def insert(row: str) -> Callable[[list[str]], Awaitable[str]]:
    async def work(conn: list[str]) -> str:
        if row == "bad":
            raise ValueError("this write is wrong")
        conn.append(row)
        return row

    return work


async def test_writes_queued_during_a_commit_share_the_next_transaction() -> None:
    database = FakeDatabase()
    group: GroupCommit[list[str]] = GroupCommit(database.transaction)
    first = asyncio.ensure_future(group.run(insert("first")))
    await asyncio.sleep(0)  # its transaction has begun
    rows = [f"r{n}" for n in range(19)]
    assert await asyncio.gather(*(group.run(insert(row)) for row in rows)) == rows
    assert await first == "first"
    assert sorted(database.rows) == sorted([*rows, "first"])
    assert database.transactions == [1, 19]  # the first alone, the 19 that queued meanwhile together


async def test_a_failing_write_fails_alone_and_the_others_of_its_batch_commit() -> None:
    database = FakeDatabase()
    group: GroupCommit[list[str]] = GroupCommit(database.transaction)
    results = await asyncio.gather(*(group.run(insert(row)) for row in ("a", "b", "bad", "c")), return_exceptions=True)
    assert results[:2] == ["a", "b"]
    assert isinstance(results[2], ValueError)
    assert results[3] == "c"
    assert sorted(database.rows) == ["a", "b", "c"]  # each once: the failed batch was rolled back


async def test_an_unreachable_database_fails_the_whole_batch_at_once() -> None:
    database = FakeDatabase()
    group: GroupCommit[list[str]] = GroupCommit(database.transaction)
    assert await group.run(insert("first")) == "first"
    database.down = True
    batch = await asyncio.gather(*(group.run(insert(f"r{n}")) for n in range(5)), return_exceptions=True)
    assert all(isinstance(result, StoreUnavailable) for result in batch)
    assert database.transactions == [1]  # no write was tried alone after the batch failed


async def test_a_batch_is_bounded() -> None:
    database = FakeDatabase()
    group: GroupCommit[list[str]] = GroupCommit(database.transaction, max_batch=4)
    await asyncio.gather(*(group.run(insert(f"r{n}")) for n in range(13)))
    assert max(database.transactions) <= 4
    assert sum(database.transactions) == 13


async def test_a_batch_waits_for_the_urgent_writes_under_way_but_not_for_those_that_arrive_meanwhile() -> None:
    database = FakeDatabase()
    group: GroupCommit[list[str]] = GroupCommit(database.transaction)
    committed: list[str] = []

    async def urgent(name: str, done: asyncio.Event) -> str:
        await done.wait()  # its transaction, on a connection of its own
        committed.append(name)
        return name

    first_done, later_done = asyncio.Event(), asyncio.Event()
    first = asyncio.ensure_future(group.urgent(urgent("first", first_done)))
    await asyncio.sleep(0)  # under way
    ingest = asyncio.ensure_future(group.run(insert("callback")))
    for _ in range(5):
        await asyncio.sleep(0)
    assert database.transactions == []  # the batch waits for the urgent write
    later = asyncio.ensure_future(group.urgent(urgent("later", later_done)))
    await asyncio.sleep(0)
    first_done.set()
    assert await ingest == "callback"
    committed.append("callback")
    assert not later.done()  # arrived while the batch waited: the batch went first all the same
    later_done.set()
    assert [await first, await later] == ["first", "later"]
    assert committed == ["first", "callback", "later"]


def test_concurrent_callbacks_on_postgresql_are_all_recorded_in_fewer_transactions(postgres: Cluster) -> None:
    url: PostgresUrl = fresh_database(postgres)
    transactions: list[str | None] = []
    store = store_for(url, observe=lambda seconds, error: transactions.append(error))

    async def flood() -> list[str]:
        ingest = Ingest(store, Reader(callback_schema()))
        results = await asyncio.gather(
            *(
                ingest.ingest(Received(datetime.now(UTC), "127.0.0.1", "application/xml", job_body(n), "xml"))
                for n in range(200)
            )
        )
        return [result.outcome for _, result in results]

    with store:
        outcomes = asyncio.run(flood())
    assert outcomes == ["accepted"] * 200
    assert count(url, "callbacks") == 200
    assert None in transactions
    assert len(transactions) < 200  # group commit: many callbacks a transaction
    assert all(error is None for error in transactions)
