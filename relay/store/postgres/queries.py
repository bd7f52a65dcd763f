"""Reads for the API and CLI: jobs, workflows, raw callbacks, deliveries, and the metrics' outbox figures."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from relay.store.records import Page
from relay.store.rows import (
    HISTORY_COLUMNS,
    JOB_COLUMNS,
    JOB_HISTORY,
    JOB_TEXT,
    STATE_TEXT,
    callback_size,
    history_entry,
    job_json,
    newest_first,
    take,
    with_history,
)

#: How much of each body a listing of callbacks shows.
BODY_PREFIX = 4096
#: A filter: its clause with ``{}`` for each parameter, and the values; None when the filter was not given.
Condition = tuple[str, tuple[object, ...]] | None


def _where(clause: str, value: object) -> Condition:
    return None if value is None else (clause, (value,))


def _join(conditions: Iterable[Condition]) -> tuple[str, list[object]]:
    """`` WHERE a AND b`` with the ``{}`` numbered $1, $2, ... in order, and the parameters."""
    given = [condition for condition in conditions if condition is not None]
    params: list[object] = []
    clauses = []
    for clause, values in given:
        numbers = [f"${len(params) + offset}" for offset in range(1, len(values) + 1)]
        clauses.append(clause.format(*numbers))
        params.extend(values)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


async def get_job(conn: asyncpg.Connection, job_id: str, raw: bool = False) -> dict[str, Any] | None:
    row = await conn.fetchrow(f"SELECT {JOB_COLUMNS}, detail FROM jobs WHERE job_id = $1", job_id)
    if row is None:
        return None
    job = {**job_json(row), "detail": row["detail"].encode() if raw else orjson.loads(row["detail"])}
    return with_history(job, await _history(conn, job_id, JOB_HISTORY, None))


async def _history(conn: asyncpg.Connection, job_id: str, limit: int, cursor: str | None) -> list[asyncpg.Record]:
    where, params = _join([("job_id = {}", (job_id,)), _where("id < {}", None if cursor is None else int(cursor))])
    return await conn.fetch(
        f"SELECT {HISTORY_COLUMNS} FROM job_states{where} ORDER BY id DESC LIMIT ${len(params) + 1}",
        *params,
        limit + 1,
    )


async def job_history(conn: asyncpg.Connection, job_id: str, limit: int = 50, cursor: str | None = None) -> Page | None:
    """A job's states, newest first; None for a job not known."""
    if await conn.fetchval("SELECT 1 FROM jobs WHERE job_id = $1", job_id) is None:
        return None
    return newest_first(await _history(conn, job_id, limit, cursor), limit, history_entry, STATE_TEXT)


async def list_jobs(
    conn: asyncpg.Connection,
    *,
    state: str | None = None,
    tag: str | None = None,
    queue_id: str | None = None,
    since: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page:
    """Jobs, most recently updated first; ``cursor`` comes from the previous page."""
    conditions = [_where("state = {}", state), _where("tag = {}", tag), _where("queue_id = {}", queue_id)]
    conditions.append(_where("updated_at >= {}", since))
    if cursor is not None:
        callback_id, _, job_id = cursor.partition(":")
        conditions.append(("(callback_id < {0} OR (callback_id = {0} AND job_id > {1}))", (int(callback_id), job_id)))
    where, params = _join(conditions)
    rows = await conn.fetch(
        f"SELECT {JOB_COLUMNS} FROM jobs{where} ORDER BY callback_id DESC, job_id LIMIT ${len(params) + 1}",
        *params,
        limit + 1,
    )
    kept, more = take(rows, limit, JOB_TEXT)
    return Page([job_json(row) for row in kept], f"{kept[-1]['callback_id']}:{kept[-1]['job_id']}" if more else None)


async def get_workflow(conn: asyncpg.Connection, run_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT * FROM workflow_runs WHERE run_id = $1", run_id)
    if row is None:
        return None
    run = {key: row[key] for key in row.keys() if key not in ("detail", "callback_id")}
    run["detail"] = orjson.loads(row["detail"])
    tasks = await conn.fetch("SELECT * FROM workflow_tasks WHERE run_id = $1 ORDER BY position", run_id)
    run["tasks"] = [{key: task[key] for key in task.keys() if key not in ("run_id", "detail")} for task in tasks]
    states = await conn.fetch(
        "SELECT state, received_at, callback_id FROM workflow_states WHERE run_id = $1 ORDER BY id", run_id
    )
    run["history"] = [dict(state) for state in states]
    return run


CALLBACK_COLUMNS = (
    "id, received_at, source_addr, content_type, format, size, event_name, outcome, reason, error_path,"
    " coalesce(dedup_key, (SELECT r.dedup_key FROM callbacks r WHERE r.id = callbacks.body_ref)) AS dedup_key,"
    " body_truncated"
)
#: A duplicate that references the first copy of its bytes shows that copy's body (and dedup keys, above).
_BODY = "coalesce(body, (SELECT r.body FROM callbacks r WHERE r.id = callbacks.body_ref))"


async def list_callbacks(
    conn: asyncpg.Connection, *, outcome: str | None = None, limit: int = 50, cursor: str | None = None
) -> Page:
    """Recent raw callbacks, quarantined ones included, newest first. ``outcome=rejected`` means all refused."""
    conditions: list[Condition]
    if outcome == "rejected":
        conditions = [("outcome NOT IN ('accepted', 'duplicate')", ())]
    else:
        conditions = [_where("outcome = {}", outcome)]
    conditions.append(_where("id < {}", None if cursor is None else int(cursor)))
    where, params = _join(conditions)
    rows = await conn.fetch(
        f"SELECT {CALLBACK_COLUMNS}, substring({_BODY} from 1 for {BODY_PREFIX}) AS body_prefix FROM callbacks{where}"
        f" ORDER BY id DESC LIMIT ${len(params) + 1}",
        *params,
        limit + 1,
    )
    return newest_first(rows, limit, callback_json, callback_size(BODY_PREFIX))


def callback_json(row: asyncpg.Record) -> dict[str, Any]:
    """A raw callback as the API shows it: `CALLBACK_COLUMNS` and the ``body_prefix`` selected."""
    item = {key: row[key] for key in row.keys() if key != "body_prefix"}
    item["body_truncated"] = bool(row["body_truncated"])
    item["body_prefix"] = bytes(row["body_prefix"] or b"").decode("utf-8", "replace")
    return item


async def counts(conn: asyncpg.Connection) -> dict[str, int]:
    """Row counts of the tables tests and operators look at."""
    tables = ("callbacks", "items", "jobs", "job_states", "workflow_runs", "workflow_tasks", "nonexistent_job_ids")
    return {table: int(await conn.fetchval(f"SELECT count(*) FROM {table}")) for table in tables}


DELIVERY_COLUMNS = (
    "d.id, d.event_id, e.type AS event_type, e.subject, s.name AS subscriber, d.state, d.attempts, d.failures,"
    " d.next_attempt_at, d.last_outcome, d.last_status, d.created_at, d.updated_at, d.delivered_at"
)
DELIVERY_JOINS = " FROM deliveries d JOIN events e ON e.id = d.event_id JOIN subscribers s ON s.id = d.subscriber_id"


async def list_deliveries(
    conn: asyncpg.Connection,
    *,
    subscriber: str | None = None,
    state: str | None = None,
    event_id: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page:
    """Deliveries, newest first."""
    where, params = _join(
        [
            _where("s.name = {} AND s.removed_at IS NULL", subscriber),
            _where("d.state = {}", state),
            _where("d.event_id = {}", event_id),
            _where("d.id < {}", None if cursor is None else int(cursor)),
        ]
    )
    rows = await conn.fetch(
        f"SELECT {DELIVERY_COLUMNS}{DELIVERY_JOINS}{where} ORDER BY d.id DESC LIMIT ${len(params) + 1}",
        *params,
        limit + 1,
    )
    return Page([dict(row) for row in rows[:limit]], str(rows[limit - 1]["id"]) if len(rows) > limit else None)


async def get_delivery(conn: asyncpg.Connection, delivery_id: int) -> dict[str, Any] | None:
    row = await conn.fetchrow(f"SELECT {DELIVERY_COLUMNS}{DELIVERY_JOINS} WHERE d.id = $1", delivery_id)
    if row is None:
        return None
    delivery = dict(row)
    attempts = await conn.fetch(
        "SELECT id, started_at, duration, outcome, status, error, response_body, trigger FROM attempts"
        " WHERE delivery_id = $1 ORDER BY id",
        delivery_id,
    )
    delivery["attempts_log"] = [
        {
            **{key: attempt[key] for key in attempt.keys() if key != "response_body"},
            "response_body": bytes(attempt["response_body"] or b"").decode("utf-8", "replace"),
        }
        for attempt in attempts
    ]
    return delivery


async def last_attempt(conn: asyncpg.Connection, subscriber_id: int) -> dict[str, Any] | None:
    """The latest attempt to the subscriber (among its 100 latest attempted deliveries, to stay cheap)."""
    row = await conn.fetchrow(
        "SELECT a.outcome, a.status, a.error, a.started_at FROM attempts a WHERE a.delivery_id IN"
        " (SELECT id FROM deliveries WHERE subscriber_id = $1 AND attempts > 0 ORDER BY id DESC LIMIT 100)"
        " ORDER BY a.id DESC LIMIT 1",
        subscriber_id,
    )
    return dict(row) if row else None


async def count_deliveries(conn: asyncpg.Connection, state: str) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM deliveries WHERE state = $1", state))


async def event_bodies(conn: asyncpg.Connection, limit: int) -> list[bytes]:
    """The serialized events, oldest first (benchmarks replay them)."""
    rows = await conn.fetch("SELECT body FROM events ORDER BY callback_id, id LIMIT $1", limit)
    return [bytes(row[0]) for row in rows]


#: Outbox states reported as gauges; delivered and cancelled only grow, so counters cover them.
GAUGED_STATES = ("pending", "in_flight", "dead", "dropped")


async def outbox_stats(conn: asyncpg.Connection) -> dict[str, Any]:
    """What the metrics scrape reads: outbox depth and oldest age by state, subscriber states, database size.

    All of it from the database, so every replica reports the same figures."""
    outbox: dict[str, tuple[int, datetime | None]] = dict.fromkeys(GAUGED_STATES, (0, None))
    for row in await conn.fetch(
        "SELECT state, count(*) AS n, min(created_at) AS oldest FROM deliveries WHERE state = ANY($1::text[])"
        " GROUP BY state",
        list(GAUGED_STATES),
    ):
        outbox[row["state"]] = (row["n"], datetime.fromisoformat(row["oldest"]))
    subscribers = {
        row["name"]: row["state"]
        for row in await conn.fetch("SELECT name, state FROM subscribers WHERE removed_at IS NULL")
    }
    return {"outbox": outbox, "subscribers": subscribers, "size": await database_size(conn)}


async def database_size(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT pg_database_size(current_database())"))
