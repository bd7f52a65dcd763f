"""Rows into what the layers above see, the same from either backend: both select these columns by name.

The SQL is written once (`relay.store.ops`); the shape of a subscriber and of a job in the API is one
definition here, whichever backend read the row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any, Protocol, TypeVar

import orjson

from relay.domain.callback import Callback, Received
from relay.domain.destinations import ContentMode, Kind, parse_rate
from relay.domain.filters import Filter
from relay.domain.subscribers import Subscriber, SubscriberState
from relay.store.answers import Confirmation, Job, JobState, JobWithHistory
from relay.store.formats import when
from relay.store.records import Page, StoredToken

Item = TypeVar("Item")


class Row(Protocol):
    """A result row read by column name (or taken whole, in column order): `sqlite3.Row` and `asyncpg.Record`
    both are."""

    def __getitem__(self, key: str, /) -> Any: ...

    def __iter__(self) -> Iterator[Any]: ...

    def keys(self) -> Iterable[str]: ...


SUBSCRIBER_COLUMNS = (
    "id, name, url, secret, previous_secret, previous_secret_expires_at, types, filters, state, disabled_reason,"
    " failing_since, max_in_flight, timeout, retry_schedule, source, created_at, store_response, kind, rate,"
    " handshake, content_mode, template"
)
#: A job's row (``j``) with the history row of its current state (``s``), which holds its Code and Message; rows
#: written before migration m013 hold their own (``state_id`` NULL).
JOB_FROM = "jobs j LEFT JOIN job_states s ON s.id = j.state_id"
JOB_COLUMNS = (
    "j.job_id, j.state, j.tag, j.queue_id, coalesce(s.code, j.code) AS code,"
    " coalesce(s.message, j.message) AS message, j.bucket, j.object_key, j.region, j.workflow_run_id,"
    " j.creation_time, j.creation_time_raw, j.start_time, j.start_time_raw, j.end_time, j.end_time_raw,"
    " j.first_seen_at, j.updated_at, j.callback_id, j.state_id"
)


#: Ids are 64-bit signed integers on both backends (a larger one would overflow the binding): a page with no
#: cursor starts below this.
MAX_ID = 2**63 - 1
#: States of its history a job's JSON carries (the latest); `Store.job_history` pages through all of them.
JOB_HISTORY = 20
HISTORY_COLUMNS = "id, state, code, message, end_time, end_time_raw, received_at, callback_id"


def history_entry(row: Row) -> JobState:
    """One state of a job's history as the API shows it (its row id is only a cursor)."""
    return {
        "state": row["state"],
        "code": row["code"],
        "message": row["message"],
        "end_time": row["end_time"],
        "end_time_raw": row["end_time_raw"],
        "received_at": row["received_at"],
        "callback_id": row["callback_id"],
    }


#: Characters one page of a listing carries at most (past its first row), whatever ``limit`` asks. Every field
#: is bounded (the schema, the quarantine's clip), yet 500 rows of the largest would be 23 MB; real rows are a
#: few hundred characters, so only pages of hostile rows end early, and ``next_cursor`` goes on from there.
PAGE_CHARS = 1 << 20


def take(rows: Iterable[Row], limit: int, size: Callable[[Row], int]) -> tuple[list[Row], bool]:
    """One page of ``rows``: up to ``limit`` (reading no further than needed), fewer once they hold `PAGE_CHARS`
    characters by ``size``; and whether rows are left."""
    kept: list[Row] = []
    total = 0
    for row in rows:
        total += size(row)
        if len(kept) == limit or (kept and total > PAGE_CHARS):
            return kept, True
        kept.append(row)
    return kept, False


def text_size(*columns: str) -> Callable[[Row], int]:
    """A row's size for `take`: the characters in its unbounded-by-pattern text ``columns``."""
    return lambda row: sum(len(row[column] or "") for column in columns)


def newest_first(
    rows: Iterable[Row], limit: int, shape: Callable[[Row], Item], size: Callable[[Row], int]
) -> Page[Item]:
    """A page of ``rows`` (fetched newest first, at least ``limit + 1`` of them, each with an ``id``): its
    cursor is the last id shown when there are more."""
    kept, more = take(rows, limit, size)
    return Page([shape(row) for row in kept], str(kept[-1]["id"]) if more else None)


#: The sizes of rows in a page: their free-text columns (the rest are ids, times and labels of bounded shape).
JOB_TEXT = text_size("code", "message", "bucket", "object_key", "region")
STATE_TEXT = text_size("code", "message")
NO_TEXT = text_size()
RUN_TEXT = text_size("workflow_name", "bucket", "object_key")
_CALLBACK_TEXT = text_size("content_type", "dedup_key", "reason", "error_path")


def callback_size(body_prefix: int) -> Callable[[Row], int]:
    """The size of a raw callback's row in a page that shows ``body_prefix`` bytes of each body."""
    return lambda row: min(row["size"], body_prefix) + _CALLBACK_TEXT(row)


def with_history(job: Job, detail: bytes, rows: list[Row], confirmation: Confirmation | None) -> JobWithHistory:
    """``job`` with its ``detail`` and its latest `JOB_HISTORY` states (``rows``: newest first, one more if there
    are), oldest first as ever, and ``history_next_cursor`` for `Store.job_history` when older ones exist; its
    ``confirmation`` (None unless its state came for a COS source with confirm)."""
    page = newest_first(rows, JOB_HISTORY, history_entry, STATE_TEXT)
    history = page.items[::-1]
    return JobWithHistory(
        **job, detail=detail, history=history, history_next_cursor=page.cursor, confirmation=confirmation
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
        kind=Kind(row["kind"]),
        rate=None if row["rate"] is None else parse_rate(row["rate"]),
        handshake=bool(row["handshake"]),
        content_mode=ContentMode(row["content_mode"]),
        template=row["template"],
    )


def signing_secrets(row: Row, stamp: str) -> tuple[str, ...]:
    """The subscriber's secret, and its previous one while the rotation's grace lasts (``stamp``: now)."""
    if row["previous_secret"] and (row["previous_secret_expires_at"] or "") > stamp:
        return (row["secret"], row["previous_secret"])
    return (row["secret"],)


def job_json(row: Row) -> Job:
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


def callback_columns(received: Received, callback: Callback, at: str) -> tuple[object, ...]:
    """A callback row's received_at, source_addr, content_type, format, size and event_name."""
    return (at, received.source_addr, received.content_type, received.format, len(received.body), callback.event_name)


def stored_token(
    current: tuple[str, str | None] | None,
    previous: tuple[str, str | None] | None,
    source: Row | None,
    at: datetime,
) -> StoredToken:
    """One token as the secrets table keeps it (value and expiry, the one in force and the one before a
    rotation) with its `token_sources` row: the previous one only while its grace lasts at ``at``."""
    until = when(previous[1]) if previous is not None else None
    live = previous is not None and until is not None and until > at
    return StoredToken(
        value=None if current is None else current[0],
        previous=previous[0] if live and previous is not None else None,
        previous_until=until if live else None,
        source=None if source is None else source["source"],
        fingerprint=None if source is None else source["fingerprint"],
    )
