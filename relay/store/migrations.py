"""Ordered, append-only schema steps for the SQLite store. Never edit an applied step: add one."""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("relay")


@migrations()
def m001_callbacks_and_jobs(db: Database) -> None:
    # Every body that reached the endpoint past auth and the size cap: accepted, duplicate or quarantined.
    db["callbacks"].create(
        {
            "id": int,
            "received_at": str,  # ISO-8601 UTC
            "source_addr": str,
            "content_type": str,
            "format": str,  # xml | json | unknown
            "size": int,
            "event_name": str,
            "outcome": str,  # accepted | duplicate | malformed | invalid | unsupported_type
            "reason": str,  # why it was rejected (NULL when accepted)
            "error_path": str,
            "dedup_key": str,  # the items' keys, space-separated
            "body": bytes,  # whole body when accepted; a bounded prefix when quarantined
            "body_truncated": int,
        },
        pk="id",
    )
    db["callbacks"].create_index(["outcome", "id"])
    db.create_view(
        "quarantine",
        "SELECT * FROM callbacks WHERE outcome NOT IN ('accepted', 'duplicate')",
    )
    # The dedup ledger: one row per job state, workflow state or NonExistJobIds set ever accepted.
    db["items"].create(
        {
            "dedup_key": str,
            "kind": str,  # job | workflow | nonexistent
            "subject": str,  # JobId or RunId
            "state": str,
            "callback_id": int,
            "received_at": str,
        },
        pk="dedup_key",
        foreign_keys=[("callback_id", "callbacks", "id")],
    )
    db["jobs"].create(
        {
            "job_id": str,
            "state": str,
            "tag": str,
            "queue_id": str,
            "code": str,
            "message": str,
            "bucket": str,
            "object_key": str,
            "region": str,
            "workflow_run_id": str,
            "creation_time": str,  # UTC; *_raw keeps what COS sent
            "creation_time_raw": str,
            "start_time": str,
            "start_time_raw": str,
            "end_time": str,
            "end_time_raw": str,
            "detail": str,  # typed JSON of the JobsDetail
            "first_seen_at": str,
            "updated_at": str,
            "callback_id": int,  # the callback that set the current state; orders "newest first"
        },
        pk="job_id",
    )
    for columns in (["callback_id"], ["state", "callback_id"], ["tag", "callback_id"], ["queue_id", "callback_id"]):
        db["jobs"].create_index(columns)
    db["job_states"].create(
        {
            "id": int,
            "job_id": str,
            "state": str,
            "code": str,
            "message": str,
            "end_time": str,
            "end_time_raw": str,
            "received_at": str,
            "callback_id": int,
        },
        pk="id",
        foreign_keys=[("callback_id", "callbacks", "id")],
    )
    db["job_states"].create_index(["job_id", "id"])
    db["workflow_runs"].create(
        {
            "run_id": str,
            "workflow_id": str,
            "workflow_name": str,
            "state": str,
            "bucket": str,
            "object_key": str,
            "create_time": str,
            "create_time_raw": str,
            "detail": str,
            "first_seen_at": str,
            "updated_at": str,
            "callback_id": int,
        },
        pk="run_id",
    )
    db["workflow_states"].create(
        {"id": int, "run_id": str, "state": str, "received_at": str, "callback_id": int},
        pk="id",
        foreign_keys=[("callback_id", "callbacks", "id")],
    )
    db["workflow_states"].create_index(["run_id", "id"])
    db["workflow_tasks"].create(
        {
            "run_id": str,
            "position": int,
            "job_id": str,
            "type": str,
            "name": str,
            "state": str,
            "create_time": str,
            "end_time": str,
            "detail": str,
        },
        pk=("run_id", "position"),
    )
    db["workflow_tasks"].create_index(["job_id"])
    db["nonexistent_job_ids"].create(
        {"id": int, "job_id": str, "callback_id": int, "received_at": str},
        pk="id",
        foreign_keys=[("callback_id", "callbacks", "id")],
    )
    db["nonexistent_job_ids"].create_index(["job_id"])
    # Generated tokens live here so a restart keeps the callback URL that was pasted into COS.
    db["secrets"].create({"name": str, "value": str, "created_at": str}, pk="name")
    # /readyz writes this one row: only a real write shows a read-only file or a full disk.
    db["heartbeat"].create({"id": int, "at": str}, pk="id")
