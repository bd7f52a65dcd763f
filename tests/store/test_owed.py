"""A subscriber's filter counted in SQL (relay/store/ops/owed.py) owes the events the filter itself takes, on both
backends, and a count stops at the matches it asks for: shedding finds a filtered backlog over its bound however
many events its filter passes over."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from relay.domain.clock import utc_now
from relay.domain.events import Event
from relay.domain.filters import Filter
from relay.domain.subscribers import SubscriberState
from relay.store import store_for
from relay.store.records import Target
from tests.conftest import job_body, record
from tests.databases import values
from tests.store.test_event_log import spec

TYPES = ("cos.job.succeeded", "cos.job.failed", "cos.workflow.succeeded")
TAGS = ("Transcode", "Snapshot", None)
KEYS = ("videos/a.mp4", "videos/b/c.mp4", "audio/a.mp3", "", None)

#: Events with every combination of the attributes filters look at.
EVENTS = [
    Event(f"event-{n}", kind, None, f"item-{n}", b"", tag, "Success", "queue-1", "bucket-1", key)
    for n, (kind, tag, key) in enumerate(itertools.product(TYPES, TAGS, KEYS))
]


def write(db: Target, statement: str, rows: list[tuple[object, ...]]) -> None:
    """``statement`` (``?`` for each value) once per row, committed."""
    if isinstance(db, Path):
        with contextlib.closing(sqlite3.connect(db)) as conn, conn:
            conn.executemany(statement, rows)
        return
    with psycopg.connect(db.url) as server:
        server.cursor().executemany(statement.replace("?", "%s"), rows)


def log(db: Target, events: list[Event]) -> None:
    """Append ``events`` to the log as ingest would have (no body: filters never read it)."""
    [(head, callback_id)] = values(db, "SELECT max(position), min(callback_id) FROM events")
    write(
        db,
        "INSERT INTO events(id, item_key, type, callback_id, created_at, tag, state, queue_id, bucket, object_key,"
        " position) VALUES (?, ?, ?, ?, '', ?, ?, ?, ?, ?, ?)",
        [
            (e.id, e.item_key, e.type, callback_id, e.tag, e.state, e.queue_id, e.bucket, e.object_key, head + n)
            for n, e in enumerate(events, start=1)
        ],
    )


@pytest.mark.parametrize(
    "kept",
    [
        Filter(("cos.job.*",)),
        Filter(("cos.job.failed", "cos.workflow.*")),
        Filter(("cos.jbo.*",)),  # stored before types were checked: it takes nothing
        Filter(("*",), {"tag": "Transcode"}),
        Filter(("cos.job.*",), {"object_prefix": "videos/"}),
        Filter(("*",), {"object_prefix": ""}),
        Filter(("*",), {"tag": "Snapshot", "object_prefix": "videos/b", "bucket": "bucket-1"}),
        Filter(("*",), {"queue_id": "queue-2"}),
    ],
    ids=str,
)
def test_a_filter_counted_in_sql_owes_exactly_the_events_it_takes(database: Target, kept: Filter) -> None:
    at = utc_now()
    with store_for(database) as store:
        asyncio.run(record(store, job_body(0), at=at))  # the log's first event, before the subscriber
        store.add_subscriber(replace(spec("hook"), filter=kept), at)
        log(database, EVENTS)
        assert store.count_deliveries("pending") == sum(kept.matches(event) for event in EVENTS)


def test_shedding_finds_a_filtered_backlog_over_its_bound_when_its_filter_passes_most_events(
    database: Target,
) -> None:
    at = utc_now()
    with store_for(database) as store:
        store.add_subscriber(spec("failures", ("cos.job.failed",)), at)
        store.set_subscriber_state("failures", SubscriberState.PAUSED, at)
        # One failure in four: the first bound + 1 events hold a single one.
        states = (["Success"] * 3 + ["Failed"]) * 6
        for number, state in enumerate(states):
            asyncio.run(record(store, job_body(number, state), at=at))
        assert store.count_deliveries("pending") == 6
        assert asyncio.run(store.drop_backlog(3, 10, at)) == {"failures": 3}
        assert (store.count_deliveries("pending"), store.count_deliveries("dropped")) == (3, 3)
