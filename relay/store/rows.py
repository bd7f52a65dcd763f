"""Rows into what the layers above see, the same from either backend: both select these columns by name.

Each backend keeps its own SQL (relay/store/sqlite, relay/store/postgres); the shape of a subscriber and of
a job in the API is one definition here, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from relay.domain.filters import Filter
from relay.domain.subscribers import Subscriber, SubscriberState
from relay.store.formats import when


class Row(Protocol):
    """A result row read by column name: `sqlite3.Row` and `asyncpg.Record` both are."""

    def __getitem__(self, key: str, /) -> Any: ...


SUBSCRIBER_COLUMNS = (
    "id, name, url, secret, previous_secret, previous_secret_expires_at, types, filters, state, disabled_reason,"
    " failing_since, max_in_flight, timeout, retry_schedule, source, created_at, store_response"
)
JOB_COLUMNS = (
    "job_id, state, tag, queue_id, code, message, bucket, object_key, region, workflow_run_id,"
    " creation_time, creation_time_raw, start_time, start_time_raw, end_time, end_time_raw,"
    " first_seen_at, updated_at, callback_id"
)


def subscriber_from(row: Row) -> Subscriber:
    schedule = orjson.loads(row["retry_schedule"]) if row["retry_schedule"] else None
    return Subscriber(
        id=row["id"],
        name=row["name"],
        url=row["url"],
        secret=row["secret"],
        filter=Filter(tuple(orjson.loads(row["types"])), orjson.loads(row["filters"])),
        state=SubscriberState(row["state"]),
        max_in_flight=row["max_in_flight"],
        timeout=row["timeout"],
        retry_schedule=tuple(schedule) if schedule is not None else None,
        previous_secret=row["previous_secret"],
        previous_secret_expires_at=when(row["previous_secret_expires_at"]),
        disabled_reason=row["disabled_reason"],
        failing_since=when(row["failing_since"]),
        created_at=when(row["created_at"]),
        source=row["source"],
        store_response=bool(row["store_response"]),
    )


def signing_secrets(row: Row, stamp: str) -> tuple[str, ...]:
    """The subscriber's secret, and its previous one while the rotation's grace lasts (``stamp``: now)."""
    if row["previous_secret"] and (row["previous_secret_expires_at"] or "") > stamp:
        return (row["secret"], row["previous_secret"])
    return (row["secret"],)


def job_json(row: Row) -> dict[str, Any]:
    """A job as the API shows it, without its typed detail (each backend stores that its own way)."""
    return {
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
