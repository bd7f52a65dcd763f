"""The SQLite store: one file in WAL mode, one writer thread (group commit), reader connections.

Implements `relay.store.interface.Store`. Writes go through the single writer thread and return only after
their transaction committed; SQLite's errors leave as `relay.store.failures` errors.
"""

from __future__ import annotations

import queue
import shutil
import sqlite3
from collections.abc import Callable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TypeVar

import anyio.to_thread

from relay.store.answers import OutboxStats
from relay.store.db import Operation
from relay.store.facade import SqlStore
from relay.store.failures import BackupRefused, NoDatabase, NoFolder, StoreConflict, StoreError, StoreUnavailable
from relay.store.ops import backlog, owed, queries, secrets
from relay.store.records import Durability
from relay.store.sealing import Sealer
from relay.store.sqlite import connection, file
from relay.store.sqlite.writer import Observer, Writer, error_kind

T = TypeVar("T")

#: Reader connections kept open; WAL lets them read while the writer commits.
READERS = 4


class SqliteStore(SqlStore):
    """Open it (or use it as a context manager) before calling anything else."""

    def __init__(
        self,
        path: Path,
        *,
        durability: Durability = "normal",
        write_timeout: float = 5.0,
        observe: Observer | None = None,
        create: bool = True,
        sealer: Sealer | None = None,
    ) -> None:
        self.path = path
        #: Seals secrets on the way in, opens them on the way out (no key: clear).
        self._sealer = sealer or Sealer()
        #: The outbox gauges' figures of filtered subscribers, kept between scrapes (`owed.Recounts`).
        self._recounts = owed.Recounts()
        #: Only `serve` creates a database; the other commands open an existing one or refuse.
        self.create = create
        self._durability = durability
        self._write_timeout = write_timeout
        # No busy timeout on the writer's connection: it waits for other processes' locks itself.
        self._writer = Writer(partial(self._connect, busy_timeout=0.0), observe=observe, lock_timeout=write_timeout)
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._opened: list[sqlite3.Connection] = []

    def _connect(self, busy_timeout: float | None = None) -> sqlite3.Connection:
        timeout = self._write_timeout if busy_timeout is None else busy_timeout
        conn = connection.connect(self.path, self._durability, timeout, create=self.create)
        self._opened.append(conn)
        return conn

    def open(self) -> None:
        """Create (if ``create``) or migrate the database and start the writer thread.

        `NoDatabase` when there is none at the path and ``create`` is off.
        """
        if not self.create and not self.path.is_file():
            raise NoDatabase(self.path)
        if not self.path.parent.is_dir():
            raise NoFolder(self.path.parent)
        connection.keep_private(self.path)
        conn = self._connect()
        connection.migrate(conn)
        self._readers.put(conn)
        for _ in range(READERS - 1):
            self._readers.put(self._connect())
        self._writer.start()
        try:
            resealed = self._write_sync(partial(secrets.reseal_secrets, sealer=self._sealer))
        except BaseException:
            self.close()
            raise
        if resealed:
            # The clear values' pages were zeroed (secure_delete); this moves them out of the WAL too.
            self._on_reader(connection.checkpoint)

    def close(self) -> None:
        self._writer.stop()
        for conn in self._opened:
            conn.close()
        self._opened.clear()

    def __enter__(self) -> SqliteStore:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def watch(self, wake: Callable[[], None]) -> None:
        """Nothing to listen to: processes on one file find each other's work by polling."""

    async def _write(self, operation: Operation[T], *, urgent: bool = False, grouped: bool = False) -> T:
        """The writer groups every write (``grouped`` changes nothing here)."""
        try:
            return await self._writer.run(partial(connection.run, operation=operation), urgent=urgent)
        except sqlite3.Error as exc:
            raise _failure(exc) from exc

    def _write_sync(self, operation: Operation[T]) -> T:
        try:
            return self._writer.run_sync(partial(connection.run, operation=operation))
        except sqlite3.Error as exc:
            raise _failure(exc) from exc

    async def _read(self, operation: Operation[T]) -> T:
        return await anyio.to_thread.run_sync(self._read_sync, operation)

    def _read_sync(self, operation: Operation[T]) -> T:
        return self._on_reader(partial(connection.run, operation=operation))

    def _on_reader(self, read: Callable[[sqlite3.Connection], T]) -> T:
        """``read`` on a reader connection of its own (the file's pragmas and copies, too)."""
        conn = self._readers.get()
        try:
            return read(conn)
        except sqlite3.Error as exc:
            raise _failure(exc) from exc
        finally:
            self._readers.put(conn)

    # -- retention ------------------------------------------------------------------------------

    def used_bytes(self) -> int:
        wal = self.path.with_name(self.path.name + "-wal")
        size = self.path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
        return size - self._on_reader(file.reusable_bytes)

    async def drop_backlog(self, max_backlog: int, limit: int, at: datetime) -> dict[str, int]:
        over = await self._read(partial(backlog.over, max_backlog=max_backlog))
        if not over:
            return {}
        drop = partial(backlog.drop_oldest, max_backlog=max_backlog, limit=limit, at=at, subscriber_ids=over)
        return await self._write(drop)

    def backup(self, target: Path) -> None:
        """A consistent copy of the live database at ``target``; writers go on meanwhile. `BackupRefused` (one line
        for the CLI) when ``target`` exists or its folder does not: a backup never overwrites."""
        if target.exists():
            raise BackupRefused(f"{target} already exists: give a new file name (a backup never overwrites)")
        if not target.parent.is_dir():
            raise BackupRefused(f"{target.parent} is not a directory: create it first")
        connection.keep_private(target)  # VACUUM INTO fills an empty file, keeping its mode
        try:
            self._on_reader(partial(file.backup, target=target))
        except BaseException:
            target.unlink(missing_ok=True)
            raise

    # -- reads ------------------------------------------------------------------------------------

    def outbox_stats(self) -> OutboxStats:
        stats = self._read_sync(partial(queries.outbox_stats, recounts=self._recounts))
        wal = self.path.with_name(self.path.name + "-wal")
        stats["size"] += wal.stat().st_size if wal.exists() else 0
        stats["reusable"] = self._on_reader(file.reusable_bytes)
        stats["filesystem_free"] = shutil.disk_usage(self.path.parent).free
        return stats


def _failure(exc: sqlite3.Error) -> StoreError:
    if isinstance(exc, sqlite3.IntegrityError):
        return StoreConflict(str(exc))
    return StoreUnavailable(str(exc), error_kind(exc))
