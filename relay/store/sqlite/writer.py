"""The single writer: one thread owns the SQLite write connection and group-commits queued writes.

Concurrent requests each queue a write and await it; the thread takes everything queued, runs the
writes in one transaction, commits once, then wakes every waiter. One fsync (or WAL append) serves the
whole batch, and a failing write rolls back only itself. Waiters on an event loop are woken with one
cross-thread call per batch, not one per write: in a profile of a delivery drain, a wake-up per write
took a quarter of the writer thread's time.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from relay.store.sqlite import connection as sql

logger = logging.getLogger(__name__)

T = TypeVar("T")
Write = Callable[[sqlite3.Connection], T]
#: Told about every transaction: its duration in seconds, and the kind of error if it failed.
Observer = Callable[[float, str | None], None]

#: Upper bound on writes per transaction, so one commit never holds the lock for long.
MAX_BATCH = 256


@dataclass
class _Job(Generic[T]):
    write: Write[T]
    future: Future[T] | asyncio.Future[T]
    loop: asyncio.AbstractEventLoop | None = None  # set when ``future`` belongs to an event loop
    going: bool | None = None  # the answer of the first `started`: a write that runs again keeps it

    def started(self) -> bool:
        """False if the caller gave up (cancelled) before the write began: skip it."""
        if self.going is None:
            if isinstance(self.future, Future):
                self.going = self.future.set_running_or_notify_cancel()
            else:
                # Read across threads: at worst a cancellation racing this check lets the write go ahead,
                # exactly as if it had arrived a moment after the write began.
                self.going = not self.future.cancelled()
        return self.going


#: A write's job with its result, or the exception it raised.
Outcome = tuple[_Job[Any], Any, BaseException | None]


class _Stop:
    pass


def error_kind(exc: sqlite3.Error) -> str:
    """A bounded label for a failed transaction."""
    text = str(exc).lower()
    for kind in ("locked", "busy", "readonly", "full", "disk i/o"):
        if kind in text:
            return kind.replace("disk i/o", "io")
    return "other"


class Writer:
    """Runs writes on one connection, on one thread, in batched transactions.

    Urgent writes (the delivery worker's: short, and each one holds a delivery lane) never wait for a
    whole group of ordinary ones: a group in progress commits early when one arrives, and the urgent
    writes go next, in a transaction of their own. Without load, groups are as large as before.
    """

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        *,
        name: str = "relay-writer",
        observe: Observer | None = None,
        lock_timeout: float = 5.0,
    ) -> None:
        """``connect`` should give a connection with no busy timeout: the writer waits for the lock itself,
        for up to ``lock_timeout`` seconds per transaction."""
        self._connect = connect
        self._lock_timeout = lock_timeout
        self._observe = observe or (lambda seconds, error: None)
        self._queue: queue.SimpleQueue[_Job[Any] | _Stop | None] = queue.SimpleQueue()  # None: look at urgent
        self._urgent: queue.SimpleQueue[_Job[Any]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._conn: sqlite3.Connection | None = None

    def start(self) -> None:
        self._conn = self._connect()
        self._thread.start()

    def stop(self) -> None:
        """Finish queued writes, then close the connection."""
        if self._thread.is_alive():
            self._queue.put(_Stop())
            self._thread.join()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def run(self, write: Write[T], *, urgent: bool = False) -> T:
        """Queue ``write`` and wait until its transaction has committed (``urgent``: ahead of ordinary writes)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if urgent:
            self._urgent.put(_Job(write, future, loop))
            self._queue.put(None)  # wakes the thread if it waits for work
        else:
            self._queue.put(_Job(write, future, loop))
        return await future

    def run_sync(self, write: Write[T]) -> T:
        future: Future[T] = Future()
        self._queue.put(_Job(write, future))
        return future.result()

    def _loop(self) -> None:
        conn = self._conn
        assert conn is not None
        backlog: collections.deque[_Job[Any]] = collections.deque()  # ordinary writes taken, not yet run
        stopping = False
        while True:
            # More urgent writes than a transaction takes leave some queued with their wake-ups taken: do not wait.
            idle = not backlog and not stopping and self._urgent.empty()
            stopping = self._take(backlog, wait=idle) or stopping
            urgent = self._take_urgent()
            if urgent:
                self._commit(conn, urgent)
            if backlog:
                self._commit_group(conn, backlog)
            elif stopping and self._urgent.empty():
                return
            # Waiting for the next write must not keep this batch's writes (a whole body and its model,
            # for a callback) alive: an idle gateway would hold the largest body it last stored.
            del urgent

    def _commit_group(self, conn: sqlite3.Connection, backlog: collections.deque[_Job[Any]]) -> None:
        """The next group of ordinary writes; those left out for an urgent write go back to the front."""
        group = [backlog.popleft() for _ in range(min(len(backlog), MAX_BATCH))]
        backlog.extendleft(reversed(self._commit(conn, group, yield_to_urgent=True)))

    def _take(self, backlog: collections.deque[_Job[Any]], *, wait: bool) -> bool:
        """Move the ordinary writes queued to ``backlog`` (waiting for anything first if ``wait``); True on stop."""
        stop = False
        try:
            item = self._queue.get() if wait else self._queue.get_nowait()
            while True:
                if isinstance(item, _Stop):
                    stop = True
                elif item is not None:
                    backlog.append(item)
                if len(backlog) >= MAX_BATCH:
                    return stop
                item = self._queue.get_nowait()
        except queue.Empty:
            return stop

    def _take_urgent(self) -> list[_Job[Any]]:
        taken: list[_Job[Any]] = []
        with contextlib.suppress(queue.Empty):
            while len(taken) < MAX_BATCH:
                taken.append(self._urgent.get_nowait())
        return taken

    def _commit(
        self, conn: sqlite3.Connection, batch: list[_Job[Any]], *, yield_to_urgent: bool = False
    ) -> list[_Job[Any]]:
        """Run ``batch`` in one transaction; returns the writes left out for an urgent one (never the first).

        The writes run without a savepoint each: the two statements more per write are two more hand-offs
        of the GIL between this thread and the event loop, ~30 µs of CPU per callback under load. If one
        fails, the transaction is rolled back and the writes run again, each in its own savepoint, so that
        the failure undoes only its own changes (writes are functions of the database: they may run twice).
        """
        outcomes: list[Outcome] = []
        ran = len(batch)
        started = time.perf_counter()
        try:
            sql.begin(conn, self._lock_timeout)
            outcomes, ran = self._run(conn, batch, yield_to_urgent, isolated=False)
            if outcomes and outcomes[-1][2] is not None:
                sql.rollback(conn)
                sql.begin(conn, self._lock_timeout)
                outcomes, ran = self._run(conn, batch, yield_to_urgent, isolated=True)
            sql.commit(conn)
            self._observe(time.perf_counter() - started, None)
        except sqlite3.Error as exc:  # locked, read-only, disk full: nothing in the batch is durable
            self._observe(time.perf_counter() - started, error_kind(exc))
            logger.error("write transaction failed: %s", exc, extra={"action": "store_write_failed"})
            try:
                sql.rollback(conn)
            except sqlite3.Error:
                logger.exception("rollback failed")
            outcomes = [(job, None, exc) for job in batch[:ran]]
        _settle(outcomes)
        return batch[ran:]

    def _run(
        self, conn: sqlite3.Connection, batch: list[_Job[Any]], yield_to_urgent: bool, *, isolated: bool
    ) -> tuple[list[Outcome], int]:
        """Run the writes of ``batch`` in the open transaction: their outcomes, and how many were taken.

        Not ``isolated``, it stops at the first failure (the caller starts over isolated): a write's error
        may have ended the transaction, and the writes after it must not run outside one.
        """
        outcomes: list[Outcome] = []
        for index, job in enumerate(batch):
            if yield_to_urgent and index and not self._urgent.empty():
                return outcomes, index
            if not job.started():
                continue
            if isolated:
                sql.savepoint(conn)
            try:
                outcomes.append((job, job.write(conn), None))
            except Exception as exc:  # the write's own failure: undo it alone
                outcomes.append((job, None, exc))
                if not isolated:
                    return outcomes, index + 1
                sql.rollback_to_savepoint(conn)
            else:
                if isolated:
                    sql.release(conn)
        return outcomes, len(batch)


def _settle(outcomes: list[Outcome]) -> None:
    """Hand every result to its waiter: directly for threads, one call per event loop for coroutines."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
    for outcome in outcomes:
        loop = outcome[0].loop
        if loop is None:
            _set(outcome)
        else:
            by_loop.setdefault(loop, []).append(outcome)
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is left waiting
            loop.call_soon_threadsafe(_set_all, settled)


def _set_all(outcomes: list[Outcome]) -> None:
    for outcome in outcomes:
        _set(outcome)


def _set(outcome: Outcome) -> None:
    job, result, error = outcome
    try:
        if error is None:
            job.future.set_result(result)
        else:
            job.future.set_exception(error)
    except (InvalidStateError, asyncio.InvalidStateError):
        pass  # cancelled by its caller meanwhile; nobody is waiting for the answer
