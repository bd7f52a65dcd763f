"""The PostgreSQL store: `relay.store.interface.Store` for any number of replicas sharing one database."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from relay.domain.callback import Callback, IngestResult, Received
from relay.domain.delivery import Claim, Finished, Recorded
from relay.domain.errors import Rejected
from relay.domain.fanout import Owed, Snapshot
from relay.domain.retention import Cutoffs
from relay.domain.subscribers import Subscriber, SubscriberSpec, SubscriberState
from relay.store.failures import BackupRefused, NoDatabase, StoreUnavailable
from relay.store.formats import iso
from relay.store.postgres import (
    attempts,
    backlog,
    callbacks,
    console,
    deliveries,
    migrations,
    queries,
    retention,
    secrets,
    subscribers,
    tokens,
)
from relay.store.postgres.connection import Database, Observer, Work
from relay.store.records import Page, PostgresUrl, StoredToken
from relay.store.sealing import Sealer

T = TypeVar("T")


class PostgresStore:
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
        #: Only `serve` sets up (migrates) a database; the other commands refuse one cos-relay never set up.
        self.create = create
        self._db = Database(url, pool_size=pool_size, statement_timeout=statement_timeout, observe=observe)

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
            self._db.run_sync(partial(secrets.reseal_secrets, sealer=self._sealer), write=True)
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

    def _write_sync(self, work: Work[T]) -> T:
        return self._db.run_sync(work, write=True)

    def _read_sync(self, work: Work[T]) -> T:
        return self._db.run_sync(work, write=False)

    async def _write(self, work: Work[T]) -> T:
        return await self._db.run_async(work, write=True)

    async def _read(self, work: Work[T]) -> T:
        return await self._db.run_async(work, write=False)

    # -- ingest ---------------------------------------------------------------------------------

    async def record_callback(
        self, received: Received, callback: Callback, owed: Sequence[Owed], version: tuple[object, ...] | None
    ) -> IngestResult | None:
        write = partial(callbacks.record_callback, received=received, callback=callback, owed=owed, version=version)
        return await self._write(write)

    async def subscriber_snapshot(self) -> Snapshot:
        return self._sealer.snapshot(await self._read(subscribers.snapshot))

    async def record_rejection(self, received: Received, error: Rejected, prefix_limit: int) -> int:
        return await self._write(
            partial(callbacks.record_rejection, received=received, error=error, prefix_limit=prefix_limit)
        )

    async def check_writable(self, at: datetime) -> None:
        await self._write(partial(secrets.check_writable, at=at))

    def secret(self, name: str, candidate: str, at: datetime) -> str:
        sealed = self._sealer.seal(candidate)
        stored = self._write_sync(partial(secrets.get_or_create_secret, name=name, candidate=sealed, at=at))
        return self._sealer.open(stored)

    # -- tokens and console sessions ---------------------------------------------------------------

    def tokens(self, at: datetime) -> dict[str, StoredToken]:
        found = self._read_sync(partial(tokens.read_tokens, at=at))
        return {name: self._sealer.token(stored) for name, stored in found.items()}

    def record_token_source(self, name: str, source: str, fingerprint: str, at: datetime) -> None:
        self._write_sync(partial(tokens.record_token_source, name=name, source=source, fingerprint=fingerprint, at=at))

    def rotate_token(
        self,
        name: str,
        value: str,
        fingerprint: str,
        at: datetime,
        *,
        previous_until: datetime | None,
        end_sessions: bool,
    ) -> int:
        sealed = self._sealer.seal(value)
        rotate = partial(tokens.rotate_token, name=name, value=sealed, fingerprint=fingerprint, at=at)
        return self._write_sync(partial(rotate, previous_until=previous_until, end_sessions=end_sessions))

    async def start_session(self, session_id: str, expires: datetime, at: datetime) -> None:
        await self._write(partial(tokens.start_session, session_id=session_id, expires=expires, at=at))

    async def session_live(self, session_id: str, at: datetime) -> bool:
        return await self._read(partial(tokens.session_live, session_id=session_id, at=at))

    def end_sessions(self, at: datetime, session_id: str | None = None) -> int:
        return self._write_sync(partial(tokens.end_console_sessions, at=at, session_id=session_id))

    # -- subscribers ----------------------------------------------------------------------------

    def list_subscribers(self) -> list[Subscriber]:
        return [self._sealer.subscriber(found) for found in self._read_sync(subscribers.list_subscribers)]

    def get_subscriber(self, name: str) -> Subscriber | None:
        return self._sealer.maybe_subscriber(self._read_sync(partial(subscribers.get_subscriber, name=name)))

    def add_subscriber(self, spec: SubscriberSpec, at: datetime) -> Subscriber:
        sealed = self._sealer.spec(spec)
        return self._sealer.subscriber(self._write_sync(partial(subscribers.insert_subscriber, spec=sealed, at=at)))

    def update_subscriber(self, name: str, changes: Mapping[str, Any], at: datetime) -> Subscriber | None:
        update = partial(subscribers.update_subscriber, name=name, changes=changes, at=at)
        return self._sealer.maybe_subscriber(self._write_sync(update))

    def set_subscriber_state(
        self, name: str, state: SubscriberState, at: datetime, reason: str | None = None
    ) -> Subscriber | None:
        change = partial(subscribers.set_state, name=name, state=state, reason=reason, at=at)
        return self._sealer.maybe_subscriber(self._write_sync(change))

    def remove_subscriber(self, name: str, at: datetime) -> int | None:
        return self._write_sync(partial(subscribers.remove_subscriber, name=name, at=at))

    def rotate_secret(self, name: str, secret: str, grace_until: datetime, at: datetime) -> Subscriber | None:
        sealed = self._sealer.seal(secret)
        return self._sealer.maybe_subscriber(
            self._write_sync(
                partial(subscribers.rotate_secret, name=name, new_secret=sealed, grace_until=grace_until, at=at)
            )
        )

    def requeue(self, delivery_ids: Iterable[int], at: datetime) -> int:
        return self._write_sync(partial(deliveries.requeue, delivery_ids=list(delivery_ids), at=at))

    def recoverable(self, subscriber_id: int, since: datetime, after_id: int, limit: int) -> list[int]:
        return self._read_sync(
            partial(deliveries.recoverable, subscriber_id=subscriber_id, since=since, after_id=after_id, limit=limit)
        )

    # -- the delivery worker --------------------------------------------------------------------

    async def claim(self, now: datetime, lease_margin: timedelta, capacity: int) -> list[Claim]:
        claims = await self._write(partial(deliveries.claim_due, now=now, lease_margin=lease_margin, capacity=capacity))
        return [self._sealer.claim(claim) for claim in claims]

    async def finish(self, finished: Sequence[Finished], lease_margin: timedelta) -> list[Recorded]:
        recorded = await self._write(partial(attempts.finish, finished=finished, lease_margin=lease_margin))
        return [self._sealer.recorded(each) for each in recorded]

    async def release(self, claim: Claim, at: datetime) -> None:
        await self._write(partial(deliveries.release, claim=claim, at=at))

    async def next_due(self) -> datetime | None:
        return await self._read(deliveries.next_due)

    # -- retention ------------------------------------------------------------------------------

    async def prune(self, cutoffs: Cutoffs, limit: int, at: datetime, reclaim: int) -> dict[str, int]:
        """One batch (one replica at a time); ``reclaim`` does nothing here: autovacuum makes the space reusable
        (see `relay.store.postgres.retention`)."""
        return await self._write(partial(retention.prune_batch, cutoffs=cutoffs, limit=limit, at=at, reclaim=reclaim))

    def count_prunable(self, cutoffs: Cutoffs) -> dict[str, int]:
        return self._read_sync(partial(retention.count_prunable, cutoffs=cutoffs))

    def used_bytes(self) -> int:
        return self._read_sync(queries.database_size)

    async def drop_backlog(self, max_backlog: int, limit: int, at: datetime) -> dict[str, int]:
        return await self._write(partial(backlog.drop_oldest, max_backlog=max_backlog, limit=limit, at=at))

    def backup(self, target: Path) -> None:
        """Refused: PostgreSQL's own pg_dump makes a consistent copy of a live database (docs/operations.md)."""
        raise BackupRefused("cos-relay backup copies SQLite files; for PostgreSQL use pg_dump (docs/operations.md)")

    # -- reads ----------------------------------------------------------------------------------

    async def get_job(self, job_id: str, *, raw: bool = False) -> dict[str, Any] | None:
        return await self._read(partial(queries.get_job, job_id=job_id, raw=raw))

    async def list_jobs(self, **filters: Any) -> Page:
        return await self._read(partial(queries.list_jobs, **filters))

    async def get_workflow(self, run_id: str) -> dict[str, Any] | None:
        return await self._read(partial(queries.get_workflow, run_id=run_id))

    async def list_callbacks(self, **filters: Any) -> Page:
        return await self._read(partial(queries.list_callbacks, **filters))

    def get_job_sync(self, job_id: str) -> dict[str, Any] | None:
        return self._read_sync(partial(queries.get_job, job_id=job_id))

    def list_jobs_sync(self, **filters: Any) -> Page:
        return self._read_sync(partial(queries.list_jobs, **filters))

    def list_deliveries(self, **filters: Any) -> Page:
        return self._read_sync(partial(queries.list_deliveries, **filters))

    def get_delivery(self, delivery_id: int) -> dict[str, Any] | None:
        return self._read_sync(partial(queries.get_delivery, delivery_id=delivery_id))

    def last_attempt(self, subscriber_id: int) -> dict[str, Any] | None:
        return self._read_sync(partial(queries.last_attempt, subscriber_id=subscriber_id))

    def count_deliveries(self, state: str) -> int:
        return self._read_sync(partial(queries.count_deliveries, state=state))

    def event_bodies(self, limit: int) -> list[bytes]:
        return self._read_sync(partial(queries.event_bodies, limit=limit))

    def outbox_stats(self) -> dict[str, Any]:
        stats = self._read_sync(queries.outbox_stats)
        # Free space inside PostgreSQL's files and on its server's disk are not visible to a client: None, so
        # the scrape leaves those gauges out rather than report a guess (watch them on the server instead).
        stats["reusable"] = None
        stats["filesystem_free"] = None
        stats["pruned_at"] = self._read_sync(retention.last_pruned)
        return stats

    def counts(self) -> dict[str, int]:
        return self._read_sync(queries.counts)

    # -- the web console ------------------------------------------------------------------------

    async def job_history(self, job_id: str, limit: int, cursor: str | None) -> Page | None:
        return await self._read(partial(queries.job_history, job_id=job_id, limit=limit, cursor=cursor))

    async def job_callbacks(self, job_id: str, body_prefix: int, limit: int, cursor: str | None) -> Page:
        return await self._read(
            partial(console.job_callbacks, job_id=job_id, body_prefix=body_prefix, limit=limit, cursor=cursor)
        )

    async def job_deliveries(self, job_id: str, limit: int, cursor: str | None) -> Page:
        return await self._read(partial(console.job_deliveries, job_id=job_id, limit=limit, cursor=cursor))

    def overview(self, since_minute: datetime, since_day: datetime) -> dict[str, list[dict[str, Any]]]:
        return self._read_sync(partial(console.overview, since_minute=iso(since_minute), since_day=iso(since_day)))

    def recent_states(self, subscriber_ids: Sequence[int]) -> dict[int, dict[str, int]]:
        return self._read_sync(partial(console.recent_states, subscriber_ids=subscriber_ids))

    def event_body(self, event_id: str) -> bytes | None:
        return self._read_sync(partial(console.event_body, event_id=event_id))
