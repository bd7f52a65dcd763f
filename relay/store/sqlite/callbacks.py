"""Recording callbacks: the raw body, job and workflow state, their events and deliveries, and the quarantine."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence

import orjson

from relay.domain.callback import (
    MAX_JOB_STATES,
    Callback,
    IngestResult,
    JobState,
    Received,
    Timestamp,
    WorkflowRun,
    history_full,
)
from relay.domain.errors import Rejected
from relay.domain.fanout import Owed
from relay.store.formats import iso, refusal, to_json
from relay.store.rows import callback_columns
from relay.store.sqlite.deliveries import insert_owed
from relay.store.sqlite.packing import pack
from relay.store.sqlite.subscribers import subscribers_version


def record_callback(
    conn: sqlite3.Connection,
    received: Received,
    callback: Callback,
    owed: Sequence[Owed],
    version: tuple[object, ...] | None,
) -> IngestResult | None:
    """Store the raw callback, every new job state, workflow state and NonExistJobIds set it carries, and
    the events of the new items with their deliveries (transactional outbox: if this commits, they exist).

    ``owed`` was matched against the subscribers at ``version``: if they changed since, nothing is
    written and the answer is None (match again against a fresh snapshot).
    """
    if subscribers_version(conn) != version:
        return None
    at = iso(received.received_at)
    digest = hashlib.sha256(received.body).digest()
    # The write lock is held (BEGIN IMMEDIATE): the claims below find the ledger as this check saw it.
    if _all_seen(conn, callback.dedup_keys):
        return IngestResult(_insert_duplicate(conn, received, callback, at, digest), "duplicate", (), 0)
    callback_id = _insert_callback(conn, received, callback, at, digest)
    new_items: list[str] = []
    for position, job in enumerate(callback.jobs, 1):
        if _claim_item(conn, job.dedup_key, "job", job.job_id, job.state, callback_id, at):
            if _states(conn, job.job_id) >= MAX_JOB_STATES:
                raise history_full(job.job_id, position)  # the writer undoes this write alone
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
    new = set(new_items)
    deliveries = insert_owed(conn, [o for o in owed if o.event.item_key in new], callback_id, at)
    return IngestResult(callback_id, "accepted", tuple(new_items), deliveries)


def _all_seen(conn: sqlite3.Connection, keys: Sequence[str]) -> bool:
    """Whether every item the callback carries is already in the ledger: a duplicate, known before storing it."""
    unique = sorted(set(keys))
    if not unique:
        return True
    marks = ",".join("?" * len(unique))
    seen = conn.execute(f"SELECT count(*) FROM items WHERE dedup_key IN ({marks})", unique).fetchone()[0]
    return bool(seen == len(unique))


def _insert_duplicate(conn: sqlite3.Connection, received: Received, callback: Callback, at: str, digest: bytes) -> int:
    """A duplicate's row: a reference to the first kept copy of the same bytes (its dedup keys too: same bytes,
    same items), or its own copy if none is."""
    first = conn.execute("SELECT id FROM callbacks WHERE body_sha256 = ? ORDER BY id LIMIT 1", (digest,)).fetchone()
    if first is None:
        return _insert_callback(conn, received, callback, at, digest, "duplicate")
    cursor = conn.execute(
        "INSERT INTO callbacks(received_at, source_addr, content_type, format, size, event_name, outcome,"
        " body_ref, body_truncated) VALUES (?, ?, ?, ?, ?, ?, 'duplicate', ?, 0)",
        (*callback_columns(received, callback, at), first[0]),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def _insert_callback(
    conn: sqlite3.Connection,
    received: Received,
    callback: Callback,
    at: str,
    digest: bytes,
    outcome: str = "accepted",
) -> int:
    cursor = conn.execute(
        "INSERT INTO callbacks(received_at, source_addr, content_type, format, size, event_name, dedup_key,"
        " outcome, body, body_packed, body_sha256, body_truncated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, 0)",
        (
            *callback_columns(received, callback, at),
            " ".join(callback.dedup_keys),
            outcome,
            pack(received.body),
            digest,
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


def _states(conn: sqlite3.Connection, job_id: str) -> int:
    """How many states the job's history holds, counting up to the bound (a short range of an index)."""
    return int(
        conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM job_states WHERE job_id = ? LIMIT ?)", (job_id, MAX_JOB_STATES)
        ).fetchone()[0]
    )


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
        " end_time_raw, detail, detail_packed, first_seen_at, updated_at, callback_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?)"
        " ON CONFLICT(job_id) DO UPDATE SET state = excluded.state, tag = excluded.tag,"
        " queue_id = excluded.queue_id, code = excluded.code, message = excluded.message,"
        " bucket = excluded.bucket, object_key = excluded.object_key, region = excluded.region,"
        " workflow_run_id = excluded.workflow_run_id, creation_time = excluded.creation_time,"
        " creation_time_raw = excluded.creation_time_raw, start_time = excluded.start_time,"
        " start_time_raw = excluded.start_time_raw, end_time = excluded.end_time,"
        " end_time_raw = excluded.end_time_raw, detail = excluded.detail, detail_packed = 1,"
        " updated_at = excluded.updated_at,"
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
            pack(orjson.dumps(job.detail)),
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
            to_json(run.detail),
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
                to_json(task),
            )
            for position, task in enumerate(run.tasks)
        ],
    )


def record_rejection(conn: sqlite3.Connection, received: Received, error: Rejected, prefix_limit: int) -> int:
    """Quarantine a refused body: reason, size, type, source and a bounded prefix."""
    cursor = conn.execute(
        "INSERT INTO callbacks(received_at, source_addr, content_type, format, size, outcome, reason,"
        " error_path, body, body_truncated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            iso(received.received_at),
            received.source_addr,
            received.content_type,
            received.format,
            len(received.body),
            error.outcome,
            *refusal(error),
            received.body[:prefix_limit],
            int(len(received.body) > prefix_limit),
        ),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid
