"""One operation, two databases: what the store's shared SQL runs on.

Each operation of the store (`relay.store.ops`) is written once, as ``async def op(db: Db, ...)``, with its SQL
in one placeholder style (``?``). The backends give it a `Db`:

- SQLite: the writer thread and the reader connections are synchronous `sqlite3`; their `Db` completes every
  call without ever suspending, so `drive` runs an operation's coroutine to its end on the calling thread
  (one ``send``), and the writer's group commit stays as it is.
- PostgreSQL: an asyncpg connection on the store's loop; each statement's ``?`` become ``$1, $2, ...`` once.

What really differs between the two (row locks, ``SKIP LOCKED``, arrays against lists of placeholders, what is
compressed, waking other replicas) is a `Dialect`, read by the few operations it concerns; everything else is
the same SQL on both.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from relay.store import packing
from relay.store.rows import Row

T = TypeVar("T")

#: The channel PostgreSQL replicas wake each other on when they queue due deliveries.
CHANNEL = "relay_work"


@dataclass(frozen=True)
class Dialect:
    """What the two backends' SQL really differ in."""

    name: Literal["sqlite", "postgres"]

    @property
    def postgres(self) -> bool:
        """Many replicas on one database: rows are locked in a set order, busy ones skipped, others woken."""
        return self.name == "postgres"

    @property
    def skip_locked(self) -> str:
        """Taken rows another replica's transaction holds are passed over (SQLite has one writer at a time)."""
        return " FOR UPDATE SKIP LOCKED" if self.postgres else ""

    @property
    def for_update(self) -> str:
        """A row read to be changed is locked against other replicas until the transaction ends."""
        return " FOR UPDATE" if self.postgres else ""

    def among(self, column: str, values: Sequence[object], kind: str = "bigint") -> tuple[str, tuple[object, ...]]:
        """``column`` is one of ``values``: a condition and its parameters (one array on PostgreSQL, so that the
        statement is prepared once whatever the count; one value, an equality: PostgreSQL keeps one plan for it,
        while it plans an array's again at every execution, 0.08 ms a callback for the dedup check)."""
        if self.postgres and len(values) == 1:
            return f"{column} = ?", (values[0],)
        if self.postgres:
            return f"{column} = ANY(CAST(? AS {kind}[]))", (list(values),)
        return f"{column} IN ({','.join('?' * len(values))})", tuple(values)

    def limit(self, count: int) -> int | None:
        """A ``LIMIT ?`` parameter: a negative ``count`` is no limit (SQLite's own reading; PostgreSQL's is NULL)."""
        return None if count < 0 and self.postgres else count

    def pack(self, data: bytes) -> bytes:
        """A body or detail as stored: compressed on SQLite (`relay.store.packing`); PostgreSQL compresses
        large values itself (TOAST)."""
        return data if self.postgres else packing.pack(data)

    def packed(self, column: str) -> str:
        """The expression saying whether ``column`` is packed (only SQLite has the ``*_packed`` columns)."""
        return "0" if self.postgres else f"{column}_packed"

    def packed_insert(self, column: str) -> tuple[str, str]:
        """What an INSERT adds to its columns and its values to mark ``column`` packed (nothing on PostgreSQL)."""
        return ("", "") if self.postgres else (f", {column}_packed", ", 1")

    @staticmethod
    def unpack(data: bytes, packed: int) -> bytes:
        return packing.unpack(data, packed)


SQLITE = Dialect("sqlite")
POSTGRES = Dialect("postgres")


class Db(Protocol):
    """A connection inside the operation's transaction (a write) or outside any (a read)."""

    @property
    def dialect(self) -> Dialect: ...

    async def execute(self, sql: str, *args: object) -> int:
        """Run one statement; how many rows it touched."""

    async def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None: ...

    async def fetch(self, sql: str, *args: object) -> Sequence[Row]: ...

    async def fetchrow(self, sql: str, *args: object) -> Row | None: ...

    async def fetchval(self, sql: str, *args: object) -> Any:
        """The first column of the first row, None when there is no row."""


#: An operation of the store (`relay.store.ops`): a coroutine function of a `Db` and its arguments, bound.
Operation = Callable[[Db], Coroutine[Any, Any, T]]


def drive(operation: Coroutine[Any, Any, T]) -> T:
    """The result of an operation on a `Db` that never suspends (SQLite's), computed on this thread."""
    try:
        operation.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    operation.close()
    raise RuntimeError("an operation on SQLite waited for something: only PostgreSQL's connections suspend")
