"""Store: the durable record of callbacks, jobs and workflows (SQLite in WAL mode, one writer)."""

from __future__ import annotations

import queue
import sqlite3
from collections.abc import Callable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread

from relay.errors import Rejected
from relay.settings import Durability
from relay.store import sqlite as sql
from relay.store.records import IngestResult, Page, Received
from relay.store.writer import Writer
from relay.validate.callback import Callback

T = TypeVar("T")

#: Reader connections kept open; WAL lets them read while the writer commits.
READERS = 4


class Store:
    """The store's interface: the app and CLI call these methods, never SQL."""

    def __init__(self, path: Path, *, durability: Durability = "normal") -> None:
        self.path = path
        self._durability = durability
        self._writer = Writer(self._connect)
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._opened: list[sqlite3.Connection] = []

    def _connect(self) -> sqlite3.Connection:
        conn = sql.connect(self.path, self._durability)
        self._opened.append(conn)
        return conn

    def open(self) -> None:
        """Create or migrate the database and start the writer thread."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect()
        sql.migrate(conn)
        self._readers.put(conn)
        for _ in range(READERS - 1):
            self._readers.put(self._connect())
        self._writer.start()

    def close(self) -> None:
        self._writer.stop()
        for conn in self._opened:
            conn.close()
        self._opened.clear()

    def __enter__(self) -> Store:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- writes: each returns only after its transaction committed ------------------------------

    async def record_callback(self, received: Received, callback: Callback) -> IngestResult:
        return await self._writer.run(partial(sql.record_callback, received=received, callback=callback))

    async def record_rejection(self, received: Received, error: Rejected, prefix_limit: int) -> int:
        return await self._writer.run(
            partial(sql.record_rejection, received=received, error=error, prefix_limit=prefix_limit)
        )

    async def check_writable(self, at: datetime) -> None:
        await self._writer.run(partial(sql.check_writable, at=at))

    def secret(self, name: str, candidate: str, at: datetime) -> str:
        """The value stored under ``name``, storing ``candidate`` first if there is none."""
        return self._writer.run_sync(partial(sql.get_or_create_secret, name=name, candidate=candidate, at=at))

    # -- reads: on reader connections, off the event loop ----------------------------------------

    def _read_sync(self, read: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._readers.get()
        try:
            return read(conn)
        finally:
            self._readers.put(conn)

    async def _read(self, read: Callable[[sqlite3.Connection], T]) -> T:
        return await anyio.to_thread.run_sync(self._read_sync, read)

    async def get_job(self, job_id: str) -> dict[str, Any] | None:
        return await self._read(partial(sql.get_job, job_id=job_id))

    async def list_jobs(self, **filters: Any) -> Page:
        return await self._read(partial(sql.list_jobs, **filters))

    async def get_workflow(self, run_id: str) -> dict[str, Any] | None:
        return await self._read(partial(sql.get_workflow, run_id=run_id))

    async def list_callbacks(self, **filters: Any) -> Page:
        return await self._read(partial(sql.list_callbacks, **filters))

    def get_job_sync(self, job_id: str) -> dict[str, Any] | None:
        return self._read_sync(partial(sql.get_job, job_id=job_id))

    def list_jobs_sync(self, **filters: Any) -> Page:
        return self._read_sync(partial(sql.list_jobs, **filters))

    def counts(self) -> dict[str, int]:
        return self._read_sync(sql.counts)
