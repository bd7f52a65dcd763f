"""Subscriber rows: create, change, remove, rotate, list, and the version the ingest path matches against."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from relay.domain.fanout import Snapshot
from relay.domain.subscribers import Subscriber, SubscriberSpec, SubscriberState
from relay.store.formats import iso, to_json
from relay.store.rows import SUBSCRIBER_COLUMNS, subscriber_from


def list_subscribers(conn: sqlite3.Connection) -> list[Subscriber]:
    return [
        subscriber_from(row)
        for row in conn.execute(f"SELECT {SUBSCRIBER_COLUMNS} FROM subscribers WHERE removed_at IS NULL ORDER BY name")
    ]


def get_subscriber(conn: sqlite3.Connection, name: str) -> Subscriber | None:
    row = conn.execute(
        f"SELECT {SUBSCRIBER_COLUMNS} FROM subscribers WHERE name = ? AND removed_at IS NULL", (name,)
    ).fetchone()
    return None if row is None else subscriber_from(row)


def insert_subscriber(conn: sqlite3.Connection, spec: SubscriberSpec, at: datetime) -> Subscriber:
    """Raises sqlite3.IntegrityError when the name is taken."""
    conn.execute(
        "INSERT INTO subscribers(name, url, secret, types, filters, state, max_in_flight, timeout, retry_schedule,"
        " source, created_at, updated_at, store_response) VALUES (?, ?, ?, ?, ?, 'enabled', ?, ?, ?, ?, ?, ?, ?)",
        (
            spec.name,
            spec.url,
            spec.secret,
            to_json(list(spec.filter.types)),
            to_json(dict(spec.filter.match)),
            spec.max_in_flight,
            spec.timeout,
            None if spec.retry_schedule is None else to_json(list(spec.retry_schedule)),
            spec.source,
            iso(at),
            iso(at),
            int(spec.store_response),
        ),
    )
    subscriber = get_subscriber(conn, spec.name)
    assert subscriber is not None
    return subscriber


#: Columns `update_subscriber` may change, with how each value is stored.
_UPDATABLE: Mapping[str, Any] = {
    "url": str,
    "types": lambda types: to_json(list(types)),
    "filters": lambda filters: to_json(dict(filters)),
    "max_in_flight": int,
    "timeout": float,
    "retry_schedule": lambda schedule: None if schedule is None else to_json(list(schedule)),
    "source": str,
    "store_response": int,
}


def update_subscriber(
    conn: sqlite3.Connection, name: str, changes: Mapping[str, Any], at: datetime
) -> Subscriber | None:
    unknown = set(changes) - set(_UPDATABLE)
    if unknown:
        raise ValueError(f"cannot change {sorted(unknown)}")
    assignments = [f"{column} = ?" for column in changes]
    values = [_UPDATABLE[column](value) for column, value in changes.items()]
    conn.execute(
        f"UPDATE subscribers SET {', '.join([*assignments, 'updated_at = ?'])} WHERE name = ? AND removed_at IS NULL",
        (*values, iso(at), name),
    )
    return get_subscriber(conn, name)


def set_state(
    conn: sqlite3.Connection, name: str, state: SubscriberState, reason: str | None, at: datetime
) -> Subscriber | None:
    """Pause, resume (enabled) or disable a subscriber. Resuming clears the failure streak."""
    conn.execute(
        "UPDATE subscribers SET state = ?, disabled_reason = ?, updated_at = ?,"
        " failing_since = CASE WHEN ? = 'enabled' THEN NULL ELSE failing_since END"
        " WHERE name = ? AND removed_at IS NULL",
        (state.value, reason, iso(at), state.value, name),
    )
    return get_subscriber(conn, name)


def remove_subscriber(conn: sqlite3.Connection, name: str, at: datetime) -> int | None:
    """Delete a subscriber; its unfinished deliveries end as cancelled. None if there is no such subscriber."""
    row = conn.execute("SELECT id FROM subscribers WHERE name = ? AND removed_at IS NULL", (name,)).fetchone()
    if row is None:
        return None
    cancelled = conn.execute(
        "UPDATE deliveries SET state = 'cancelled', lease_expires_at = NULL, updated_at = ?"
        " WHERE subscriber_id = ? AND state IN ('pending', 'in_flight')",
        (iso(at), row["id"]),
    ).rowcount
    conn.execute(
        "UPDATE subscribers SET removed_at = ?, secret = '', previous_secret = NULL, updated_at = ? WHERE id = ?",
        (iso(at), iso(at), row["id"]),
    )
    return cancelled


def rotate_secret(
    conn: sqlite3.Connection, name: str, new_secret: str, grace_until: datetime, at: datetime
) -> Subscriber | None:
    conn.execute(
        "UPDATE subscribers SET previous_secret = secret, previous_secret_expires_at = ?, secret = ?,"
        " updated_at = ? WHERE name = ? AND removed_at IS NULL",
        (iso(grace_until), new_secret, iso(at), name),
    )
    return get_subscriber(conn, name)


def subscribers_version(conn: sqlite3.Connection) -> tuple[object, ...]:
    """Changes whenever a subscriber is added, changed or removed, by this process or another.

    Every change to a subscriber's URL, filters or state bumps ``updated_at``, so count and newest
    ``updated_at`` are enough to notice one.
    """
    return tuple(conn.execute("SELECT count(*), max(updated_at) FROM subscribers").fetchone())


def snapshot(conn: sqlite3.Connection) -> Snapshot:
    """The subscribers with their version; the version is read first, so a change in between only
    makes the snapshot look stale (and be read again), never look fresh."""
    version = subscribers_version(conn)
    return Snapshot(version, tuple(list_subscribers(conn)))
