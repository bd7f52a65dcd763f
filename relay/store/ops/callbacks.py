"""Recording callbacks: the raw body, job and workflow state, their events and deliveries, and the quarantine."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

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
from relay.domain.confirm import ToConfirm
from relay.domain.errors import Rejected
from relay.domain.events import Event
from relay.store.db import Db
from relay.store.detail import RUN_HELD, stored, without
from relay.store.formats import iso, refusal, to_json
from relay.store.ops.confirmations import hold
from relay.store.ops.log import insert_events
from relay.store.rows import callback_columns


async def record_callback(
    db: Db, received: Received, callback: Callback, events: Sequence[Event], confirm: Sequence[ToConfirm] = ()
) -> IngestResult:
    """Store the raw callback, every new job state, workflow state and NonExistJobIds set it carries, and
    the events of the new items in the log (transactional outbox: if this commits, every delivery they are owed
    exists, through the subscribers' cursors). The new ones among the jobs to ``confirm`` wait for COS: their
    deliveries are rows, held (`confirmations.hold`).

    Which subscribers an event is owed to is the log's business (a cursor, the filter in force at its position),
    not the ingest's: nothing here reads the subscribers but whether one is enabled (to wake the delivery worker)
    and, for the events held, which ones they are owed to.
    """
    at = iso(received.received_at)
    digest = hashlib.sha256(received.body).digest()
    stored = await _store_unless_duplicate(db, received, callback, at, digest)
    # SQLite holds the write lock (BEGIN IMMEDIATE): the claims below find the ledger as this check saw it.
    if stored is None:
        return IngestResult(await _insert_duplicate(db, received, callback, at, digest), "duplicate", (), 0)
    callback_id, claimable = stored
    new_items: list[str] = []
    for position, job in enumerate(callback.jobs, 1):
        if await _claim_job(db, job, position, callback_id, at):
            new_items.append(job.dedup_key)
    for run in callback.workflows:
        if await _claim_item(db, run.dedup_key, "workflow", run.run_id, run.state, callback_id, at):
            await _record_workflow(db, run, callback_id, at)
            new_items.append(run.dedup_key)
    key = callback.nonexistent_dedup_key
    if key and await _claim_item(db, key, "nonexistent", None, None, callback_id, at):
        await db.executemany(
            "INSERT INTO nonexistent_job_ids(job_id, callback_id, received_at) VALUES (?, ?, ?)",
            [(job_id, callback_id, at) for job_id in callback.nonexistent_job_ids],
        )
        new_items.append(key)
    if not new_items:  # another PostgreSQL replica claimed its items between the check above and the claims
        await db.execute("UPDATE callbacks SET outcome = 'duplicate' WHERE id = ?", callback_id)
        return IngestResult(callback_id, "duplicate", (), 0)
    new = set(new_items)
    logged = [event for event in events if event.item_key in new]
    await insert_events(db, logged, callback_id, at)
    await hold(db, callback_id, [job for job in confirm if job.item_key in new], logged, at)
    return IngestResult(callback_id, "accepted", tuple(new_items), len(logged), claimable)


async def _store_unless_duplicate(
    db: Db, received: Received, callback: Callback, at: str, digest: bytes
) -> tuple[int, bool] | None:
    """The id of the callback's row, stored unless every item it carries is already in the ledger (a duplicate,
    known before storing it: None), and whether an enabled subscriber exists. One statement, on both backends."""
    unique = sorted(set(callback.dedup_keys))
    among, keys = db.dialect.among("dedup_key", unique, "text")
    insert, values = _callback_row(db, received, callback, at, digest, "accepted")
    row = await db.fetchrow(
        f"{insert} SELECT {', '.join('?' * len(values))} WHERE (SELECT count(*) FROM items WHERE {among}) < ?"
        " RETURNING id, EXISTS (SELECT 1 FROM subscribers WHERE state = 'enabled' AND removed_at IS NULL) AS claimable",
        *values,
        *keys,
        len(unique),
    )
    return None if row is None else (int(row["id"]), bool(row["claimable"]))


async def _insert_duplicate(db: Db, received: Received, callback: Callback, at: str, digest: bytes) -> int:
    """A duplicate's row: a reference to the first kept copy of the same bytes (its dedup keys too: same bytes,
    same items), or its own copy if none is."""
    first = await db.fetchval("SELECT id FROM callbacks WHERE body_sha256 = ? ORDER BY id LIMIT 1", digest)
    if first is None:
        return await _insert_callback(db, received, callback, at, digest, "duplicate")
    return int(
        await db.fetchval(
            "INSERT INTO callbacks(received_at, source_addr, content_type, format, size, event_name, outcome,"
            " body_ref, body_truncated) VALUES (?, ?, ?, ?, ?, ?, 'duplicate', ?, 0) RETURNING id",
            *callback_columns(received, callback, at),
            first,
        )
    )


async def _insert_callback(
    db: Db, received: Received, callback: Callback, at: str, digest: bytes, outcome: str = "accepted"
) -> int:
    insert, values = _callback_row(db, received, callback, at, digest, outcome)
    return int(await db.fetchval(f"{insert} VALUES ({', '.join('?' * len(values))}) RETURNING id", *values))


def _callback_row(
    db: Db, received: Received, callback: Callback, at: str, digest: bytes, outcome: str
) -> tuple[str, tuple[object, ...]]:
    """The INSERT (without its values) of a callback's row with its body, and the values."""
    column, value = db.dialect.packed_insert("body")
    insert = (
        "INSERT INTO callbacks(received_at, source_addr, content_type, format, size, event_name, dedup_key,"
        f" outcome, body, body_sha256, body_truncated{column})"
    )
    values = (
        *callback_columns(received, callback, at),
        " ".join(callback.dedup_keys),
        outcome,
        db.dialect.pack(received.body),
        digest,
        0,
        *([1] if value else []),
    )
    return insert, values


#: Takes an item of the dedup ledger: one row inserted if it was new, none if it was claimed before.
_CLAIM = (
    "INSERT INTO items(dedup_key, kind, subject, state, callback_id, received_at) VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT(dedup_key) DO NOTHING"
)
#: How many states a job's history holds (``held``), counting up to the bound (a short range of an index).
#: PostgreSQL replicas recording new states of one job at the same moment may each see room for one more: the
#: history can pass the bound by the number of replicas, never grow without one.
_STATES = "SELECT count(*) AS held FROM (SELECT 1 FROM job_states WHERE job_id = ? LIMIT ?) AS states"


async def _claim_item(
    db: Db, key: str, kind: str, subject: str | None, state: str | None, callback_id: int, at: str
) -> bool:
    return await db.execute(_CLAIM, key, kind, subject, state, callback_id, at) == 1


def _times(stamp: Timestamp | None) -> tuple[str | None, str | None]:
    return (stamp.iso, stamp.raw) if stamp else (None, None)


async def _claim_job(db: Db, job: JobState, position: int, callback_id: int, at: str) -> bool:
    """Claim the job state's item and record it: its history row and the job's current row. False when the item
    was claimed before; `history_full` (inside the transaction: it rolls back) when the job's history is full.

    The state's Code and Message are kept once, in its history row: the job's row refers to the row of its
    current state (``state_id``) and its detail leaves them out (`relay.store.detail`). On PostgreSQL the claim,
    the count of the history and both rows are one statement (one round trip instead of four), its rows written
    only if the item was new and the history had room; on SQLite, a statement each as the answers come."""
    claim = (job.dedup_key, "job", job.job_id, job.state, callback_id, at)
    end, end_raw = _times(job.end_time)
    states = (job.job_id, job.state, job.code, job.message, end, end_raw, at, callback_id)
    column, value = db.dialect.packed_insert("detail")
    detail = stored(job)
    values = (
        job.job_id,
        job.state,
        job.tag,
        job.queue_id,
        job.bucket,
        job.object_key,
        job.region,
        job.workflow_run_id,
        *_times(job.creation_time),
        *_times(job.start_time),
        end,
        end_raw,
        detail.decode() if db.dialect.postgres else db.dialect.pack(detail),
        at,
        at,
        callback_id,
    )
    history = "INSERT INTO job_states(job_id, state, code, message, end_time, end_time_raw, received_at, callback_id)"
    current = (
        "INSERT INTO jobs(job_id, state, tag, queue_id, bucket, object_key, region,"
        " workflow_run_id, creation_time, creation_time_raw, start_time, start_time_raw, end_time,"
        f" end_time_raw, detail{column}, first_seen_at, updated_at, callback_id, state_id)"
    )
    fields = f"?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?{value}, ?, ?, ?"
    repacked = f"{column} = 1" if column else ""  # an older row's detail may have been stored unpacked
    # Callbacks can arrive out of order: the row keeps the state with the latest EndTime. Its code and message
    # columns are only read in rows written before the history held them alone (state_id NULL): emptied here.
    newest = (
        " ON CONFLICT(job_id) DO UPDATE SET state = excluded.state, tag = excluded.tag,"
        " queue_id = excluded.queue_id, code = NULL, message = NULL,"
        " bucket = excluded.bucket, object_key = excluded.object_key, region = excluded.region,"
        " workflow_run_id = excluded.workflow_run_id, creation_time = excluded.creation_time,"
        " creation_time_raw = excluded.creation_time_raw, start_time = excluded.start_time,"
        " start_time_raw = excluded.start_time_raw, end_time = excluded.end_time,"
        f" end_time_raw = excluded.end_time_raw, detail = excluded.detail{repacked},"
        " updated_at = excluded.updated_at, callback_id = excluded.callback_id, state_id = excluded.state_id"
        " WHERE jobs.end_time IS NULL OR excluded.end_time IS NULL OR excluded.end_time >= jobs.end_time"
    )
    if db.dialect.postgres:
        row = await db.fetchrow(
            f"WITH claimed AS ({_CLAIM} RETURNING 1), counted AS ({_STATES}),"
            f" history AS ({history} SELECT ?, ?, ?, ?, ?, ?, ?, ?"
            " WHERE EXISTS (SELECT 1 FROM claimed) AND (SELECT held FROM counted) < ? RETURNING id),"
            f" current AS ({current} SELECT {fields}, id FROM history{newest})"
            " SELECT (SELECT count(*) FROM claimed) AS claimed, (SELECT held FROM counted) AS held",
            *claim,
            job.job_id,
            MAX_JOB_STATES,
            *states,
            MAX_JOB_STATES,
            *values,
        )
        assert row is not None
        claimed, held = bool(row["claimed"]), int(row["held"])
    else:
        claimed = await db.execute(_CLAIM, *claim) == 1
        held = int(await db.fetchval(_STATES, job.job_id, MAX_JOB_STATES)) if claimed else 0
    if not claimed:
        return False
    if held >= MAX_JOB_STATES:
        raise history_full(job.job_id, position)
    if not db.dialect.postgres:  # PostgreSQL's statement above has written them
        state_id = await db.fetchval(f"{history} VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id", *states)
        await db.execute(f"{current} VALUES ({fields}, ?){newest}", *values, state_id)
    return True


async def _record_workflow(db: Db, run: WorkflowRun, callback_id: int, at: str) -> None:
    await db.execute(
        "INSERT INTO workflow_states(run_id, state, received_at, callback_id) VALUES (?, ?, ?, ?)",
        run.run_id,
        run.state,
        at,
        callback_id,
    )
    await db.execute(
        "INSERT INTO workflow_runs(run_id, workflow_id, workflow_name, state, bucket, object_key, create_time,"
        " create_time_raw, detail, first_seen_at, updated_at, callback_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT(run_id) DO UPDATE SET workflow_id = excluded.workflow_id,"
        " workflow_name = excluded.workflow_name, state = excluded.state, bucket = excluded.bucket,"
        " object_key = excluded.object_key, create_time = excluded.create_time,"
        " create_time_raw = excluded.create_time_raw, detail = excluded.detail,"
        " updated_at = excluded.updated_at, callback_id = excluded.callback_id",
        run.run_id,
        run.workflow_id,
        run.workflow_name,
        run.state,
        run.bucket,
        run.object_key,
        *_times(run.create_time),
        to_json(without(run.detail, RUN_HELD, run)),
        at,
        at,
        callback_id,
    )
    # A task's JSON is in the run's detail (Tasks): its row holds what lists and finds it, not a copy.
    await db.execute("DELETE FROM workflow_tasks WHERE run_id = ?", run.run_id)
    await db.executemany(
        "INSERT INTO workflow_tasks(run_id, position, job_id, type, name, state, create_time, end_time)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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
            )
            for position, task in enumerate(run.tasks)
        ],
    )


async def record_rejection(db: Db, received: Received, error: Rejected, prefix_limit: int) -> int:
    """Quarantine a refused body: reason, size, type, source and a bounded prefix."""
    return int(
        await db.fetchval(
            "INSERT INTO callbacks(received_at, source_addr, content_type, format, size, outcome, reason,"
            " error_path, body, body_truncated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            iso(received.received_at),
            received.source_addr,
            received.content_type,
            received.format,
            len(received.body),
            error.outcome,
            *refusal(error),
            received.body[:prefix_limit],
            int(len(received.body) > prefix_limit),
        )
    )
