"""SQLite keeps raw bodies, event bodies and job details compressed, and gives every one back whole."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import orjson

from relay.deliver.signing import generate_secret
from relay.deliver.worker import LEASE_MARGIN
from relay.domain.clock import utc_now
from relay.domain.filters import Filter
from relay.domain.subscribers import SubscriberSpec
from relay.store import SqliteStore
from tests.conftest import ingest, job_body, job_id


def _gateway_database(db: Path) -> bytes:
    """A database with one subscriber and one accepted callback; the callback's body."""
    with SqliteStore(db) as store:
        store.add_subscriber(SubscriberSpec("hook", "http://127.0.0.1:9/hook", generate_secret(), Filter()), utc_now())
    ingest(db, job_body(1))
    return job_body(1)


def _read_everything(db: Path) -> dict[str, object]:
    with SqliteStore(db) as store:

        async def reads() -> dict[str, object]:
            [claim] = await store.claim(utc_now(), LEASE_MARGIN, 10)
            listed = await store.list_callbacks()
            job = await store.get_job(job_id(1))
            assert job is not None
            callbacks = await store.job_callbacks(job_id(1), body_prefix=100, limit=1, cursor=None)
            return {
                "claimed": claim.body,
                "event": store.event_body(claim.event_id),
                "events": store.event_bodies(limit=10),
                "listed": listed.items[0]["body_prefix"],
                "trail": callbacks.items[0]["body_prefix"],
                "detail": orjson.loads(job["detail"]),
            }

        return asyncio.run(reads())


def test_bodies_and_details_take_a_fraction_of_their_size_and_read_back_whole(tmp_path: Path) -> None:
    db = tmp_path / "relay.db"
    body = _gateway_database(db)
    with sqlite3.connect(db) as conn:
        stored = conn.execute("SELECT length(body) FROM callbacks").fetchone()[0]
        event_stored = conn.execute("SELECT length(body) FROM events").fetchone()[0]
    read = _read_everything(db)
    assert stored < len(body) / 2
    assert read["listed"] == body[:4096].decode()
    assert read["trail"] == body[:100].decode()
    event = read["claimed"]
    assert isinstance(event, bytes)
    assert event_stored < len(event) / 2
    assert read["event"] == event
    assert read["events"] == [event]
    assert read["detail"] == orjson.loads(event)["data"]  # the job's typed detail is the event's data


def test_rows_written_before_compression_are_read_as_they_were_stored(tmp_path: Path) -> None:
    db = tmp_path / "relay.db"
    body = _gateway_database(db)
    packed = _read_everything(db)
    with sqlite3.connect(db) as conn:  # as a release before migration m007 left them
        conn.execute("UPDATE callbacks SET body = ?, body_packed = 0", (body,))
        conn.execute("UPDATE events SET body = ?, body_packed = 0", (packed["claimed"],))
        conn.execute("UPDATE jobs SET detail = ?, detail_packed = 0", (orjson.dumps(packed["detail"]).decode(),))
        conn.execute("UPDATE deliveries SET state = 'pending', lease_expires_at = NULL")
        conn.execute("DELETE FROM leases")  # the event log's claim given back too (no row: a lease of its cursor)
        conn.execute("UPDATE cursors SET leased = acked")
    assert _read_everything(db) == packed
