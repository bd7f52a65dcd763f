"""The store's whole interface: the app, worker, services and CLI call these methods, never SQL.

Two implementations, sharing every method they can (`relay.store.facade.SqlStore`) and every operation
(`relay.store.ops`): `relay.store.sqlite.store.SqliteStore` (one file, one writer thread) and
`relay.store.postgres.store.PostgresStore` (any number of replicas on one database). Writes return only
after their transaction committed. Failures are `relay.store.failures` errors, never a driver's.
Sync methods serve the CLI, the config loader and the API (through a thread); async ones the event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

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
    OutboxStats,
    Overview,
    RawCallback,
    WorkflowRun,
    WorkflowRunSummary,
)
from relay.store.records import Page, StoredToken, SubscriberChanges


class Store(Protocol):
    """Open it (or use it as a context manager) before calling anything else."""

    def open(self) -> None:
        """Create (if allowed) or migrate the database; `NoDatabase` when there is none and creating is not."""

    def close(self) -> None: ...

    def __enter__(self) -> Store: ...

    def __exit__(self, *exc_info: object) -> None: ...

    def watch(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` (on the calling event loop) when another process adds due work, where the backend
        can tell; the worker polls anyway."""

    # -- ingest
    async def record_callback(
        self,
        received: Received,
        callback: Callback,
        events: Sequence[Event],
        confirm: Sequence[ToConfirm] = (),
    ) -> IngestResult:
        """Store a callback with the ``events`` of its new items in the log (the subscribers' cursors owe them).
        The new jobs among ``confirm`` wait for COS to confirm them, their deliveries ``confirming`` (never
        claimed) meanwhile."""

    async def record_rejection(self, received: Received, error: Rejected, prefix_limit: int) -> int: ...

    async def check_writable(self, at: datetime) -> None:
        """A real write: raises `StoreUnavailable` when the database cannot take one."""

    def secret(self, name: str, candidate: str, at: datetime) -> str:
        """The value stored under ``name``, storing ``candidate`` first if there is none."""

    # -- tokens and console sessions
    def tokens(self, at: datetime) -> dict[str, StoredToken]:
        """What the database knows of ``callback_token`` and ``admin_token`` (both keys always present); a
        previous token whose grace ended before ``at`` is left out."""

    def record_token_source(self, name: str, source: str, fingerprint: str, at: datetime) -> None:
        """Where the token ``name`` in force was found at this start, and its fingerprint."""

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
        """Keep ``value`` as the token ``name`` (source: the database), the one it replaces as its previous token
        until ``previous_until`` (None: not at all), and end every console session if ``end_sessions``: one
        transaction. How many live sessions it ended."""

    async def start_session(self, session_id: str, expires: datetime, at: datetime) -> None:
        """A new console session, live until ``expires``; sessions expired by ``at`` are removed meanwhile."""

    async def session_live(self, session_id: str, at: datetime) -> bool: ...

    def end_sessions(self, at: datetime, session_id: str | None = None) -> int:
        """End one console session, or every one (None): how many of them were live at ``at``."""

    # -- subscribers
    def list_subscribers(self) -> list[Subscriber]: ...

    def get_subscriber(self, name: str) -> Subscriber | None: ...

    def add_subscriber(self, spec: SubscriberSpec, at: datetime) -> Subscriber:
        """Raises `StoreConflict` when the name is taken."""

    def update_subscriber(self, name: str, changes: SubscriberChanges, at: datetime) -> Subscriber | None:
        """None for an unknown name. A ``secret`` among the changes replaces the current one and drops the
        previous one (its grace ends)."""

    def set_subscriber_state(
        self, name: str, state: SubscriberState, at: datetime, reason: str | None = None
    ) -> Subscriber | None: ...

    def remove_subscriber(self, name: str, at: datetime) -> int | None:
        """How many unfinished deliveries were cancelled, or None for an unknown name."""

    def rotate_secret(self, name: str, secret: str, grace_until: datetime, at: datetime) -> Subscriber | None: ...

    def requeue(self, delivery_ids: Iterable[int], at: datetime) -> int: ...

    def materialise(self, subscriber_id: int, event_id: str, at: datetime) -> int | None:
        """The id of the row of the delivery of ``event_id`` to the subscriber, written first when it has none (the
        event log implies it); None when the event is not owed to it."""

    def recoverable(self, subscriber_id: int, since: datetime, after_id: int, limit: int) -> list[int]: ...

    # -- the delivery worker
    async def claim(self, now: datetime, lease_margin: timedelta, capacity: int, run: int = 1) -> list[Claim]:
        """Lease up to ``capacity`` lanes' work: a due delivery row each, or a run of up to ``run`` events of the
        log under a lease of its own (`relay.domain.delivery.runs` groups them)."""

    async def finish(self, finished: Sequence[Finished], lease_margin: timedelta, run: int = 1) -> list[Recorded]:
        """Record attempts (one transaction); for each, why it disabled its subscriber and, for the last of a
        lane's run, the lane's next run."""

    async def release(self, claim: Claim, at: datetime) -> None: ...

    async def next_due(self) -> datetime | None: ...

    async def handshake_of(self, subscriber_id: int) -> Handshake | None:
        """The subscriber's last CloudEvents handshake, if it made one."""

    async def record_handshake(self, handshake: Handshake) -> None: ...

    # -- reads
    async def get_job(self, job_id: str) -> JobWithHistory | None:
        """The job with its latest states (``history``, oldest first), ``history_next_cursor``, and its ``detail``
        as the stored JSON bytes, not parsed (it can be megabytes: the API passes it on as is)."""

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
        """Jobs, most recently updated first, filtered by what is given (``since``: an ISO time, updated at or
        after); ``cursor`` comes from the previous page."""

    async def get_workflow(self, run_id: str) -> WorkflowRun | None: ...

    async def list_callbacks(
        self, *, outcome: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> Page[RawCallback]:
        """Raw callbacks, newest first; ``outcome=rejected``: every refused one."""

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
        """Workflow runs, most recently updated first, by state, workflow id and name, updated since a moment."""

    async def run_of_task(self, job_id: str) -> str | None:
        """The RunId of the workflow run one of whose tasks is the job ``job_id``; None if none is."""

    async def claim_reconcile(self, source: str, at: datetime, every: float) -> bool:
        """Whether this caller reconciles the COS source ``source`` now: True for one replica an interval of
        ``every`` seconds."""

    async def replace_in_flight(self, source: str, jobs: Sequence[tuple[str, str, str, str]], at: datetime) -> None:
        """The COS source's jobs in flight are now ``jobs``: (job id, state, tag, creation time as COS wrote it)."""

    async def replace_queues(
        self, source: str, queues: Sequence[tuple[str, str, str, str, str, bool]], at: datetime
    ) -> None:
        """The COS source's queues as its queue check saw them: (queue id, family, name, state, where the callback
        points without its token or "off", whether that is this gateway)."""

    async def list_queues(self) -> list[CosQueue]:
        """Every COS source's queues as last checked (``checked_at``), by source."""

    async def list_in_flight(self, limit: int = 500) -> list[InFlightJob]:
        """Every source's jobs in flight as their last reconciliation saw them, oldest first."""

    async def waiting_confirmations(self, source: str, limit: int) -> list[ToConfirm]:
        """The COS source's jobs waiting to be read back from COS, oldest first."""

    async def settle_confirmations(self, verdicts: Sequence[Verdict], at: datetime) -> list[Verdict]:
        """Release the confirmed jobs' deliveries (pending, due at ``at``), hold the others' for good
        (``unconfirmed``); the verdicts applied (those still waiting: each is applied once across replicas)."""

    def decide_unconfirmed(self, callback_id: int, decision: str, at: datetime) -> int | None:
        """An admin's ``release`` (send after all) or ``discard`` (cancel) of a callback's unconfirmed jobs'
        deliveries: how many changed; None when the callback has no unconfirmed job."""

    async def callback_confirmations(self, callback_id: int) -> list[CallbackJob]:
        """A callback's jobs read back from COS: each one's status, reason and the state COS has."""

    async def list_nonexistent(
        self, *, job_id: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> Page[NonexistentJob]:
        """The job ids COS reported as NonExistJobIds (``job_id``: only that one), newest first, each with the
        callback that named it and when."""

    def list_deliveries(
        self,
        *,
        subscriber: str | None = None,
        state: str | None = None,
        event_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[Delivery]: ...

    def get_delivery(self, delivery_id: int) -> DeliveryWithAttempts | None: ...

    def delivery_of(self, subscriber_id: int, event_id: str) -> DeliveryWithAttempts | None:
        """The delivery of ``event_id`` to the subscriber with its attempts, row or not (None: not owed)."""

    def last_attempt(self, subscriber_id: int) -> LastAttempt | None: ...

    def last_handshake(self, subscriber_id: int) -> Handshake | None:
        """`handshake_of`, for the admin reads that run on a thread (the API's and CLI's subscriber)."""

    def count_deliveries(self, state: str) -> int: ...

    def event_bodies(self, limit: int) -> list[bytes]: ...

    def outbox_stats(self) -> OutboxStats:
        """Outbox depth and oldest age by state, subscriber states, database size, space left (``reusable``,
        ``filesystem_free``: None where the backend cannot tell) and the last prune: the same from any replica (filtered
        subscribers' deliveries of the event log: as this store last counted them, up to 30 s ago)."""

    def counts(self) -> dict[str, int]: ...

    # -- retention
    async def prune(self, cutoffs: Cutoffs, limit: int, at: datetime, reclaim: int) -> dict[str, int]:
        """One batch: up to ``limit`` rows of each kind older than ``cutoffs``, then up to ``reclaim`` free pages
        given back where the backend can. Removed rows per kind, all zero once nothing is left; ``at`` is
        recorded as the last prune."""

    def count_prunable(self, cutoffs: Cutoffs) -> dict[str, int]: ...

    def used_bytes(self) -> int:
        """What the database takes that new rows cannot reuse (SQLite: the file and its WAL less free pages;
        PostgreSQL: the database, whose deleted rows' space autovacuum makes reusable without shrinking it)."""

    async def drop_backlog(self, max_backlog: int, limit: int, at: datetime) -> dict[str, int]:
        """One batch: up to ``limit`` of each subscriber's oldest pending deliveries past its first ``max_backlog``
        become ``dropped``; how many, by subscriber name (empty once every backlog is within the bound)."""

    def backup(self, target: Path) -> None:
        """A consistent copy of the live database at ``target`` (which must not exist); writers go on meanwhile.
        `BackupRefused` when it exists, its folder does not, or the backend has its own tools (PostgreSQL: pg_dump)."""

    # -- the web console
    async def job_history(self, job_id: str, limit: int, cursor: str | None) -> Page[JobState] | None:
        """A job's states, newest first (`get_job` carries the latest few); None for a job not known."""

    async def job_callbacks(self, job_id: str, body_prefix: int, limit: int, cursor: str | None) -> Page[RawCallback]:
        """The raw callbacks that carried the job's states, newest first, bodies cut to ``body_prefix`` bytes."""

    async def job_deliveries(self, job_id: str, limit: int, cursor: str | None) -> Page[Delivery]:
        """Every delivery of the job's events, newest first."""

    def overview(self, since_minute: datetime, since_day: datetime) -> Overview:
        """Callbacks per minute by outcome since ``since_minute``, finished and failed jobs by Tag since
        ``since_day``."""

    def recent_states(self, subscriber_ids: Sequence[int]) -> dict[int, dict[str, int]]:
        """Each subscriber's most recent attempted deliveries counted by state (absent: none attempted)."""

    def event_body(self, event_id: str) -> bytes | None: ...
