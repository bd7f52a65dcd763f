"""Group commit on PostgreSQL: the writes queued while one transaction commits go together in the next.

Each callback used to be a transaction of its own on a pooled connection: a BEGIN, its statements and a COMMIT
(a WAL flush), with a dozen callbacks in flight each holding a connection and a server process. Now the
ingest writes of a replica queue here and one task runs them, a batch per
transaction: one commit, one WAL flush and one connection for the batch, the statements of each write one
after the other on it. Under load batches grow by themselves (everything that arrived during the previous
commit); without load a write commits alone, as before.

A failing write must not fail the others. Savepoints would isolate it at the cost of two round trips per write on
the happy path; instead, when a batch fails, it is rolled back and each of its writes runs again in a
transaction of its own, so only the one at fault fails. The writes are plain SQL over the connection given
(no effect outside the database), so running one again after a rollback is safe. When the database itself is
the trouble (unreachable, too slow, read-only, full), every write of the batch gets that error at once: trying
each again alone would make the last caller wait a timeout per write before it.

Urgent writes (the delivery worker's claims, finishes and releases: short, and each holds a delivery lane) are
transactions of their own on other connections, never queued here, but under saturated ingest batches follow one
another without a gap and share the store's loop, the driver and the server with them. So `urgent` goes next: a
batch about to start waits until the urgent writes under way have committed (those only: urgent writes arriving
meanwhile do not hold it again, so ingest always gets its turn). The batch under way is not cut short: its writes
run in lockstep, all of them half done until the last step. Measured (docs/performance.md, issue 26): 22-32% of
the events delivered during saturated ingest became 32-39%; what holds the rest back is the lanes' round trips.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from relay.store.failures import StoreUnavailable

T = TypeVar("T")
C = TypeVar("C")  # the connection: asyncpg's in the store
#: What runs on the batch's connection, inside its transaction.
Work = Callable[[C], Awaitable[T]]
#: Runs a batch: given a function of a connection, returns its result from one transaction.
Transaction = Callable[[Callable[[C], Awaitable[Any]]], Awaitable[Any]]
#: Runs a batch's works on one connection (inside the transaction), returning their results in order.
Together = Callable[[C, Sequence[Work[C, Any]]], Awaitable[list[Any]]]

#: Writes per transaction at most, so a commit never holds row locks for long.
MAX_BATCH = 64


@dataclass
class _Queued(Generic[C, T]):
    work: Work[C, T]
    future: asyncio.Future[T]


class GroupCommit(Generic[C]):
    """Batches writes into shared transactions; lives on the store's event loop (every method runs there)."""

    def __init__(
        self,
        transaction: Transaction[C],
        max_batch: int = MAX_BATCH,
        together: Together[C] | None = None,
        refill: Callable[[], None] | None = None,
    ) -> None:
        self._transaction = transaction
        self._max_batch = max_batch
        #: The store's runs them in lockstep (`relay.store.postgres.lockstep`); by default, one after the other.
        self._together: Together[C] = together or one_by_one
        #: Submits the writes handed over from other threads meanwhile: called before each batch, and once
        #: more when the queue has run dry (a thread that found it `busy` counted on that).
        self._refill = refill or (lambda: None)
        self._queue: list[_Queued[C, Any]] = []
        self._draining: asyncio.Task[None] | None = None
        #: The urgent writes under way: the next batch starts once these have committed.
        self._urgent: set[asyncio.Future[Any]] = set()

    async def run(self, work: Work[C, T]) -> T:
        """``work``'s result once the transaction it ran in has committed; its own error if it failed."""
        return await self.submit(work)

    def submit(self, work: Work[C, T]) -> asyncio.Future[T]:
        """Queue ``work``: its future is done once the transaction it ran in has committed (or it failed)."""
        queued: _Queued[C, T] = _Queued(work, asyncio.get_running_loop().create_future())
        self._queue.append(queued)
        if self._draining is None:
            self._draining = asyncio.ensure_future(self._drain())
        return queued.future

    async def urgent(self, write: Awaitable[T]) -> T:
        """``write`` (a transaction of its own), ahead of the batches: the next one waits until it has committed."""
        running = asyncio.ensure_future(write)
        self._urgent.add(running)
        running.add_done_callback(self._urgent.discard)
        return await running

    @property
    def busy(self) -> bool:
        """Whether a batch is under way: writes handed over now are taken before the next one."""
        return self._draining is not None

    async def close(self) -> None:
        if self._draining is not None:
            with contextlib.suppress(BaseException):
                await self._draining

    async def _drain(self) -> None:
        try:
            while True:
                self._refill()
                if not self._queue:
                    break
                if self._urgent:
                    await asyncio.wait(set(self._urgent))
                    self._refill()  # the writes handed over while it waited join this batch
                batch = [queued for queued in self._queue[: self._max_batch] if not queued.future.cancelled()]
                del self._queue[: self._max_batch]
                if batch:
                    await self._commit(batch)
        finally:
            self._draining = None
            self._refill()

    async def _commit(self, batch: list[_Queued[C, Any]]) -> None:
        if len(batch) > 1:
            try:
                works = [queued.work for queued in batch]
                results = await self._transaction(lambda conn: self._together(conn, works))
            except StoreUnavailable as exc:
                if exc.kind != "busy":  # the database, not a write (a deadlock or conflict is a write's: retried)
                    for queued in batch:
                        _fail(queued, exc)
                    return
            except Exception:  # noqa: S110 - rolled back: each write again alone, only its own error told
                pass
            else:
                for queued, result in zip(batch, results, strict=True):
                    if not queued.future.done():
                        queued.future.set_result(result)
                return
        for queued in batch:
            try:
                result = await self._transaction(queued.work)
            except Exception as exc:  # handed to the one caller it belongs to
                _fail(queued, exc)
            else:
                if not queued.future.done():
                    queued.future.set_result(result)


def _fail(queued: _Queued[Any, Any], exc: Exception) -> None:
    if not queued.future.done():
        queued.future.set_exception(exc)


async def one_by_one(conn: C, works: Sequence[Work[C, Any]]) -> list[Any]:
    return [await work(conn) for work in works]
