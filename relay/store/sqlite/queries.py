"""Reads for the API and CLI: jobs, workflows, raw callbacks."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import datetime
from functools import partial
from typing import Any

import orjson

from relay.store.packing import unpack, unpack_prefix
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


def get_job(conn: sqlite3.Connection, job_id: str, raw: bool = False) -> dict[str, Any] | None:
    row = conn.execute(f"SELECT {JOB_COLUMNS}, detail, detail_packed FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    if row is None:
        return None
    detail = row["detail"]  # text in rows written before m007, packed bytes after
    text = unpack(detail, 1) if row["detail_packed"] else detail.encode()
    job = {**job_json(row), "detail": text if raw else orjson.loads(text)}
    return with_history(job, _history(conn, job_id, JOB_HISTORY, None))


def _history(conn: sqlite3.Connection, job_id: str, limit: int, cursor: str | None) -> list[sqlite3.Row]:
    where, params = _join([("job_id = ?", (job_id,)), _where("id < ?", None if cursor is None else int(cursor))])
    return conn.execute(
        f"SELECT {HISTORY_COLUMNS} FROM job_states{where} ORDER BY id DESC LIMIT ?", (*params, limit + 1)
    ).fetchall()


def job_history(conn: sqlite3.Connection, job_id: str, limit: int = 50, cursor: str | None = None) -> Page | None:
    """A job's states, newest first; None for a job not known."""
    if conn.execute("SELECT 1 FROM jobs WHERE job_id = ?", (job_id,)).fetchone() is None:
        return None
    return newest_first(_history(conn, job_id, limit, cursor), limit, history_entry, STATE_TEXT)


def list_jobs(
    conn: sqlite3.Connection,
    *,
    state: str | None = None,
    tag: str | None = None,
    queue_id: str | None = None,
    since: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page:
    """Jobs, most recently updated first; ``cursor`` comes from the previous page."""
    conditions = [_where("state = ?", state), _where("tag = ?", tag), _where("queue_id = ?", queue_id)]
    conditions.append(_where("updated_at >= ?", since))
    if cursor is not None:
        callback_id, _, job_id = cursor.partition(":")
        # Several jobs can share a callback, so the cursor names both halves of the sort key.
        conditions.append(
            (
                "(callback_id < ? OR (callback_id = ? AND job_id > ?))",
                (int(callback_id), int(callback_id), job_id),
            )
        )
    where, params = _join(conditions)
    rows = conn.execute(
        f"SELECT {JOB_COLUMNS} FROM jobs{where} ORDER BY callback_id DESC, job_id LIMIT ?", (*params, limit + 1)
    )
    kept, more = take(rows, limit, JOB_TEXT)
    return Page([job_json(row) for row in kept], f"{kept[-1]['callback_id']}:{kept[-1]['job_id']}" if more else None)


def get_workflow(conn: sqlite3.Connection, run_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT * FROM workflow_runs WHERE run_id = ?", (run_id,)).fetchone()
    if row is None:
        return None
    run = {key: row[key] for key in row.keys() if key not in ("detail", "callback_id")}
    run["detail"] = orjson.loads(row["detail"])
    run["tasks"] = [
        {key: task[key] for key in task.keys() if key not in ("run_id", "detail")}
        for task in conn.execute("SELECT * FROM workflow_tasks WHERE run_id = ? ORDER BY position", (run_id,))
    ]
    run["history"] = [
        dict(state)
        for state in conn.execute(
            "SELECT state, received_at, callback_id FROM workflow_states WHERE run_id = ? ORDER BY id",
            (run_id,),
        )
    ]
    return run


#: How much of each body a listing of callbacks shows.
BODY_PREFIX = 4096
CALLBACK_COLUMNS = (
    "id, received_at, source_addr, content_type, format, size, event_name, outcome, reason, error_path,"
    " coalesce(dedup_key, (SELECT r.dedup_key FROM callbacks r WHERE r.id = callbacks.body_ref)) AS dedup_key,"
    " body_truncated"
)
#: A duplicate that references the first copy of its bytes shows that copy's body (and dedup keys, above).
_BODY = (
    "coalesce(body, (SELECT r.body FROM callbacks r WHERE r.id = callbacks.body_ref)) AS body,"
    " CASE WHEN body IS NULL THEN (SELECT r.body_packed FROM callbacks r WHERE r.id = callbacks.body_ref)"
    " ELSE body_packed END AS body_packed"
)


def list_callbacks(
    conn: sqlite3.Connection, *, outcome: str | None = None, limit: int = 50, cursor: str | None = None
) -> Page:
    """Recent raw callbacks, quarantined ones included, newest first. ``outcome=rejected`` means all refused."""
    conditions: list[Condition]
    if outcome == "rejected":
        conditions = [("outcome NOT IN ('accepted', 'duplicate')", ())]
    else:
        conditions = [_where("outcome = ?", outcome)]
    conditions.append(_where("id < ?", None if cursor is None else int(cursor)))
    where, params = _join(conditions)
    rows = conn.execute(
        f"SELECT {CALLBACK_COLUMNS}, {_BODY} FROM callbacks{where} ORDER BY id DESC LIMIT ?",
        (*params, limit + 1),
    )
    return newest_first(rows, limit, partial(callback_json, body_prefix=BODY_PREFIX), callback_size(BODY_PREFIX))


def callback_json(row: sqlite3.Row, body_prefix: int) -> dict[str, Any]:
    """A raw callback as the API shows it (`CALLBACK_COLUMNS` and the body), its body cut to ``body_prefix``."""
    item = {key: row[key] for key in row.keys() if key not in ("body", "body_packed")}
    item["body_truncated"] = bool(row["body_truncated"])
    item["body_prefix"] = unpack_prefix(row["body"], row["body_packed"], body_prefix).decode("utf-8", "replace")
    return item


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Row counts of the tables tests and operators look at."""
    tables = (
        "callbacks",
        "items",
        "jobs",
        "job_states",
        "workflow_runs",
        "workflow_tasks",
        "nonexistent_job_ids",
    )
    return {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in tables}


Condition = tuple[str, tuple[object, ...]] | None


def _where(clause: str, value: object) -> Condition:
    """A filter that applies only when its value was given."""
    return None if value is None else (clause, (value,))


def _join(conditions: Iterable[Condition]) -> tuple[str, list[object]]:
    given = [condition for condition in conditions if condition is not None]
    params = [param for _, values in given for param in values]
    return (" WHERE " + " AND ".join(clause for clause, _ in given) if given else ""), params


DELIVERY_COLUMNS = (
    "d.id, d.event_id, e.type AS event_type, e.subject, s.name AS subscriber, d.state, d.attempts, d.failures,"
    " d.next_attempt_at, d.last_outcome, d.last_status, d.created_at, d.updated_at, d.delivered_at"
)
DELIVERY_JOINS = " FROM deliveries d JOIN events e ON e.id = d.event_id JOIN subscribers s ON s.id = d.subscriber_id"


def list_deliveries(
    conn: sqlite3.Connection,
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
            _where("s.name = ? AND s.removed_at IS NULL", subscriber),
            _where("d.state = ?", state),
            _where("d.event_id = ?", event_id),
            _where("d.id < ?", None if cursor is None else int(cursor)),
        ]
    )
    rows = conn.execute(
        f"SELECT {DELIVERY_COLUMNS}{DELIVERY_JOINS}{where} ORDER BY d.id DESC LIMIT ?", (*params, limit + 1)
    ).fetchall()
    return Page([dict(row) for row in rows[:limit]], str(rows[limit - 1]["id"]) if len(rows) > limit else None)


def get_delivery(conn: sqlite3.Connection, delivery_id: int) -> dict[str, Any] | None:
    row = conn.execute(f"SELECT {DELIVERY_COLUMNS}{DELIVERY_JOINS} WHERE d.id = ?", (delivery_id,)).fetchone()
    if row is None:
        return None
    delivery = dict(row)
    delivery["attempts_log"] = [
        {
            **{key: attempt[key] for key in attempt.keys() if key != "response_body"},
            "response_body": bytes(attempt["response_body"] or b"").decode("utf-8", "replace"),
        }
        for attempt in conn.execute(
            "SELECT id, started_at, duration, outcome, status, error, response_body, trigger FROM attempts"
            " WHERE delivery_id = ? ORDER BY id",
            (delivery_id,),
        )
    ]
    return delivery


def last_attempt(conn: sqlite3.Connection, subscriber_id: int) -> dict[str, Any] | None:
    """The latest attempt to the subscriber (among its 100 latest attempted deliveries, to stay cheap)."""
    row = conn.execute(
        "SELECT a.outcome, a.status, a.error, a.started_at FROM attempts a WHERE a.delivery_id IN"
        " (SELECT id FROM deliveries WHERE subscriber_id = ? AND attempts > 0 ORDER BY id DESC LIMIT 100)"
        " ORDER BY a.id DESC LIMIT 1",
        (subscriber_id,),
    ).fetchone()
    return dict(row) if row else None


def count_deliveries(conn: sqlite3.Connection, state: str) -> int:
    return int(conn.execute("SELECT count(*) FROM deliveries WHERE state = ?", (state,)).fetchone()[0])


def event_bodies(conn: sqlite3.Connection, limit: int) -> list[bytes]:
    """The serialized events, oldest first (benchmarks replay them)."""
    rows = conn.execute("SELECT body, body_packed FROM events ORDER BY rowid LIMIT ?", (limit,))
    return [unpack(body, packed) for body, packed in rows]


#: Outbox states reported as gauges; delivered and cancelled only grow, so counters cover them.
GAUGED_STATES = ("pending", "in_flight", "dead", "dropped")


def outbox_stats(conn: sqlite3.Connection) -> dict[str, Any]:
    """What the metrics scrape reads: outbox depth and oldest age by state, subscriber states, file size."""
    outbox: dict[str, tuple[int, datetime | None]] = dict.fromkeys(GAUGED_STATES, (0, None))
    # One pass over the (state, created_at) index: three ranges of it, never the table.
    for row in conn.execute(
        "SELECT state, count(*) AS n, min(created_at) AS oldest FROM deliveries"
        f" WHERE state IN ({','.join('?' * len(GAUGED_STATES))}) GROUP BY state",
        GAUGED_STATES,
    ):
        outbox[row["state"]] = (row["n"], datetime.fromisoformat(row["oldest"]))
    subscribers = {
        row["name"]: row["state"]
        for row in conn.execute("SELECT name, state FROM subscribers WHERE removed_at IS NULL")
    }
    pages = conn.execute("PRAGMA page_count").fetchone()[0] * conn.execute("PRAGMA page_size").fetchone()[0]
    return {"outbox": outbox, "subscribers": subscribers, "size": pages}
