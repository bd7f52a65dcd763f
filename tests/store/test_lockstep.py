"""A group commit's writes in lockstep on PostgreSQL (relay.store.postgres.lockstep): the statement every write
issues at a step goes to the server once, each write gets the answer to its own execution, writes that diverge
each get theirs, statements that are a WITH already go once too, a statement failing inside a batched step fails
its write alone (group commit runs the batch's writes again one by one), and the store's own record_callback
batched records what it does one by one. On a real PostgreSQL, through a connection that counts what is sent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from functools import partial
from typing import Any

import asyncpg
import pytest

from relay.domain.callback import Received
from relay.ingest import Reader
from relay.store.db import Db
from relay.store.ops.callbacks import record_callback
from relay.store.postgres.connection import PostgresDb
from relay.store.postgres.group import GroupCommit
from relay.store.postgres.lockstep import lockstep
from relay.validate.parse import new_xml_parser
from tests.conftest import callback_schema, fresh_database, job_body
from tests.databases import count
from tests.postgres import Cluster


class Counting:
    """An asyncpg connection that counts the calls that reach the server."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.conn, name)
        if name in {"execute", "executemany", "fetch", "fetchrow", "fetchval", "fetchmany"}:
            self.calls.append(name)
        return attribute


@pytest.fixture
async def conn(postgres: Cluster) -> AsyncIterator[Counting]:
    connection = await asyncpg.connect(fresh_database(postgres).url)
    await connection.execute("CREATE TABLE t(id bigserial PRIMARY KEY, v text UNIQUE)")
    try:
        yield Counting(connection)
    finally:
        await connection.close()


async def in_lockstep(conn: Counting, works: list[Callable[[Db], Coroutine[Any, Any, Any]]]) -> list[Any]:
    async with conn.conn.transaction():
        return await lockstep(PostgresDb(conn), works)  # type: ignore[arg-type]  # counts, else an asyncpg conn


def write(value: str) -> Callable[[Db], Coroutine[Any, Any, tuple[Any, ...]]]:
    async def operation(db: Db) -> tuple[Any, ...]:
        inserted = await db.fetchval("INSERT INTO t(v) VALUES (?) RETURNING id", value)
        again = await db.execute("INSERT INTO t(v) VALUES (?) ON CONFLICT (v) DO NOTHING", value.upper())
        row = await db.fetchrow("SELECT id, v FROM t WHERE id = ?", inserted)
        missing = await db.fetchval("SELECT v FROM t WHERE id = ?", -1)
        assert row is not None
        return inserted, again, dict(row), tuple(row), missing

    return operation


@pytest.mark.anyio
async def test_each_write_gets_the_answer_to_its_own_statement_and_a_step_goes_once(conn: Counting) -> None:
    values = ["a", "b", "A", "c"]  # "A": the third write inserts it at the first step
    results = await in_lockstep(conn, [write(value) for value in values])
    ids = [inserted for inserted, *_ in results]
    assert len(set(ids)) == 4
    assert [again for _, again, *_ in results] == [0, 1, 0, 1]  # each write its own row count: "A" was there
    assert [row for *_, row, _, _ in results] == [{"id": i, "v": v} for i, v in zip(ids, values, strict=True)]
    assert [whole for *_, whole, _ in results] == [(i, v) for i, v in zip(ids, values, strict=True)]
    assert [missing for *_, missing in results] == [None] * 4  # no row: None, to the write that asked
    assert conn.calls == ["fetchmany"] * 4  # four steps, one pipelined statement each


@pytest.mark.anyio
async def test_a_batch_of_one_sends_its_statements_as_they_are(conn: Counting) -> None:
    [(inserted, again, row, whole, missing)] = await in_lockstep(conn, [write("solo")])
    assert (again, row, whole, missing) == (1, {"id": inserted, "v": "solo"}, (inserted, "solo"), None)
    assert conn.calls == ["fetchval", "execute", "fetchrow", "fetchval"]


def diverging(number: int) -> Callable[[Db], Coroutine[Any, Any, Any]]:
    async def operation(db: Db) -> Any:
        if number == 0:
            return "nothing asked"
        if number % 2:
            first = await db.fetchval("INSERT INTO t(v) VALUES (?) RETURNING id", f"odd{number}")
        else:
            first = await db.fetchval("SELECT count(*) FROM t WHERE v LIKE 'odd%'")
        await db.executemany("INSERT INTO t(v) VALUES (?)", [(f"many{number}-{n}",) for n in range(2)])
        rows = await db.fetch("SELECT v FROM t WHERE v LIKE ? ORDER BY v", f"many{number}-%")
        return first, [row["v"] for row in rows]

    return operation


@pytest.mark.anyio
async def test_writes_that_diverge_each_get_the_answer_to_their_own_statement(conn: Counting) -> None:
    results = await in_lockstep(conn, [diverging(number) for number in range(5)])
    assert results[0] == "nothing asked"
    odd = [results[1][0], results[3][0]]
    assert len(set(odd)) == 2
    # The odd writes' inserts went first (they asked first), so the even ones count both.
    assert [results[2][0], results[4][0]] == [2, 2]
    for number in range(1, 5):
        assert results[number][1] == [f"many{number}-0", f"many{number}-1"]
    # Step 1: the odd writes' INSERT together, the even ones' SELECT together; then executemany and fetch one
    # by one (no one-row form for them).
    assert conn.calls == ["fetchmany", "fetchmany", *["executemany"] * 4, *["fetch"] * 4]


@pytest.mark.anyio
async def test_a_statement_failing_in_a_batched_step_fails_only_its_write(conn: Counting) -> None:
    await conn.conn.execute("INSERT INTO t(v) VALUES ('taken')")
    batches: list[int] = []

    async def together(db: PostgresDb, works: Any) -> list[Any]:
        batches.append(len(works))
        return await lockstep(db, works)

    async def transaction(work: Callable[[PostgresDb], Awaitable[Any]]) -> Any:
        async with conn.conn.transaction():
            return await work(PostgresDb(conn.conn))

    group: GroupCommit[PostgresDb] = GroupCommit(transaction, together=together)
    first = asyncio.ensure_future(group.run(write("first")))
    await asyncio.sleep(0)  # its transaction has begun: the others queue for the next
    values = ["x", "y", "taken", "z"]
    results = await asyncio.gather(*(group.run(write(value)) for value in values), return_exceptions=True)
    assert (await first)[2]["v"] == "first"
    assert isinstance(results[2], asyncpg.UniqueViolationError)
    assert [result[2]["v"] for result in results if isinstance(result, tuple)] == ["x", "y", "z"]
    assert batches == [4]  # tried together once, then each alone
    stored = {row["v"] for row in await conn.conn.fetch("SELECT v FROM t")}
    assert stored == {"taken", "first", "FIRST", "x", "X", "y", "Y", "z", "Z"}  # each once: the batch rolled back


def with_queries(value: str) -> Callable[[Db], Coroutine[Any, Any, tuple[int, int]]]:
    async def operation(db: Db) -> tuple[int, int]:
        # Statements that are a WITH already: the one-row form adds its query to their list.
        inserted = await db.execute(
            "WITH old AS (SELECT count(*) AS n FROM t WHERE v <> '(') INSERT INTO t(v) SELECT ? || n FROM old", value
        )
        notified = await db.execute("WITH never AS (SELECT 1) SELECT pg_notify('c', '') FROM never WHERE false")
        return inserted, notified

    return operation


@pytest.mark.anyio
async def test_statements_with_queries_of_their_own_go_once_too(conn: Counting) -> None:
    assert await in_lockstep(conn, [with_queries(value) for value in "abc"]) == [(1, 0)] * 3
    assert sorted(row["v"] for row in await conn.conn.fetch("SELECT v FROM t")) == ["a0", "b1", "c2"]
    assert conn.calls == ["fetchmany", "fetchmany"]


def test_callbacks_recorded_in_one_batch_are_what_they_are_one_by_one(postgres: Cluster) -> None:
    """The store's own operation: new callbacks accepted, each with its own id; the same body twice in a batch
    is accepted once (the later one finds its items claimed by the earlier, as across replicas)."""
    url = fresh_database(postgres)
    reader = Reader(callback_schema())
    parser = new_xml_parser()
    bodies = [job_body(0), job_body(1), job_body(0), job_body(2)]
    received = [Received(datetime.now(UTC), "127.0.0.1", "application/xml", body, "xml") for body in bodies]

    async def batch() -> list[Any]:
        connection = await asyncpg.connect(url.url)
        try:
            works = [
                partial(record_callback, received=one, callback=reader.read(one, parser).callback, events=())
                for one in received
            ]
            async with connection.transaction():
                return await lockstep(PostgresDb(connection), works)
        finally:
            await connection.close()

    results = asyncio.run(batch())
    assert [result.outcome for result in results] == ["accepted", "accepted", "duplicate", "accepted"]
    assert len({result.callback_id for result in results}) == 4
    assert count(url, "callbacks") == 4
    assert count(url, "jobs") == 3
    assert count(url, "job_states") == 3
