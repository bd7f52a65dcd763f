"""A group commit's writes in lockstep: the statement every write issues at the same step goes over once.

Group commit (`relay.store.postgres.group`) shares one transaction between the writes of a batch, but each
write's statements were still a round trip each: a batch of 30 callbacks, 240 round trips. Here the batch's
operations run side by side, each on a `StepDb` that hands its statement to the driver instead of the server,
and the driver, once every write still running has handed one, sends the statements that are the same SQL
together: one pipelined `fetchmany` (asyncpg sends every execution before reading any answer), each execution
turned into exactly one row that carries the write's own answer, which goes back to that write. Writes that
diverge (a duplicate, a workflow, a job whose history is full) simply issue different SQL at that step: each
distinct statement goes on its own, in the order the writes asked. So every operation stays written once, for
both backends (`relay.store.ops`), and a batch of one costs what it did.

The batch shares one transaction, as before: a write sees what the writes before it in the batch wrote (two
callbacks of one batch claiming the same item: the later one finds it claimed, as with two replicas at once).
When any statement or any write fails, the batch fails and group commit runs each write again alone.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Awaitable, Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg

from relay.store.postgres.connection import PostgresDb, numbered

Kind = Literal["execute", "executemany", "fetch", "fetchrow", "fetchval"]
#: A batched statement's extra first column: how many rows the write's own statement returned.
_COUNT = "relay_rows"
_KEYWORD = re.compile(r"\s*(\w+)")


@dataclass(frozen=True)
class _Statement:
    """One write's statement at this step: what the driver sends for it."""

    kind: Kind
    sql: str
    args: tuple[object, ...]

    def __await__(self) -> Generator[_Statement, Any, Any]:
        # Hands the statement to `lockstep`, which sends back the answer (or throws the error) in its place.
        return (yield self)


class StepDb(PostgresDb):
    """A write's `relay.store.db.Db` inside a lockstep batch: each statement waits for the driver."""

    def __init__(self) -> None:  # no connection: the driver holds it
        pass

    async def execute(self, sql: str, *args: object) -> int:
        return await _Statement("execute", sql, args)  # type: ignore[no-any-return]

    async def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        await _Statement("executemany", sql, (list(rows),))

    async def fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        return await _Statement("fetch", sql, args)  # type: ignore[no-any-return]

    async def fetchrow(self, sql: str, *args: object) -> asyncpg.Record | None:
        return await _Statement("fetchrow", sql, args)  # type: ignore[no-any-return]

    async def fetchval(self, sql: str, *args: object) -> Any:
        return await _Statement("fetchval", sql, args)


async def lockstep(db: PostgresDb, works: Sequence[Callable[[PostgresDb], Awaitable[Any]]]) -> list[Any]:
    """Each work's result, the works (each on a `StepDb` of its own) run side by side on ``db``'s connection."""
    operations = [work(StepDb()).__await__() for work in works]
    results: list[Any] = [None] * len(operations)
    waiting: dict[int, _Statement] = {}

    def advance(position: int, answer: Any) -> None:
        try:
            statement = operations[position].send(answer)
        except StopIteration as done:
            results[position] = done.value
            return
        if not isinstance(statement, _Statement):
            raise RuntimeError(f"a write in a batch awaited {statement!r}: only its Db's statements may suspend it")
        waiting[position] = statement

    try:
        for position in range(len(operations)):
            advance(position, None)
        while waiting:
            step, waiting = waiting, {}
            together: dict[tuple[Kind, str], list[int]] = {}
            for position, statement in step.items():
                together.setdefault((statement.kind, statement.sql), []).append(position)
            for (kind, sql), positions in together.items():
                answers = await _send(db, kind, sql, [step[position].args for position in positions])
                for position, answer in zip(positions, answers, strict=True):
                    advance(position, answer)
    finally:
        for operation in operations:
            operation.close()  # those a failure left suspended
    return results


async def _send(db: PostgresDb, kind: Kind, sql: str, each: list[tuple[object, ...]]) -> list[Any]:
    """The answer to each execution of ``sql``, in order: one pipelined statement where ``sql`` can be made to
    answer in one row per execution, else one statement each."""
    batched = _batched(kind, sql) if len(each) > 1 else None
    if batched is None:
        method = getattr(db, kind)
        return [await method(sql, *args) for args in each]
    rows = await db.connection.fetchmany(batched, each)
    if kind == "execute":
        return [row[0] for row in rows]
    answers: list[Any] = []
    for row in rows:
        if not row[0]:
            answers.append(None)
        elif kind == "fetchval":
            answers.append(row[1])
        else:
            answers.append(_Trimmed(row))
    return answers


@functools.lru_cache(maxsize=256)
def _batched(kind: Kind, sql: str) -> str | None:
    """``sql`` (numbered) as a statement answering exactly one row per execution, or None if it cannot be.

    The statement becomes the last query of a ``WITH`` (after its own, if it has any: a data-modifying ``WITH``
    may not nest). An ``execute`` answers its row count: ``count(*)`` over it (a data-modifying one given
    ``RETURNING 1``). A ``fetchval`` or ``fetchrow`` answers its first row, after the number of rows (0: none),
    from a ``LEFT JOIN`` of one row with the statement's. A ``fetch`` (all rows) and an ``executemany`` go one
    by one. A ``fetchval`` of a plain ``SELECT`` (most of them) is a scalar subquery instead, planned as the
    statement itself is: the extra relations of the ``WITH`` form tipped PostgreSQL into a generic plan made
    while the tables were empty (a sequential scan of the dedup ledger, 0.2 ms a callback on a fresh database).
    """
    head, last = _last_query(numbered(sql))
    found = _KEYWORD.match(last)
    keyword = found.group(1).upper() if found else ""
    returning = "RETURNING" in last.upper()
    if kind == "execute" and not returning and keyword in {"SELECT", "INSERT", "UPDATE", "DELETE"}:
        counted = last if keyword == "SELECT" else f"{last} RETURNING 1"
        return f"{head} relay_step AS ({counted}) SELECT count(*) FROM relay_step"
    if kind == "fetchval" and keyword == "SELECT" and head == "WITH":  # its first column; no row: NULL, None
        return f"SELECT 1 AS {_COUNT}, (SELECT * FROM ({last}) AS relay_step LIMIT 1)"
    if kind in {"fetchval", "fetchrow"} and (keyword == "SELECT" or returning):
        return (
            f"{head} relay_step AS ({last}) SELECT (SELECT count(*) FROM relay_step) AS {_COUNT},"
            " relay_step.* FROM (SELECT 1) AS relay_one LEFT JOIN relay_step ON true LIMIT 1"
        )
    return None


def _last_query(sql: str) -> tuple[str, str]:
    """``sql`` as the start of a ``WITH`` list to add one more query to (``WITH`` or ``WITH a AS (...),``) and its
    last query (the statement itself when it has no ``WITH``)."""
    if not sql.lstrip().upper().startswith("WITH "):
        return "WITH", sql
    depth, quoted = 0, False
    for position, char in enumerate(sql):
        if char == "'":
            quoted = not quoted
        elif quoted:
            continue
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            rest = sql[position + 1 :].lstrip()
            # Past a query of the list, unless another follows (",") or this closed its column names ("AS").
            if depth == 0 and not rest.startswith(",") and rest[:3].upper() not in {"AS ", "AS("}:
                return f"{sql[: position + 1]},", rest
    return "WITH", sql  # not a WITH list after all: left as it is (and sent one by one if it does not fit)


class _Trimmed:
    """A batched statement's row without its leading row count: the row the write's own statement gave."""

    __slots__ = ("_row",)

    def __init__(self, row: asyncpg.Record) -> None:
        self._row = row

    def __getitem__(self, key: str) -> Any:
        return self._row[key]

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(self._row, 1, None)

    def keys(self) -> Iterator[str]:
        return itertools.islice(self._row.keys(), 1, None)
