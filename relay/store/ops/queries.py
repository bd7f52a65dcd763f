"""Reads for the API and CLI: jobs, workflows, raw callbacks, deliveries, and the metrics' outbox figures."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from functools import partial

import orjson

from relay.store.answers import (
    AttemptEntry,
    Delivery,
    DeliveryWithAttempts,
    Job,
    JobState,
    JobWithHistory,
    LastAttempt,
    NonexistentJob,
    OutboxStats,
    RawCallback,
    WorkflowRun,
    WorkflowRunSummary,
    WorkflowState,
    WorkflowTask,
)
from relay.store.db import Db
from relay.store.detail import RUN_HELD, filled, whole
from relay.store.ops import implied, owed
from relay.store.ops.confirmations import of_job, waiting_stats
from relay.store.ops.retention import last_pruned
from relay.store.packing import unpack_prefix
from relay.store.records import Page
from relay.store.rows import (
    HISTORY_COLUMNS,
    JOB_COLUMNS,
    JOB_FROM,
    JOB_HISTORY,
    JOB_TEXT,
    NO_TEXT,
    RUN_TEXT,
    STATE_TEXT,
    Row,
    callback_size,
    history_entry,
    job_json,
    newest_first,
    take,
    with_history,
)


async def get_job(db: Db, job_id: str) -> JobWithHistory | None:
    row = await db.fetchrow(
        f"SELECT {JOB_COLUMNS}, j.detail, {db.dialect.packed('j.detail')} AS detail_packed FROM {JOB_FROM}"
        " WHERE j.job_id = ?",
        job_id,
    )
    if row is None:
        return None
    detail = row["detail"]  # text on PostgreSQL and in SQLite rows written before m007, packed bytes after
    text = db.dialect.unpack(detail, 1) if row["detail_packed"] else detail.encode()
    if row["state_id"] is not None:  # written since m013: its held pieces are in their columns
        text = whole(text, row)
    history = await _history(db, job_id, JOB_HISTORY, None)
    return with_history(job_json(row), text, history, await of_job(db, job_id, row["callback_id"]))


async def _history(db: Db, job_id: str, limit: int, cursor: str | None) -> list[Row]:
    where, params = _join([("job_id = ?", (job_id,)), _where("id < ?", None if cursor is None else int(cursor))])
    return list(
        await db.fetch(f"SELECT {HISTORY_COLUMNS} FROM job_states{where} ORDER BY id DESC LIMIT ?", *params, limit + 1)
    )


async def job_history(db: Db, job_id: str, limit: int = 50, cursor: str | None = None) -> Page[JobState] | None:
    """A job's states, newest first; None for a job not known."""
    if await db.fetchval("SELECT 1 FROM jobs WHERE job_id = ?", job_id) is None:
        return None
    return newest_first(await _history(db, job_id, limit, cursor), limit, history_entry, STATE_TEXT)


async def list_jobs(
    db: Db,
    *,
    state: str | None = None,
    tag: str | None = None,
    queue_id: str | None = None,
    since: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[Job]:
    """Jobs, most recently updated first; ``cursor`` comes from the previous page."""
    conditions = [_where("j.state = ?", state), _where("j.tag = ?", tag), _where("j.queue_id = ?", queue_id)]
    conditions.append(_where("j.updated_at >= ?", since))
    if cursor is not None:
        callback_id, _, job_id = cursor.partition(":")
        # Several jobs can share a callback, so the cursor names both halves of the sort key.
        conditions.append(
            (
                "(j.callback_id < ? OR (j.callback_id = ? AND j.job_id > ?))",
                (int(callback_id), int(callback_id), job_id),
            )
        )
    where, params = _join(conditions)
    rows = await db.fetch(
        f"SELECT {JOB_COLUMNS} FROM {JOB_FROM}{where} ORDER BY j.callback_id DESC, j.job_id LIMIT ?", *params, limit + 1
    )
    kept, more = take(rows, limit, JOB_TEXT)
    return Page([job_json(row) for row in kept], f"{kept[-1]['callback_id']}:{kept[-1]['job_id']}" if more else None)


#: What a listing shows of each workflow run (its detail and tasks are on the run itself).
RUN_COLUMNS = (
    "run_id, workflow_id, workflow_name, state, bucket, object_key, create_time, first_seen_at, updated_at, callback_id"
)


async def list_workflows(
    db: Db,
    *,
    state: str | None = None,
    workflow_id: str | None = None,
    name: str | None = None,
    since: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[WorkflowRunSummary]:
    """Workflow runs, most recently updated first, paged like jobs (``cursor``: ``<callback id>:<run id>``)."""
    conditions = [_where("state = ?", state), _where("workflow_id = ?", workflow_id), _where("workflow_name = ?", name)]
    conditions.append(_where("updated_at >= ?", since))
    if cursor is not None:
        callback_id, _, run_id = cursor.partition(":")
        conditions.append(
            ("(callback_id < ? OR (callback_id = ? AND run_id > ?))", (int(callback_id), int(callback_id), run_id))
        )
    where, params = _join(conditions)
    rows = await db.fetch(
        f"SELECT {RUN_COLUMNS} FROM workflow_runs{where} ORDER BY callback_id DESC, run_id LIMIT ?", *params, limit + 1
    )
    kept, more = take(rows, limit, RUN_TEXT)
    items = [run_summary(row) for row in kept]
    return Page(items, f"{kept[-1]['callback_id']}:{kept[-1]['run_id']}" if more else None)


def run_summary(row: Row) -> WorkflowRunSummary:
    """A workflow run as a listing shows it (`RUN_COLUMNS`)."""
    return WorkflowRunSummary(
        run_id=row["run_id"],
        workflow_id=row["workflow_id"],
        workflow_name=row["workflow_name"],
        state=row["state"],
        bucket=row["bucket"],
        object_key=row["object_key"],
        create_time=row["create_time"],
        first_seen_at=row["first_seen_at"],
        updated_at=row["updated_at"],
    )


async def run_of_task(db: Db, job_id: str) -> str | None:
    """The workflow run one of whose tasks is the job ``job_id``, if any."""
    found = await db.fetchval("SELECT run_id FROM workflow_tasks WHERE job_id = ? ORDER BY run_id LIMIT 1", job_id)
    return None if found is None else str(found)


async def get_workflow(db: Db, run_id: str) -> WorkflowRun | None:
    row = await db.fetchrow(
        f"SELECT {RUN_COLUMNS}, create_time_raw, detail FROM workflow_runs WHERE run_id = ?", run_id
    )
    if row is None:
        return None
    tasks = await db.fetch(
        "SELECT position, job_id, type, name, state, create_time, end_time FROM workflow_tasks WHERE run_id = ?"
        " ORDER BY position",
        run_id,
    )
    states = await db.fetch(
        "SELECT state, received_at, callback_id FROM workflow_states WHERE run_id = ? ORDER BY id", run_id
    )
    return WorkflowRun(
        **run_summary(row),
        create_time_raw=row["create_time_raw"],
        detail=filled(orjson.loads(row["detail"]), row, RUN_HELD),
        tasks=[
            WorkflowTask(
                position=task["position"],
                job_id=task["job_id"],
                type=task["type"],
                name=task["name"],
                state=task["state"],
                create_time=task["create_time"],
                end_time=task["end_time"],
            )
            for task in tasks
        ],
        history=[
            WorkflowState(state=state["state"], received_at=state["received_at"], callback_id=state["callback_id"])
            for state in states
        ],
    )


#: How much of each body a listing of callbacks shows.
BODY_PREFIX = 4096
CALLBACK_COLUMNS = (
    "id, received_at, source_addr, content_type, format, size, event_name, outcome, reason, error_path,"
    " coalesce(dedup_key, (SELECT r.dedup_key FROM callbacks r WHERE r.id = callbacks.body_ref)) AS dedup_key,"
    " body_truncated, confirmation"
)


def body_columns(db: Db, body_prefix: int) -> str:
    """A raw callback's body (a duplicate that references the first copy of its bytes shows that copy's) and
    whether it is packed. PostgreSQL cuts it to ``body_prefix`` bytes itself; SQLite's may be packed, and is cut
    as it is inflated (`callback_json`)."""
    body = "coalesce(body, (SELECT r.body FROM callbacks r WHERE r.id = callbacks.body_ref))"
    if db.dialect.postgres:
        return f"substring({body} from 1 for {int(body_prefix)}) AS body, 0 AS body_packed"
    return (
        f"{body} AS body, CASE WHEN body IS NULL THEN (SELECT r.body_packed FROM callbacks r"
        " WHERE r.id = callbacks.body_ref) ELSE body_packed END AS body_packed"
    )


async def list_callbacks(
    db: Db, *, outcome: str | None = None, limit: int = 50, cursor: str | None = None
) -> Page[RawCallback]:
    """Recent raw callbacks, quarantined ones included, newest first. ``outcome=rejected`` means all refused."""
    conditions: list[Condition]
    if outcome == "rejected":
        conditions = [("outcome NOT IN ('accepted', 'duplicate')", ())]
    else:
        conditions = [_where("outcome = ?", outcome)]
    conditions.append(_where("id < ?", None if cursor is None else int(cursor)))
    where, params = _join(conditions)
    rows = await db.fetch(
        f"SELECT {CALLBACK_COLUMNS}, {body_columns(db, BODY_PREFIX)} FROM callbacks{where} ORDER BY id DESC LIMIT ?",
        *params,
        limit + 1,
    )
    return newest_first(rows, limit, partial(callback_json, body_prefix=BODY_PREFIX), callback_size(BODY_PREFIX))


async def list_nonexistent(
    db: Db, *, job_id: str | None = None, limit: int = 50, cursor: str | None = None
) -> Page[NonexistentJob]:
    """The job ids COS reported as NonExistJobIds, newest first, each with the callback that named it."""
    conditions = [_where("job_id = ?", job_id), _where("id < ?", None if cursor is None else int(cursor))]
    where, params = _join(conditions)
    rows = await db.fetch(
        f"SELECT id, job_id, callback_id, received_at FROM nonexistent_job_ids{where} ORDER BY id DESC LIMIT ?",
        *params,
        limit + 1,
    )
    return newest_first(rows, limit, _nonexistent, NO_TEXT)


def _nonexistent(row: Row) -> NonexistentJob:
    return NonexistentJob(
        id=row["id"], job_id=row["job_id"], callback_id=row["callback_id"], received_at=row["received_at"]
    )


def callback_json(row: Row, body_prefix: int) -> RawCallback:
    """A raw callback as the API shows it (`CALLBACK_COLUMNS` and the body), its body cut to ``body_prefix``."""
    return RawCallback(
        id=row["id"],
        received_at=row["received_at"],
        source_addr=row["source_addr"],
        content_type=row["content_type"],
        format=row["format"],
        size=row["size"],
        event_name=row["event_name"],
        outcome=row["outcome"],
        reason=row["reason"],
        error_path=row["error_path"],
        dedup_key=row["dedup_key"],
        body_truncated=bool(row["body_truncated"]),
        body_prefix=unpack_prefix(row["body"], row["body_packed"], body_prefix).decode("utf-8", "replace"),
        confirmation=row["confirmation"],
    )


async def counts(db: Db) -> dict[str, int]:
    """Row counts of the tables tests and operators look at."""
    tables = ("callbacks", "items", "jobs", "job_states", "workflow_runs", "workflow_tasks", "nonexistent_job_ids")
    return {table: int(await db.fetchval(f"SELECT count(*) FROM {table}")) for table in tables}


#: A filter: its clause with a ``?`` for each of its values; None when the filter was not given.
Condition = tuple[str, tuple[object, ...]] | None


def _where(clause: str, value: object) -> Condition:
    """A filter that applies only when its value was given."""
    return None if value is None else (clause, (value,))


def _join(conditions: Iterable[Condition]) -> tuple[str, list[object]]:
    given = [condition for condition in conditions if condition is not None]
    params = [param for _, values in given for param in values]
    return (" WHERE " + " AND ".join(clause for clause, _ in given) if given else ""), params


DELIVERY_COLUMNS = (
    "d.id, d.event_id, e.type AS event_type, e.subject, s.name AS subscriber, d.subscriber_id, d.state, d.attempts,"
    " d.failures,"
    " d.next_attempt_at, d.last_outcome, d.last_status, d.created_at, d.updated_at, d.delivered_at"
)
DELIVERY_JOINS = " FROM deliveries d JOIN events e ON e.id = d.event_id JOIN subscribers s ON s.id = d.subscriber_id"


def delivery_json(row: Row) -> Delivery:
    """A delivery as the API shows it (`DELIVERY_COLUMNS`)."""
    return Delivery(
        id=row["id"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        subject=row["subject"],
        subscriber=row["subscriber"],
        subscriber_id=row["subscriber_id"],
        state=row["state"],
        attempts=row["attempts"],
        failures=row["failures"],
        next_attempt_at=row["next_attempt_at"],
        last_outcome=row["last_outcome"],
        last_status=row["last_status"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        delivered_at=row["delivered_at"],
    )


async def get_delivery(db: Db, delivery_id: int) -> DeliveryWithAttempts | None:
    row = await db.fetchrow(f"SELECT {DELIVERY_COLUMNS}{DELIVERY_JOINS} WHERE d.id = ?", delivery_id)
    if row is None:
        return None
    return DeliveryWithAttempts(
        **delivery_json(row), attempts_log=await _attempts_log(db, "delivery_id = ?", delivery_id)
    )


async def delivery_of(db: Db, subscriber_id: int, event_id: str) -> DeliveryWithAttempts | None:
    """The delivery of ``event_id`` to the subscriber, with its attempts, whether it has a row or the event log
    implies it (None: the event is not owed to it)."""
    found = await implied.of_pair(db, subscriber_id, event_id)
    if found is None:
        return None
    if found["id"] is not None:
        return await get_delivery(db, found["id"])
    where = "position = (SELECT position FROM events WHERE id = ?) AND subscriber_id = ? AND delivery_id IS NULL"
    return DeliveryWithAttempts(**found, attempts_log=await _attempts_log(db, where, event_id, subscriber_id))


async def _attempts_log(db: Db, where: str, *values: object) -> list[AttemptEntry]:
    attempts = await db.fetch(
        f"SELECT id, started_at, duration, outcome, status, error, response_body, trigger FROM attempts WHERE {where}"
        " ORDER BY id",
        *values,
    )
    return [
        AttemptEntry(
            id=attempt["id"],
            started_at=attempt["started_at"],
            duration=attempt["duration"],
            outcome=attempt["outcome"],
            status=attempt["status"],
            error=attempt["error"],
            response_body=bytes(attempt["response_body"] or b"").decode("utf-8", "replace"),
            trigger=attempt["trigger"],
        )
        for attempt in attempts
    ]


async def last_attempt(db: Db, subscriber_id: int) -> LastAttempt | None:
    """The latest attempt to the subscriber (among its 100 latest attempted deliveries with a row, and of its 100
    latest events of the log, to stay cheap)."""
    found = [
        row
        for row in (
            await db.fetchrow(
                "SELECT a.id, a.outcome, a.status, a.error, a.started_at FROM attempts a WHERE a.delivery_id IN"
                " (SELECT id FROM deliveries WHERE subscriber_id = ? AND attempts > 0 ORDER BY id DESC LIMIT 100)"
                " ORDER BY a.id DESC LIMIT 1",
                subscriber_id,
            ),
            *[await implied.last_attempt(db, owner) for owner in await implied.cursors(db, only=subscriber_id)],
        )
        if row is not None
    ]
    if not found:
        return None
    row = max(found, key=lambda row: row["id"])
    return LastAttempt(outcome=row["outcome"], status=row["status"], error=row["error"], started_at=row["started_at"])


async def count_deliveries(db: Db, state: str) -> int:
    return await owed.count(db, state)


async def event_bodies(db: Db, limit: int) -> list[bytes]:
    """The serialized events, oldest first (benchmarks replay them)."""
    order = "callback_id, id" if db.dialect.postgres else "rowid"
    rows = await db.fetch(f"SELECT body, {db.dialect.packed('body')} FROM events ORDER BY {order} LIMIT ?", limit)
    return [db.dialect.unpack(body, packed) for body, packed in rows]


#: Outbox states reported as gauges; delivered and cancelled only grow, so counters cover them.
GAUGED_STATES = ("pending", "in_flight", "dead", "dropped", "confirming", "unconfirmed")


async def outbox_stats(db: Db, recounts: owed.Recounts | None = None) -> OutboxStats:
    """What the metrics scrape reads: outbox depth and oldest age by state, subscriber states, database size
    (the space left: what the backend's store adds to it).

    All of it from the database, so every PostgreSQL replica reports the same figures (but for the part of filtered
    subscribers that each keeps in ``recounts``, up to `owed.RECOUNT_AFTER` seconds old)."""
    outbox: dict[str, tuple[int, datetime | None]] = dict.fromkeys(GAUGED_STATES, (0, None))
    among, values = db.dialect.among("state", GAUGED_STATES, "text")
    # One pass over the (state, created_at) index: three ranges of it, never the table.
    for row in await db.fetch(
        f"SELECT state, count(*) AS n, min(created_at) AS oldest FROM deliveries WHERE {among} GROUP BY state", *values
    ):
        outbox[row["state"]] = (row["n"], datetime.fromisoformat(row["oldest"]))
    # The deliveries of the log (no row): a filtered subscriber's counted up to `owed.COUNT_CAP`, and as
    # ``recounts`` keeps them (up to `owed.RECOUNT_AFTER` seconds old).
    for state, (count, oldest) in (await owed.outbox(db, recounts)).items():
        rows, row_oldest = outbox[state]
        stamps = [stamp for stamp in (row_oldest, None if oldest is None else datetime.fromisoformat(oldest)) if stamp]
        outbox[state] = (rows + count, min(stamps, default=None))
    subscribers = {
        row["name"]: row["state"]
        for row in await db.fetch("SELECT name, state FROM subscribers WHERE removed_at IS NULL")
    }
    return OutboxStats(
        outbox=outbox,
        subscribers=subscribers,
        size=await database_size(db),
        reusable=None,
        filesystem_free=None,
        pruned_at=await last_pruned(db),
        confirming=await waiting_stats(db),
    )


async def database_size(db: Db) -> int:
    """The database's bytes: PostgreSQL's whole database, SQLite's main file (its pages; not the WAL)."""
    if db.dialect.postgres:
        return int(await db.fetchval("SELECT pg_database_size(current_database())"))
    return int(await db.fetchval("PRAGMA page_count")) * int(await db.fetchval("PRAGMA page_size"))
