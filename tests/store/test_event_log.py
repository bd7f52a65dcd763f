"""The event log of the lazy outbox (docs/design/lazy-outbox.md), the same on both backends: every event takes the
next position in commit order, with the attributes filters look at; a subscriber's cursor and filter start at
the log's head when it is added, a changed filter applies from the head at the change; a database made before
the log migrates and keeps every delivery it owed."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from relay.deliver.signing import generate_secret
from relay.deliver.worker import LEASE_MARGIN
from relay.domain.clock import utc_now
from relay.domain.filters import Filter
from relay.domain.subscribers import SubscriberSpec
from relay.store import store_for
from relay.store.formats import iso
from relay.store.ops.deliveries import LOG_LOCK
from relay.store.records import PostgresUrl, Target
from tests.conftest import job_body, record
from tests.databases import rows, values


def spec(name: str, types: tuple[str, ...] = ("*",)) -> SubscriberSpec:
    return SubscriberSpec(name, f"http://127.0.0.1:9/{name}", generate_secret(), Filter(types))


def positions(db: Target) -> list[tuple[str, int]]:
    return [
        (row[0], row[1])
        for row in values(db, "SELECT item_key, position FROM events WHERE position IS NOT NULL ORDER BY position")
    ]


def test_events_take_the_next_positions_in_the_order_they_commit_with_what_filters_look_at(
    database: Target,
) -> None:
    with store_for(database) as store:
        for number in range(3):
            asyncio.run(record(store, job_body(number)))
        asyncio.run(record(store, job_body(0)))  # a duplicate: no event, no position
    logged = positions(database)
    assert [position for _, position in logged] == [1, 2, 3]
    assert len({key for key, _ in logged}) == 3
    first = rows(database, "SELECT type, tag, state, queue_id, bucket FROM events WHERE position = 1")[0]
    assert first == {
        "type": "cos.job.succeeded",
        "tag": "Transcode",
        "state": "Success",
        "queue_id": "pe820cf648126910f305549c39b7b7183",
        "bucket": "examplebucket-1250000000",
    }


def test_a_subscriber_added_later_starts_at_the_head_of_the_log(database: Target) -> None:
    at = utc_now()
    with store_for(database) as store:
        early = store.add_subscriber(spec("early"), at)
        asyncio.run(record(store, job_body(0), job_body(1), at=at))
        late = store.add_subscriber(spec("late", ("cos.job.failed",)), at)
    cursors = values(database, "SELECT subscriber_id, acked, leased FROM cursors ORDER BY subscriber_id")
    assert cursors == [(early.id, 0, 0), (late.id, 2, 2)]
    assert values(database, "SELECT subscriber_id, from_position, types FROM filters ORDER BY subscriber_id") == [
        (early.id, 0, '["*"]'),
        (late.id, 2, '["cos.job.failed"]'),
    ]


def test_a_changed_filter_applies_from_the_head_of_the_log_at_the_change(database: Target) -> None:
    at = utc_now()
    with store_for(database) as store:
        hook = store.add_subscriber(spec("hook"), at)
        asyncio.run(record(store, job_body(0), at=at))
        store.update_subscriber("hook", {"types": ("cos.job.failed",)}, at)
        store.update_subscriber("hook", {"filters": {"tag": "Transcode"}}, at)  # the same head: replaces it
        store.update_subscriber("hook", {"max_in_flight": 3}, at)  # not a filter: no history
        asyncio.run(record(store, job_body(1), at=at))
        store.update_subscriber("hook", {"types": ("*",), "filters": {}}, at)
    history = values(database, "SELECT from_position, types, filters FROM filters WHERE subscriber_id = ?", hook.id)
    assert sorted(history) == [
        (0, '["*"]', "{}"),
        (1, '["cos.job.failed"]', '{"tag":"Transcode"}'),
        (2, '["*"]', "{}"),
    ]


def test_positions_follow_commit_order_across_two_writers(database: Target) -> None:
    """A writer holding the log (PostgreSQL: another replica between its events' insert and its commit) makes the
    next one wait: the later commit always has the later position, so no reader sees a hole filled after."""
    if not isinstance(database, PostgresUrl):
        pytest.skip("SQLite has one writer at a time: its commit order is its order of writing")
    with store_for(database) as store:
        asyncio.run(record(store, job_body(0)))
        with psycopg.connect(database.url) as other:
            other.execute("SELECT pg_advisory_xact_lock(%s)", (LOG_LOCK,))
            writer = threading.Thread(target=lambda: asyncio.run(record(store, job_body(1))))
            writer.start()
            with psycopg.connect(database.url) as watcher:
                while not watcher.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                ).fetchone()[0]:  # type: ignore[index]
                    assert writer.is_alive()
            other.execute(
                "INSERT INTO events(id, item_key, type, callback_id, created_at, position)"
                " SELECT 'other', 'other', 'cos.job.succeeded', 1, '', max(position) + 1 FROM events"
            )
            other.commit()
            writer.join()
    logged = positions(database)
    assert [position for _, position in logged] == [1, 2, 3]
    assert logged[1][0] == "other"  # committed first, so before the writer that waited for it


def as_before_m017(db: Target) -> None:
    """Take the event log away as the release before it had none, so that the next open migrates."""
    steps = [
        "DROP INDEX events_by_position",
        *(f"ALTER TABLE events DROP COLUMN {c}" for c in ("position", "tag", "state", "queue_id", "bucket")),
        "DROP TABLE cursors",
        "DROP TABLE filters",
        "DROP TABLE gaps",
    ]
    if isinstance(db, Path):
        with sqlite3.connect(db) as file:
            for step in steps:
                file.execute(step)
            file.execute("DELETE FROM _sqlite_migrations WHERE name = 'm017_event_log'")
        return
    with psycopg.connect(db.url) as server:
        for step in steps:
            server.execute(step.encode())
        server.execute("DELETE FROM relay_migrations WHERE version = 17")


def test_a_database_made_before_migrates_and_keeps_every_owed_delivery(database: Target) -> None:
    at = utc_now()
    with store_for(database) as store:
        hook = store.add_subscriber(spec("hook"), at)
        other = store.add_subscriber(spec("other"), at)
        asyncio.run(record(store, *(job_body(number) for number in range(6)), at=at))
        gone = store.add_subscriber(spec("gone"), at)
        store.remove_subscriber("gone", at)
    ids = [row[0] for row in values(database, "SELECT id FROM deliveries WHERE subscriber_id = ? ORDER BY id", hook.id)]
    # Today's states: two pending, one in flight whose worker died, one dead, one dropped, one confirming.
    for delivery_id, state in zip(ids[2:], ("in_flight", "dead", "dropped", "confirming"), strict=True):
        _set_state(database, delivery_id, state, at - timedelta(hours=1))
    as_before_m017(database)
    with store_for(database) as store:  # migrates
        assert values(database, "SELECT subscriber_id, acked, leased FROM cursors ORDER BY subscriber_id") == [
            (hook.id, 0, 0),
            (other.id, 0, 0),
        ]
        assert values(database, "SELECT count(*) FROM filters WHERE from_position = 0") == [(2,)]
        assert values(database, "SELECT count(*) FROM events WHERE position IS NULL") == [(6,)]
        claimed = asyncio.run(store.claim(at, LEASE_MARGIN, 100))
        again = asyncio.run(store.claim(at, LEASE_MARGIN, 100))
        asyncio.run(record(store, job_body(6), at=at))
    mine = sorted(claim.delivery_id for claim in claimed if claim.subscriber_id == hook.id)
    assert mine == sorted([*ids[:3]])  # pending and the expired lease: each once
    assert len([claim for claim in claimed if claim.subscriber_id == other.id]) == 6
    assert again == []
    states = dict(values(database, "SELECT id, state FROM deliveries WHERE subscriber_id = ?", hook.id))
    assert [states[i] for i in ids[3:]] == ["dead", "dropped", "confirming"]
    assert gone.id not in {row[0] for row in values(database, "SELECT subscriber_id FROM cursors")}
    assert positions(database)[-1][1] == 1  # the log starts after the migration


def _set_state(db: Target, delivery_id: int, state: str, lease_expired_at: datetime) -> None:
    expires = iso(lease_expired_at)
    if isinstance(db, Path):
        with sqlite3.connect(db) as file:
            file.execute(
                "UPDATE deliveries SET state = ?, lease_expires_at = ? WHERE id = ?", (state, expires, delivery_id)
            )
        return
    with psycopg.connect(db.url) as server:
        server.execute(
            "UPDATE deliveries SET state = %s, lease_expires_at = %s WHERE id = %s", (state, expires, delivery_id)
        )
