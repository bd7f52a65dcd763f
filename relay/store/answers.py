"""What the store's reads answer: one shape per answer, as the API, the console and the CLI show it.

They are dictionaries because the edges pass them on as JSON as they are; each is built key by key from
its row in `relay.store.rows` and `relay.store.ops`, so a column added to a table reaches no answer by chance.
Nullable columns are ``| None``: a row written by an older release, or a field COS left out.
"""

from __future__ import annotations

from datetime import datetime
from typing import TypedDict

#: A parsed JSON value: a job's or a workflow run's typed detail.
Json = dict[str, "Json"] | list["Json"] | str | int | float | bool | None


class JobInput(TypedDict):
    bucket: str | None
    object: str | None
    region: str | None


class TimesAsSent(TypedDict):
    """A job's times as COS wrote them (the plain fields are normalised to UTC)."""

    creation_time: str | None
    start_time: str | None
    end_time: str | None


class Job(TypedDict):
    """A job's latest state, as a listing shows it."""

    job_id: str
    state: str
    tag: str | None
    queue_id: str | None
    code: str | None
    message: str | None
    input: JobInput
    workflow_run_id: str | None
    creation_time: str | None
    start_time: str | None
    end_time: str | None
    times_as_sent: TimesAsSent
    first_seen_at: str
    updated_at: str


class JobState(TypedDict):
    """One state of a job's history."""

    state: str
    code: str | None
    message: str | None
    end_time: str | None
    end_time_raw: str | None
    received_at: str
    callback_id: int | None  # None once its raw callback was pruned


class Confirmation(TypedDict):
    """Whether COS confirmed a job state a callback brought (a source with confirm = true), and why not."""

    callback_id: int
    status: str  # waiting | confirmed | unconfirmed | released | discarded
    reason: str | None  # nonexistent | state_differs
    seen: str | None  # the state COS has, when it differs
    source: str
    checked_at: str | None


class CallbackJob(Confirmation):
    """One job of a callback read back from COS: its JobId, the state the callback sent, its family."""

    job_id: str
    state: str
    family: str
    created_at: str


class JobWithHistory(Job):
    """A job with its typed detail as the stored JSON (it can be megabytes: the API passes it on unparsed, the
    console parses it in a worker thread) and its latest states; ``confirmation`` when its state needed one."""

    detail: bytes
    history: list[JobState]
    history_next_cursor: str | None
    confirmation: Confirmation | None


class WorkflowRunSummary(TypedDict):
    run_id: str
    workflow_id: str | None
    workflow_name: str | None
    state: str
    bucket: str | None
    object_key: str | None
    create_time: str | None
    first_seen_at: str
    updated_at: str


class WorkflowTask(TypedDict):
    position: int
    job_id: str | None
    type: str | None
    name: str | None
    state: str | None
    create_time: str | None
    end_time: str | None


class WorkflowState(TypedDict):
    state: str
    received_at: str
    callback_id: int | None


class WorkflowRun(WorkflowRunSummary):
    create_time_raw: str | None
    detail: Json
    tasks: list[WorkflowTask]
    history: list[WorkflowState]


class RawCallback(TypedDict):
    """A raw callback (accepted, duplicate or refused) with the start of its body."""

    id: int
    received_at: str
    source_addr: str | None
    content_type: str | None
    format: str | None
    size: int
    event_name: str | None
    outcome: str
    reason: str | None
    error_path: str | None
    dedup_key: str | None
    body_truncated: bool
    body_prefix: str
    #: For a COS source with confirm = true: waiting, confirmed, unconfirmed, released, discarded (None: not asked).
    confirmation: str | None


class NonexistentJob(TypedDict):
    """A job id COS reported as NonExistJobIds, and the callback that named it."""

    id: int
    job_id: str
    callback_id: int | None
    received_at: str


class Delivery(TypedDict):
    #: None for a delivery with no row (delivered in order, in flight or pending in the event log): it is known by
    #: its subscriber and event.
    id: int | None
    event_id: str
    event_type: str
    subject: str | None
    subscriber: str
    subscriber_id: int
    state: str
    attempts: int
    failures: int
    next_attempt_at: str | None
    last_outcome: str | None
    last_status: int | None
    created_at: str
    updated_at: str | None
    delivered_at: str | None


class AttemptEntry(TypedDict):
    id: int
    started_at: str
    duration: float | None
    outcome: str
    status: int | None
    error: str | None
    response_body: str  # what the subscriber answered, when it stores responses; "" otherwise
    trigger: str | None


class DeliveryWithAttempts(Delivery):
    attempts_log: list[AttemptEntry]


class LastAttempt(TypedDict):
    outcome: str
    status: int | None
    error: str | None
    started_at: str


class OutboxStats(TypedDict):
    """What a metrics scrape reads: the same from any replica.

    ``outbox``: count and oldest creation by delivery state; ``subscribers``: each live one's state;
    ``size``: the database's bytes; ``reusable`` and ``filesystem_free``: space left, None where the backend
    cannot tell; ``pruned_at``: when a prune batch last committed."""

    outbox: dict[str, tuple[int, datetime | None]]
    subscribers: dict[str, str]
    size: int
    reusable: int | None
    filesystem_free: int | None
    pruned_at: datetime | None
    #: Per COS source with confirm: jobs waiting for COS, and the oldest one's creation.
    confirming: dict[str, tuple[int, datetime]]


class MinuteCount(TypedDict):
    minute: str  # YYYY-MM-DDTHH:MM
    outcome: str
    n: int


class TagCount(TypedDict):
    tag: str | None
    state: str
    n: int


class Overview(TypedDict):
    """The console's overview: callbacks per minute by outcome, finished and failed jobs by Tag."""

    callbacks: list[MinuteCount]
    jobs: list[TagCount]


class InFlightJob(TypedDict):
    """A job COS has not finished, as its source's last reconciliation saw it."""

    source: str
    job_id: str
    state: str
    tag: str | None
    created: str | None  # as COS wrote it
    seen_at: str


class CosQueue(TypedDict):
    """A COS source's queue as the reconciler's queue check last saw it."""

    source: str
    queue_id: str
    family: str
    name: str | None
    state: str | None
    callback: str  # where it points, without the token; "off"
    here: bool
    checked_at: str
