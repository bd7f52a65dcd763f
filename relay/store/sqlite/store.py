"""The SQLite store: one file in WAL mode, one writer thread (group commit), reader connections.

Implements `relay.store.interface.Store`. Writes go through the single writer thread and return only after
their transaction committed; SQLite's errors leave as `relay.store.failures` errors.
"""

from __future__ import annotations

import queue
import shutil
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread

from relay.domain.callback import Callback, IngestResult, Received
from relay.domain.delivery import Claim, Finished, Recorded
from relay.domain.errors import Rejected
from relay.domain.fanout import Owed, Snapshot
from relay.domain.retention import Cutoffs
from relay.domain.subscribers import Subscriber, SubscriberSpec, SubscriberState
from relay.store.failures import BackupRefused, NoDatabase, StoreConflict, StoreError, StoreUnavailable
from relay.store.formats import iso
from relay.store.records import Durability, Page, StoredToken
from relay.store.sealing import Sealer
from relay.store.sqlite import (
    attempts,
    backlog,
    callbacks,
    connection,
    console,
    deliveries,
    queries,
    retention,
    subscribers,
    tokens,
)
from relay.store.writer import Observer, Writer, error_kind

T = TypeVar("T")

#: Reader connections kept open; WAL lets them read while the writer commits.
READERS = 4


class SqliteStore:
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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection.keep_private(self.path)
        conn = self._connect()
        connection.migrate(conn)
        self._readers.put(conn)
        for _ in range(READERS - 1):
            self._readers.put(self._connect())
        self._writer.start()
        try:
            resealed = self._write_sync(partial(connection.reseal_secrets, sealer=self._sealer))
        except BaseException:
            self.close()
            raise
        if resealed:
            # The clear values' pages were zeroed (secure_delete); this moves them out of the WAL too.
            self._read_sync(connection.checkpoint)

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

    def _write_sync(self, write: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return self._writer.run_sync(write)
        except sqlite3.Error as exc:
            raise _failure(exc) from exc

    async def _write(self, write: Callable[[sqlite3.Connection], T], *, urgent: bool = False) -> T:
        try:
            return await self._writer.run(write, urgent=urgent)
        except sqlite3.Error as exc:
            raise _failure(exc) from exc

    def _read_sync(self, read: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._readers.get()
        try:
            return read(conn)
        except sqlite3.Error as exc:
            raise _failure(exc) from exc
        finally:
            self._readers.put(conn)

    async def _read(self, read: Callable[[sqlite3.Connection], T]) -> T:
        return await anyio.to_thread.run_sync(self._read_sync, read)

    # -- ingest ---------------------------------------------------------------------------------

    async def record_callback(
        self, received: Received, callback: Callback, owed: Sequence[Owed], version: tuple[object, ...] | None
    ) -> IngestResult | None:
        """Store a callback with the events and deliveries ``owed``; None, writing nothing, if the subscribers
        are no longer at ``version`` (the snapshot ``owed`` was matched against)."""
        write = partial(callbacks.record_callback, received=received, callback=callback, owed=owed, version=version)
        return await self._write(write)

    async def subscriber_snapshot(self) -> Snapshot:
        return self._sealer.snapshot(await self._read(subscribers.snapshot))

    async def record_rejection(self, received: Received, error: Rejected, prefix_limit: int) -> int:
        return await self._write(
            partial(callbacks.record_rejection, received=received, error=error, prefix_limit=prefix_limit)
        )

    async def check_writable(self, at: datetime) -> None:
        await self._write(partial(connection.check_writable, at=at))

    def secret(self, name: str, candidate: str, at: datetime) -> str:
        """The value stored under ``name``, storing ``candidate`` first if there is none."""
        sealed = self._sealer.seal(candidate)
        stored = self._write_sync(partial(connection.get_or_create_secret, name=name, candidate=sealed, at=at))
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

    # -- subscribers (sync: the CLI, the config loader and the API through a thread all use them) -

    def list_subscribers(self) -> list[Subscriber]:
        return [self._sealer.subscriber(found) for found in self._read_sync(subscribers.list_subscribers)]

    def get_subscriber(self, name: str) -> Subscriber | None:
        return self._sealer.maybe_subscriber(self._read_sync(partial(subscribers.get_subscriber, name=name)))

    def add_subscriber(self, spec: SubscriberSpec, at: datetime) -> Subscriber:
        """Raises `StoreConflict` when the name is taken."""
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
        """Returns how many unfinished deliveries were cancelled, or None for an unknown name."""
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

    # -- the delivery worker ----------------------------------------------------------------------

    async def claim(self, now: datetime, lease_margin: timedelta, capacity: int) -> list[Claim]:
        claims = await self._write(
            partial(deliveries.claim_due, now=now, lease_margin=lease_margin, capacity=capacity), urgent=True
        )
        return [self._sealer.claim(claim) for claim in claims]

    async def finish(self, finished: Sequence[Finished], lease_margin: timedelta) -> list[Recorded]:
        """Record attempts (one transaction); for each, why it disabled its subscriber and the next claim."""
        recorded = await self._write(
            partial(attempts.finish, finished=finished, lease_margin=lease_margin), urgent=True
        )
        return [self._sealer.recorded(each) for each in recorded]

    async def release(self, claim: Claim, at: datetime) -> None:
        await self._write(partial(deliveries.release, claim=claim, at=at), urgent=True)

    async def next_due(self) -> datetime | None:
        return await self._read(deliveries.next_due)

    # -- retention ------------------------------------------------------------------------------

    async def prune(self, cutoffs: Cutoffs, limit: int, at: datetime, reclaim: int) -> dict[str, int]:
        """One batch: up to ``limit`` rows of each kind older than ``cutoffs``, then up to ``reclaim`` free pages
        given back. Removed rows per kind, all zero once nothing is left; ``at`` is recorded as the last prune."""
        return await self._write(partial(retention.prune_batch, cutoffs=cutoffs, limit=limit, at=at, reclaim=reclaim))

    def count_prunable(self, cutoffs: Cutoffs) -> dict[str, int]:
        return self._read_sync(partial(retention.count_prunable, cutoffs=cutoffs))

    def used_bytes(self) -> int:
        wal = self.path.with_name(self.path.name + "-wal")
        size = self.path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
        return size - self._read_sync(retention.reusable_bytes)

    async def drop_backlog(self, max_backlog: int, limit: int, at: datetime) -> dict[str, int]:
        over = await self._read(partial(backlog.over, max_backlog=max_backlog))
        if not over:
            return {}
        return await self._write(
            partial(backlog.drop_oldest, subscriber_ids=over, max_backlog=max_backlog, limit=limit, at=at)
        )

    def backup(self, target: Path) -> None:
        """A consistent copy of the live database at ``target``; writers go on meanwhile. `BackupRefused` (one line
        for the CLI) when ``target`` exists or its folder does not: a backup never overwrites."""
        if target.exists():
            raise BackupRefused(f"{target} already exists: give a new file name (a backup never overwrites)")
        if not target.parent.is_dir():
            raise BackupRefused(f"{target.parent} is not a directory: create it first")
        connection.keep_private(target)  # VACUUM INTO fills an empty file, keeping its mode
        try:
            self._read_sync(partial(retention.backup, target=target))
        except BaseException:
            target.unlink(missing_ok=True)
            raise

    # -- reads ------------------------------------------------------------------------------------

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
        wal = self.path.with_name(self.path.name + "-wal")
        stats["size"] += wal.stat().st_size if wal.exists() else 0
        stats["reusable"] = self._read_sync(retention.reusable_bytes)
        stats["filesystem_free"] = shutil.disk_usage(self.path.parent).free
        stats["pruned_at"] = self._read_sync(retention.last_pruned)
        return stats

    def counts(self) -> dict[str, int]:
        return self._read_sync(queries.counts)

    # -- the web console --------------------------------------------------------------------------

    async def job_history(self, job_id: str, limit: int, cursor: str | None) -> Page | None:
        return await self._read(partial(queries.job_history, job_id=job_id, limit=limit, cursor=cursor))

    async def job_callbacks(self, job_id: str, body_prefix: int, limit: int, cursor: str | None) -> Page:
        return await self._read(
            partial(console.job_callbacks, job_id=job_id, body_prefix=body_prefix, limit=limit, cursor=cursor)
        )

    async def job_deliveries(self, job_id: str, limit: int, cursor: str | None) -> Page:
        return await self._read(partial(console.job_deliveries, job_id=job_id, limit=limit, cursor=cursor))

    def overview(self, since_minute: datetime, since_day: datetime) -> dict[str, list[dict[str, Any]]]:
        """Callbacks per minute by outcome, finished and failed jobs by Tag (see `console.overview`)."""
        return self._read_sync(partial(console.overview, since_minute=iso(since_minute), since_day=iso(since_day)))

    def recent_states(self, subscriber_ids: Sequence[int]) -> dict[int, dict[str, int]]:
        return self._read_sync(partial(console.recent_states, subscriber_ids=subscriber_ids))

    def event_body(self, event_id: str) -> bytes | None:
        return self._read_sync(partial(console.event_body, event_id=event_id))


def _failure(exc: sqlite3.Error) -> StoreError:
    if isinstance(exc, sqlite3.IntegrityError):
        return StoreConflict(str(exc))
    return StoreUnavailable(str(exc), error_kind(exc))
