"""The PostgreSQL store: `relay.store.interface.Store` for any number of replicas sharing one database."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TypeVar

from relay.store.answers import OutboxStats
from relay.store.db import Operation
from relay.store.facade import SqlStore
from relay.store.failures import BackupRefused, NoDatabase, StoreUnavailable
from relay.store.ops import backlog, owed, queries, secrets
from relay.store.postgres import migrations
from relay.store.postgres.connection import Database, Observer, work
from relay.store.postgres.lockstep import lockstep
from relay.store.records import PostgresUrl
from relay.store.sealing import Sealer

T = TypeVar("T")


class PostgresStore(SqlStore):
    """Open it (or use it as a context manager) before calling anything else."""

    def __init__(
        self,
        url: PostgresUrl,
        *,
        pool_size: int = 10,
        statement_timeout: float = 5.0,
        observe: Observer | None = None,
        create: bool = True,
        sealer: Sealer | None = None,
    ) -> None:
        self.url = url
        #: Seals secrets on the way in, opens them on the way out (no key: clear).
        self._sealer = sealer or Sealer()
        #: The outbox gauges' figures of filtered subscribers, kept between scrapes (`owed.Recounts`).
        self._recounts = owed.Recounts()
        #: Only `serve` sets up (migrates) a database; the other commands refuse one cos-relay never set up.
        self.create = create
        self._db = Database(
            url,
            pool_size=pool_size,
            statement_timeout=statement_timeout,
            observe=observe,
            together=lockstep,
        )

    def open(self) -> None:
        """Migrate (if ``create``) under the advisory lock; `NoDatabase` when the database was never set up
        and ``create`` is off; `StoreUnavailable` when it cannot be reached."""
        self._db.start()
        try:
            found = self._db.run_sync(migrations.version, write=False)
            if not self.create and found is None:
                raise NoDatabase(self.url)
            if self.create:
                self._db.run_sync(migrations.migrate, write=False)
            elif found is not None and found < migrations.LATEST:
                raise StoreUnavailable(
                    f"the database at {self.url} is at schema version {found}, this cos-relay needs"
                    f" {migrations.LATEST}: start `cos-relay serve` once to migrate it"
                )
            self._write_sync(partial(secrets.reseal_secrets, sealer=self._sealer))
        except BaseException:
            self._db.stop()
            raise

    def close(self) -> None:
        self._db.stop()

    def __enter__(self) -> PostgresStore:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def watch(self, wake: Callable[[], None]) -> None:
        """LISTEN for other replicas' new work; ``wake`` runs on the event loop that calls this."""
        loop = asyncio.get_running_loop()

        def wake_there() -> None:
            with contextlib.suppress(RuntimeError):  # that loop has closed: nobody is left to wake
                loop.call_soon_threadsafe(wake)

        self._db.listen(wake_there)

    async def _write(self, operation: Operation[T], *, urgent: bool = False, grouped: bool = False) -> T:
        """``grouped`` writes (ingest's) share transactions (`relay.store.postgres.group`); the
        others are each a transaction of their own on the pool, beside the batch under way (queued with ingest's, a
        delivery's bookkeeping waited out every batch of callbacks before it), the delivery worker's ``urgent``
        ones ahead of the next batch."""
        if grouped:
            return await self._db.run_grouped(operation)
        if urgent:
            return await self._db.run_urgent(work(operation))
        return await self._db.run_async(work(operation), write=True)

    async def _read(self, operation: Operation[T]) -> T:
        return await self._db.run_async(work(operation), write=False)

    def _write_sync(self, operation: Operation[T]) -> T:
        return self._db.run_sync(work(operation), write=True)

    def _read_sync(self, operation: Operation[T]) -> T:
        return self._db.run_sync(work(operation), write=False)

    # -- retention ------------------------------------------------------------------------------

    def used_bytes(self) -> int:
        return self._read_sync(queries.database_size)

    async def drop_backlog(self, max_backlog: int, limit: int, at: datetime) -> dict[str, int]:
        return await self._write(partial(backlog.drop_oldest, max_backlog=max_backlog, limit=limit, at=at))

    def backup(self, target: Path) -> None:
        """Refused: PostgreSQL's own pg_dump makes a consistent copy of a live database (docs/operations.md)."""
        raise BackupRefused("cos-relay backup copies SQLite files; for PostgreSQL use pg_dump (docs/operations.md)")

    # -- reads ----------------------------------------------------------------------------------

    def outbox_stats(self) -> OutboxStats:
        # Free space inside PostgreSQL's files and on its server's disk are not visible to a client: left None,
        # so the scrape leaves those gauges out rather than report a guess (watch them on the server instead).
        return self._read_sync(partial(queries.outbox_stats, recounts=self._recounts))
