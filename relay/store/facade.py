"""The store's methods, written once over the operations in `relay.store.ops`.

`SqliteStore` and `PostgresStore` differ in how an operation reaches a connection (the writer thread and
reader connections; the asyncpg pool), in opening, closing and watching, and in what only one of them can do
(file sizes, backups); each supplies the four ways to run an operation and inherits the rest from here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from functools import cached_property, partial
from typing import TypeVar

from relay.domain.callback import Callback, IngestResult, Received
from relay.domain.confirm import ToConfirm, Verdict
from relay.domain.delivery import Claim, Finished, Recorded
from relay.domain.destinations import Handshake
from relay.domain.errors import Rejected
from relay.domain.events import Event
from relay.domain.retention import Cutoffs
from relay.domain.subscribers import Subscriber, SubscriberSpec, SubscriberState
from relay.store.answers import (
    CallbackJob,
    CosQueue,
    Delivery,
    DeliveryWithAttempts,
    InFlightJob,
    Job,
    JobState,
    JobWithHistory,
    LastAttempt,
    NonexistentJob,
    Overview,
    RawCallback,
    WorkflowRun,
    WorkflowRunSummary,
)
from relay.store.db import Operation
from relay.store.formats import iso
from relay.store.ops import (
    attempts,
    callbacks,
    confirmations,
    console,
    deliveries,
    handshakes,
    histories,
    implied,
    queries,
    reconcile,
    retention,
    secrets,
    subscribers,
    tokens,
)
from relay.store.records import Page, StoredToken, SubscriberChanges
from relay.store.sealing import Sealer

T = TypeVar("T")


class SqlStore(ABC):
    """What `relay.store.interface.Store` asks, for both backends."""

    #: Seals secrets on the way in, opens them on the way out (no key: clear).
    _sealer: Sealer

    @abstractmethod
    async def _write(self, operation: Operation[T], *, urgent: bool = False, grouped: bool = False) -> T:
        """``operation`` in a transaction, committed when this returns (``urgent``: the delivery worker's,
        ahead of ordinary writes where they queue; ``grouped``: one of ingest's writes, which come many at a time
        and may share their transaction with others queued meanwhile)."""

    @abstractmethod
    async def _read(self, operation: Operation[T]) -> T: ...

    @abstractmethod
    def _write_sync(self, operation: Operation[T]) -> T: ...

    @abstractmethod
    def _read_sync(self, operation: Operation[T]) -> T: ...

    # -- ingest -----------------------------------------------------------------------------------

    async def record_callback(
        self,
        received: Received,
        callback: Callback,
        events: Sequence[Event],
        confirm: Sequence[ToConfirm] = (),
    ) -> IngestResult:
        """Store a callback with the ``events`` of its new items in the log."""
        write = partial(callbacks.record_callback, received=received, callback=callback, events=events, confirm=confirm)
        return await self._write(write, grouped=True)

    async def record_rejection(self, received: Received, error: Rejected, prefix_limit: int) -> int:
        return await self._write(
            partial(callbacks.record_rejection, received=received, error=error, prefix_limit=prefix_limit), grouped=True
        )

    async def check_writable(self, at: datetime) -> None:
        await self._write(partial(secrets.check_writable, at=at))

    def secret(self, name: str, candidate: str, at: datetime) -> str:
        """The value stored under ``name``, storing ``candidate`` first if there is none."""
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

    # -- subscribers (sync: the CLI, the config loader and the API through a thread all use them) -

    def list_subscribers(self) -> list[Subscriber]:
        return [self._sealer.subscriber(found) for found in self._read_sync(subscribers.list_subscribers)]

    def get_subscriber(self, name: str) -> Subscriber | None:
        return self._sealer.maybe_subscriber(self._read_sync(partial(subscribers.get_subscriber, name=name)))

    def add_subscriber(self, spec: SubscriberSpec, at: datetime) -> Subscriber:
        """Raises `StoreConflict` when the name is taken."""
        sealed = self._sealer.spec(spec)
        return self._sealer.subscriber(self._write_sync(partial(subscribers.insert_subscriber, spec=sealed, at=at)))

    def update_subscriber(self, name: str, changes: SubscriberChanges, at: datetime) -> Subscriber | None:
        update = partial(subscribers.update_subscriber, name=name, changes=self._sealer.changes(changes), at=at)
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
        rotate = partial(subscribers.rotate_secret, name=name, new_secret=sealed, grace_until=grace_until, at=at)
        return self._sealer.maybe_subscriber(self._write_sync(rotate))

    # -- deliveries -------------------------------------------------------------------------------

    def requeue(self, delivery_ids: Iterable[int], at: datetime) -> int:
        return self._write_sync(partial(deliveries.requeue, delivery_ids=list(delivery_ids), at=at))

    def materialise(self, subscriber_id: int, event_id: str, at: datetime) -> int | None:
        return self._write_sync(
            partial(implied.materialise, subscriber_id=subscriber_id, event_id=event_id, at=iso(at))
        )

    def recoverable(self, subscriber_id: int, since: datetime, after_id: int, limit: int) -> list[int]:
        return self._read_sync(
            partial(deliveries.recoverable, subscriber_id=subscriber_id, since=since, after_id=after_id, limit=limit)
        )

    # -- the delivery worker ----------------------------------------------------------------------

    @cached_property
    def _histories(self) -> histories.Histories:
        """The subscribers' filter histories as this process's claims and deliveries' pages last read them (each
        entry checked against its key as read in the caller's own transaction: safe to share between threads)."""
        return histories.Histories()

    async def claim(self, now: datetime, lease_margin: timedelta, capacity: int, run: int = 1) -> list[Claim]:
        operation = partial(
            deliveries.claim_due,
            now=now,
            lease_margin=lease_margin,
            capacity=capacity,
            histories=self._histories,
            run=run,
        )
        claims = await self._write(operation, urgent=True)
        return [self._sealer.claim(claim) for claim in claims]

    async def finish(self, finished: Sequence[Finished], lease_margin: timedelta, run: int = 1) -> list[Recorded]:
        """Record attempts (one transaction); for each, why it disabled its subscriber and its lane's next run."""
        recorded = await self._write(
            partial(attempts.finish, finished=finished, lease_margin=lease_margin, histories=self._histories, run=run),
            urgent=True,
        )
        return [self._sealer.recorded(each) for each in recorded]

    async def release(self, claim: Claim, at: datetime) -> None:
        await self._write(partial(deliveries.release, claim=claim, at=at), urgent=True)

    async def next_due(self) -> datetime | None:
        return await self._read(deliveries.next_due)

    async def handshake_of(self, subscriber_id: int) -> Handshake | None:
        return await self._read(partial(handshakes.handshake_of, subscriber_id=subscriber_id))

    async def record_handshake(self, handshake: Handshake) -> None:
        await self._write(partial(handshakes.record_handshake, handshake=handshake), urgent=True)

    # -- retention ----------------------------------------------------------------------------------

    async def prune(self, cutoffs: Cutoffs, limit: int, at: datetime, reclaim: int) -> dict[str, int]:
        """One batch (on PostgreSQL, one replica at a time): up to ``limit`` rows of each kind older than
        ``cutoffs``, then (SQLite) up to ``reclaim`` free pages given back. Removed rows per kind, all zero once
        nothing is left; ``at`` is recorded as the last prune."""
        return await self._write(partial(retention.prune_batch, cutoffs=cutoffs, limit=limit, at=at, reclaim=reclaim))

    def count_prunable(self, cutoffs: Cutoffs) -> dict[str, int]:
        return self._read_sync(partial(retention.count_prunable, cutoffs=cutoffs))

    # -- reads ------------------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> JobWithHistory | None:
        return await self._read(partial(queries.get_job, job_id=job_id))

    async def list_jobs(
        self,
        *,
        state: str | None = None,
        tag: str | None = None,
        queue_id: str | None = None,
        since: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[Job]:
        jobs = partial(queries.list_jobs, state=state, tag=tag, queue_id=queue_id, since=since)
        return await self._read(partial(jobs, limit=limit, cursor=cursor))

    async def get_workflow(self, run_id: str) -> WorkflowRun | None:
        return await self._read(partial(queries.get_workflow, run_id=run_id))

    async def list_callbacks(
        self, *, outcome: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> Page[RawCallback]:
        return await self._read(partial(queries.list_callbacks, outcome=outcome, limit=limit, cursor=cursor))

    async def list_workflows(
        self,
        *,
        state: str | None = None,
        workflow_id: str | None = None,
        name: str | None = None,
        since: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[WorkflowRunSummary]:
        listing = partial(queries.list_workflows, state=state, workflow_id=workflow_id, name=name, since=since)
        return await self._read(partial(listing, limit=limit, cursor=cursor))

    async def run_of_task(self, job_id: str) -> str | None:
        return await self._read(partial(queries.run_of_task, job_id=job_id))

    async def claim_reconcile(self, source: str, at: datetime, every: float) -> bool:
        return await self._write(partial(reconcile.claim_reconcile, source=source, at=at, every=every))

    async def replace_in_flight(self, source: str, jobs: Sequence[tuple[str, str, str, str]], at: datetime) -> None:
        await self._write(partial(reconcile.replace_in_flight, source=source, jobs=jobs, at=at))

    async def replace_queues(
        self, source: str, queues: Sequence[tuple[str, str, str, str, str, bool]], at: datetime
    ) -> None:
        await self._write(partial(reconcile.replace_queues, source=source, queues=queues, at=at))

    async def list_queues(self) -> list[CosQueue]:
        return await self._read(reconcile.list_queues)

    async def list_in_flight(self, limit: int = 500) -> list[InFlightJob]:
        return await self._read(partial(reconcile.list_in_flight, limit=limit))

    async def waiting_confirmations(self, source: str, limit: int) -> list[ToConfirm]:
        return await self._read(partial(confirmations.waiting, source=source, limit=limit))

    async def settle_confirmations(self, verdicts: Sequence[Verdict], at: datetime) -> list[Verdict]:
        return await self._write(partial(confirmations.settle, verdicts=verdicts, at=at))

    def decide_unconfirmed(self, callback_id: int, decision: str, at: datetime) -> int | None:
        decide = partial(confirmations.decide, callback_id=callback_id, decision=decision, at=at)
        return self._write_sync(decide)

    async def callback_confirmations(self, callback_id: int) -> list[CallbackJob]:
        return await self._read(partial(confirmations.of_callback, callback_id=callback_id))

    async def list_nonexistent(
        self, *, job_id: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> Page[NonexistentJob]:
        return await self._read(partial(queries.list_nonexistent, job_id=job_id, limit=limit, cursor=cursor))

    def list_deliveries(
        self,
        *,
        subscriber: str | None = None,
        state: str | None = None,
        event_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[Delivery]:
        listing = partial(
            implied.list_deliveries, subscriber=subscriber, state=state, event_id=event_id, histories=self._histories
        )
        return self._read_sync(partial(listing, limit=limit, cursor=cursor))

    def get_delivery(self, delivery_id: int) -> DeliveryWithAttempts | None:
        return self._read_sync(partial(queries.get_delivery, delivery_id=delivery_id))

    def delivery_of(self, subscriber_id: int, event_id: str) -> DeliveryWithAttempts | None:
        return self._read_sync(partial(queries.delivery_of, subscriber_id=subscriber_id, event_id=event_id))

    def last_attempt(self, subscriber_id: int) -> LastAttempt | None:
        return self._read_sync(partial(queries.last_attempt, subscriber_id=subscriber_id))

    def last_handshake(self, subscriber_id: int) -> Handshake | None:
        return self._read_sync(partial(handshakes.handshake_of, subscriber_id=subscriber_id))

    def count_deliveries(self, state: str) -> int:
        return self._read_sync(partial(queries.count_deliveries, state=state))

    def event_bodies(self, limit: int) -> list[bytes]:
        return self._read_sync(partial(queries.event_bodies, limit=limit))

    def counts(self) -> dict[str, int]:
        return self._read_sync(queries.counts)

    # -- the web console --------------------------------------------------------------------------

    async def job_history(self, job_id: str, limit: int, cursor: str | None) -> Page[JobState] | None:
        return await self._read(partial(queries.job_history, job_id=job_id, limit=limit, cursor=cursor))

    async def job_callbacks(self, job_id: str, body_prefix: int, limit: int, cursor: str | None) -> Page[RawCallback]:
        return await self._read(
            partial(console.job_callbacks, job_id=job_id, body_prefix=body_prefix, limit=limit, cursor=cursor)
        )

    async def job_deliveries(self, job_id: str, limit: int, cursor: str | None) -> Page[Delivery]:
        job = partial(console.job_deliveries, job_id=job_id, histories=self._histories)
        return await self._read(partial(job, limit=limit, cursor=cursor))

    def overview(self, since_minute: datetime, since_day: datetime) -> Overview:
        """Callbacks per minute by outcome, finished and failed jobs by Tag (see `console.overview`)."""
        return self._read_sync(partial(console.overview, since_minute=iso(since_minute), since_day=iso(since_day)))

    def recent_states(self, subscriber_ids: Sequence[int]) -> dict[int, dict[str, int]]:
        return self._read_sync(partial(console.recent_states, subscriber_ids=subscriber_ids))

    def event_body(self, event_id: str) -> bytes | None:
        return self._read_sync(partial(console.event_body, event_id=event_id))
