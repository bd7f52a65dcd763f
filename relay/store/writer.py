"""The single writer: one thread owns the SQLite write connection and group-commits queued writes.

Concurrent requests each queue a write and await it; the thread takes everything queued, runs each
write inside its own savepoint of one transaction, commits once, then wakes every waiter. One fsync
(or WAL append) serves the whole batch, and a failing write rolls back only itself.
"""

from __future__ import annotations

import asyncio
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
    future: Future[T]


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
    """Runs writes on one connection, on one thread, in batched transactions."""

    def __init__(
        self, connect: Callable[[], sqlite3.Connection], *, name: str = "relay-writer", observe: Observer | None = None
    ) -> None:
        self._connect = connect
        self._observe = observe or (lambda seconds, error: None)
        self._queue: queue.SimpleQueue[_Job[Any] | _Stop] = queue.SimpleQueue()
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

    def submit(self, write: Write[T]) -> Future[T]:
        future: Future[T] = Future()
        self._queue.put(_Job(write, future))
        return future

    async def run(self, write: Write[T]) -> T:
        """Queue ``write`` and wait until its transaction has committed."""
        return await asyncio.wrap_future(self.submit(write))

    def run_sync(self, write: Write[T]) -> T:
        return self.submit(write).result()

    def _loop(self) -> None:
        conn = self._conn
        assert conn is not None
        while True:
            batch: list[_Job[Any]] = []
            item = self._queue.get()
            while not isinstance(item, _Stop):
                batch.append(item)
                if len(batch) >= MAX_BATCH:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._commit(conn, batch)
            if isinstance(item, _Stop):
                return

    def _commit(self, conn: sqlite3.Connection, batch: list[_Job[Any]]) -> None:
        outcomes: list[tuple[_Job[Any], Any, BaseException | None]] = []
        started = time.perf_counter()
        try:
            sql.begin(conn)
            for job in batch:
                if not job.future.set_running_or_notify_cancel():
                    continue  # its caller gave up (cancelled) before the write started: skip it
                sql.savepoint(conn)
                try:
                    result = job.write(conn)
                except Exception as exc:  # the write's own failure: undo it alone
                    sql.rollback_to_savepoint(conn)
                    outcomes.append((job, None, exc))
                else:
                    sql.release(conn)
                    outcomes.append((job, result, None))
            sql.commit(conn)
            self._observe(time.perf_counter() - started, None)
        except sqlite3.Error as exc:  # locked, read-only, disk full: nothing in the batch is durable
            self._observe(time.perf_counter() - started, error_kind(exc))
            logger.error("write transaction failed: %s", exc, extra={"action": "store_write_failed"})
            try:
                sql.rollback(conn)
            except sqlite3.Error:
                logger.exception("rollback failed")
            outcomes = [(job, None, exc) for job in batch]
        for job, result, error in outcomes:
            try:
                if error is None:
                    job.future.set_result(result)
                else:
                    job.future.set_exception(error)
            except InvalidStateError:
                pass  # cancelled by its caller meanwhile; nobody is waiting for the answer
