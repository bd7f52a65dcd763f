"""The SQLite backend: every SQL statement cos-relay runs lives in this module.

Functions take an open connection so the caller decides where they run: writes on the single writer
thread (`relay.store.writer`), reads on reader connections. Writes assume an open transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import sqlite_utils

from relay.errors import Rejected
from relay.settings import Durability
from relay.store.migrations import migrations
from relay.store.records import IngestResult, Page, Received
from relay.validate.callback import Callback, JobState, Timestamp, WorkflowRun

#: How long a writer waits for another process's write lock before the request gets 503.
BUSY_TIMEOUT_MS = 5000


def connect(path: Path, durability: Durability = "normal") -> sqlite3.Connection:
    """Open a connection in autocommit mode; transactions are explicit (BEGIN IMMEDIATE)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    # NORMAL in WAL mode loses nothing on a process crash; FULL adds an fsync per commit for power loss.
    conn.execute(f"PRAGMA synchronous = {durability.upper()}")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def migrate(conn: sqlite3.Connection) -> None:
    migrations.apply(sqlite_utils.Database(conn))


def begin(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")


def commit(conn: sqlite3.Connection) -> None:
    conn.execute("COMMIT")


def rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def savepoint(conn: sqlite3.Connection) -> None:
    conn.execute("SAVEPOINT item")


def release(conn: sqlite3.Connection) -> None:
    conn.execute("RELEASE item")


def rollback_to_savepoint(conn: sqlite3.Connection) -> None:
    conn.execute("ROLLBACK TO item")
    conn.execute("RELEASE item")


def check_writable(conn: sqlite3.Connection, at: datetime) -> None:
    """Write one row, so that a read-only file or a full disk shows up."""
    conn.execute("INSERT OR REPLACE INTO heartbeat(id, at) VALUES (1, ?)", (_iso(at),))


# -- writes -----------------------------------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


def record_callback(conn: sqlite3.Connection, received: Received, callback: Callback) -> IngestResult:
    """Store the raw callback and every new job state, workflow state and NonExistJobIds set it carries."""
    at = _iso(received.received_at)
    callback_id = _insert_callback(conn, received, callback, at)
    new_items: list[str] = []
    for job in callback.jobs:
        if _claim_item(conn, job.dedup_key, "job", job.job_id, job.state, callback_id, at):
            _record_job(conn, job, callback_id, at)
            new_items.append(job.dedup_key)
    for run in callback.workflows:
        if _claim_item(conn, run.dedup_key, "workflow", run.run_id, run.state, callback_id, at):
            _record_workflow(conn, run, callback_id, at)
            new_items.append(run.dedup_key)
    key = callback.nonexistent_dedup_key
    if key and _claim_item(conn, key, "nonexistent", None, None, callback_id, at):
        conn.executemany(
            "INSERT INTO nonexistent_job_ids(job_id, callback_id, received_at) VALUES (?, ?, ?)",
            [(job_id, callback_id, at) for job_id in callback.nonexistent_job_ids],
        )
        new_items.append(key)
    if not new_items:
        conn.execute("UPDATE callbacks SET outcome = 'duplicate' WHERE id = ?", (callback_id,))
        return IngestResult(callback_id, "duplicate", ())
    return IngestResult(callback_id, "accepted", tuple(new_items))


def _insert_callback(conn: sqlite3.Connection, received: Received, callback: Callback, at: str) -> int:
    cursor = conn.execute(
        "INSERT INTO callbacks(received_at, source_addr, content_type, format, size, event_name, outcome,"
        " dedup_key, body, body_truncated) VALUES (?, ?, ?, ?, ?, ?, 'accepted', ?, ?, 0)",
        (
            at,
            received.source_addr,
            received.content_type,
            received.format,
            len(received.body),
            callback.event_name,
            " ".join(callback.dedup_keys),
            received.body,
        ),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def _claim_item(
    conn: sqlite3.Connection,
    key: str,
    kind: str,
    subject: str | None,
    state: str | None,
    callback_id: int,
    at: str,
) -> bool:
    cursor = conn.execute(
        "INSERT INTO items(dedup_key, kind, subject, state, callback_id, received_at) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT(dedup_key) DO NOTHING",
        (key, kind, subject, state, callback_id, at),
    )
    return cursor.rowcount == 1


def _times(stamp: Timestamp | None) -> tuple[str | None, str | None]:
    return (stamp.iso, stamp.raw) if stamp else (None, None)


def _record_job(conn: sqlite3.Connection, job: JobState, callback_id: int, at: str) -> None:
    end, end_raw = _times(job.end_time)
    conn.execute(
        "INSERT INTO job_states(job_id, state, code, message, end_time, end_time_raw, received_at, callback_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (job.job_id, job.state, job.code, job.message, end, end_raw, at, callback_id),
    )
    # Callbacks can arrive out of order: the row keeps the state with the latest EndTime.
    conn.execute(
        "INSERT INTO jobs(job_id, state, tag, queue_id, code, message, bucket, object_key, region,"
        " workflow_run_id, creation_time, creation_time_raw, start_time, start_time_raw, end_time,"
        " end_time_raw, detail, first_seen_at, updated_at, callback_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT(job_id) DO UPDATE SET state = excluded.state, tag = excluded.tag,"
        " queue_id = excluded.queue_id, code = excluded.code, message = excluded.message,"
        " bucket = excluded.bucket, object_key = excluded.object_key, region = excluded.region,"
        " workflow_run_id = excluded.workflow_run_id, creation_time = excluded.creation_time,"
        " creation_time_raw = excluded.creation_time_raw, start_time = excluded.start_time,"
        " start_time_raw = excluded.start_time_raw, end_time = excluded.end_time,"
        " end_time_raw = excluded.end_time_raw, detail = excluded.detail, updated_at = excluded.updated_at,"
        " callback_id = excluded.callback_id"
        " WHERE jobs.end_time IS NULL OR excluded.end_time IS NULL OR excluded.end_time >= jobs.end_time",
        (
            job.job_id,
            job.state,
            job.tag,
            job.queue_id,
            job.code,
            job.message,
            job.bucket,
            job.object_key,
            job.region,
            job.workflow_run_id,
            *_times(job.creation_time),
            *_times(job.start_time),
            end,
            end_raw,
            _json(job.detail),
            at,
            at,
            callback_id,
        ),
    )


def _record_workflow(conn: sqlite3.Connection, run: WorkflowRun, callback_id: int, at: str) -> None:
    conn.execute(
        "INSERT INTO workflow_states(run_id, state, received_at, callback_id) VALUES (?, ?, ?, ?)",
        (run.run_id, run.state, at, callback_id),
    )
    conn.execute(
        "INSERT INTO workflow_runs(run_id, workflow_id, workflow_name, state, bucket, object_key, create_time,"
        " create_time_raw, detail, first_seen_at, updated_at, callback_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT(run_id) DO UPDATE SET workflow_id = excluded.workflow_id,"
        " workflow_name = excluded.workflow_name, state = excluded.state, bucket = excluded.bucket,"
        " object_key = excluded.object_key, create_time = excluded.create_time,"
        " create_time_raw = excluded.create_time_raw, detail = excluded.detail,"
        " updated_at = excluded.updated_at, callback_id = excluded.callback_id",
        (
            run.run_id,
            run.workflow_id,
            run.workflow_name,
            run.state,
            run.bucket,
            run.object_key,
            *_times(run.create_time),
            _json(run.detail),
            at,
            at,
            callback_id,
        ),
    )
    conn.execute("DELETE FROM workflow_tasks WHERE run_id = ?", (run.run_id,))
    conn.executemany(
        "INSERT INTO workflow_tasks(run_id, position, job_id, type, name, state, create_time, end_time, detail)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                run.run_id,
                position,
                task.get("JobId"),
                task.get("Type"),
                task.get("Name"),
                task.get("State"),
                task.get("CreateTime"),
                task.get("EndTime"),
                _json(task),
            )
            for position, task in enumerate(run.tasks)
        ],
    )


def record_rejection(
    conn: sqlite3.Connection, received: Received, error: Rejected, prefix_limit: int
) -> int:
    """Quarantine a refused body: reason, size, type, source and a bounded prefix."""
    cursor = conn.execute(
        "INSERT INTO callbacks(received_at, source_addr, content_type, format, size, outcome, reason,"
        " error_path, body, body_truncated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            _iso(received.received_at),
            received.source_addr,
            received.content_type,
            received.format,
            len(received.body),
            error.outcome,
            error.detail if error.rule is None else f"{error.detail}: {error.rule}",
            error.path,
            received.body[:prefix_limit],
            int(len(received.body) > prefix_limit),
        ),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def get_or_create_secret(conn: sqlite3.Connection, name: str, candidate: str, at: datetime) -> str:
    """Keep the first value ever stored under ``name``; later calls return it."""
    conn.execute(
        "INSERT INTO secrets(name, value, created_at) VALUES (?, ?, ?) ON CONFLICT(name) DO NOTHING",
        (name, candidate, _iso(at)),
    )
    row = conn.execute("SELECT value FROM secrets WHERE name = ?", (name,)).fetchone()
    return str(row["value"])


# -- reads ------------------------------------------------------------------------------------------

_JOB_COLUMNS = (
    "job_id, state, tag, queue_id, code, message, bucket, object_key, region, workflow_run_id,"
    " creation_time, creation_time_raw, start_time, start_time_raw, end_time, end_time_raw,"
    " first_seen_at, updated_at, callback_id"
)


def _job_json(row: sqlite3.Row, *, with_detail: bool) -> dict[str, Any]:
    job: dict[str, Any] = {
        "job_id": row["job_id"],
        "state": row["state"],
        "tag": row["tag"],
        "queue_id": row["queue_id"],
        "code": row["code"],
        "message": row["message"],
        "input": {"bucket": row["bucket"], "object": row["object_key"], "region": row["region"]},
        "workflow_run_id": row["workflow_run_id"],
        "creation_time": row["creation_time"],
        "start_time": row["start_time"],
        "end_time": row["end_time"],
        "times_as_sent": {
            "creation_time": row["creation_time_raw"],
            "start_time": row["start_time_raw"],
            "end_time": row["end_time_raw"],
        },
        "first_seen_at": row["first_seen_at"],
        "updated_at": row["updated_at"],
    }
    if with_detail:
        job["detail"] = orjson.loads(row["detail"])
    return job


def get_job(conn: sqlite3.Connection, job_id: str) -> dict[str, Any] | None:
    row = conn.execute(f"SELECT {_JOB_COLUMNS}, detail FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    if row is None:
        return None
    job = _job_json(row, with_detail=True)
    job["history"] = [
        dict(state)
        for state in conn.execute(
            "SELECT state, code, message, end_time, end_time_raw, received_at, callback_id"
            " FROM job_states WHERE job_id = ? ORDER BY id",
            (job_id,),
        )
    ]
    return job


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
            ("(callback_id < ? OR (callback_id = ? AND job_id > ?))", (int(callback_id), int(callback_id), job_id))
        )
    where, params = _join(conditions)
    rows = conn.execute(
        f"SELECT {_JOB_COLUMNS} FROM jobs{where} ORDER BY callback_id DESC, job_id LIMIT ?",  # noqa: S608
        (*params, limit + 1),
    ).fetchall()
    last = rows[limit - 1] if len(rows) > limit else None
    return Page(
        [_job_json(row, with_detail=False) for row in rows[:limit]],
        f"{last['callback_id']}:{last['job_id']}" if last is not None else None,
    )


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


_CALLBACK_COLUMNS = (
    "id, received_at, source_addr, content_type, format, size, event_name, outcome, reason, error_path,"
    " dedup_key, body_truncated"
)


def list_callbacks(
    conn: sqlite3.Connection, *, outcome: str | None = None, limit: int = 50, cursor: str | None = None
) -> Page:
    """Recent raw callbacks, quarantined ones included, newest first. ``outcome=rejected`` means all refused."""
    if outcome == "rejected":
        conditions = [("outcome NOT IN ('accepted', 'duplicate')", ())]
    else:
        conditions = [_where("outcome = ?", outcome)]
    conditions.append(_where("id < ?", None if cursor is None else int(cursor)))
    where, params = _join(conditions)
    rows = conn.execute(
        f"SELECT {_CALLBACK_COLUMNS}, substr(body, 1, 4096) AS body_prefix FROM callbacks{where}"  # noqa: S608
        " ORDER BY id DESC LIMIT ?",
        (*params, limit + 1),
    ).fetchall()
    items = []
    for row in rows[:limit]:
        item = {key: row[key] for key in row.keys() if key != "body_prefix"}
        item["body_truncated"] = bool(row["body_truncated"])
        item["body_prefix"] = bytes(row["body_prefix"] or b"").decode("utf-8", "replace")
        items.append(item)
    return Page(items, str(rows[limit - 1]["id"]) if len(rows) > limit else None)


def get_callback_body(conn: sqlite3.Connection, callback_id: int) -> bytes | None:
    row = conn.execute("SELECT body FROM callbacks WHERE id = ?", (callback_id,)).fetchone()
    return None if row is None else bytes(row["body"])


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Row counts of the tables tests and operators look at."""
    tables = ("callbacks", "items", "jobs", "job_states", "workflow_runs", "workflow_tasks", "nonexistent_job_ids")
    return {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in tables}  # noqa: S608


Condition = tuple[str, tuple[object, ...]] | None


def _where(clause: str, value: object) -> Condition:
    """A filter that applies only when its value was given."""
    return None if value is None else (clause, (value,))


def _join(conditions: Iterable[Condition]) -> tuple[str, list[object]]:
    given = [condition for condition in conditions if condition is not None]
    params = [param for _, values in given for param in values]
    return (" WHERE " + " AND ".join(clause for clause, _ in given) if given else ""), params
