"""Subscriber rows: create, change, remove, rotate, list, and the version the ingest path matches against.

Every change takes `SUBSCRIBERS_LOCK` exclusively; recording a callback takes it shared, so a change
committed by one replica can never slip between another's version check and its commit.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import asyncpg

from relay.domain.fanout import Snapshot
from relay.domain.subscribers import Subscriber, SubscriberSpec, SubscriberState
from relay.store.db import CHANNEL
from relay.store.formats import iso, to_json
from relay.store.postgres.connection import rowcount
from relay.store.rows import SUBSCRIBER_COLUMNS, subscriber_from

SUBSCRIBERS_LOCK = 0x636F7372656C6170


async def _lock(conn: asyncpg.Connection) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock($1)", SUBSCRIBERS_LOCK)


async def list_subscribers(conn: asyncpg.Connection) -> list[Subscriber]:
    rows = await conn.fetch(f"SELECT {SUBSCRIBER_COLUMNS} FROM subscribers WHERE removed_at IS NULL ORDER BY name")
    return [subscriber_from(row) for row in rows]


async def get_subscriber(conn: asyncpg.Connection, name: str) -> Subscriber | None:
    row = await conn.fetchrow(
        f"SELECT {SUBSCRIBER_COLUMNS} FROM subscribers WHERE name = $1 AND removed_at IS NULL", name
    )
    return None if row is None else subscriber_from(row)


async def insert_subscriber(conn: asyncpg.Connection, spec: SubscriberSpec, at: datetime) -> Subscriber:
    """Raises UniqueViolationError when the name is taken."""
    await _lock(conn)
    await conn.execute(
        "INSERT INTO subscribers(name, url, secret, types, filters, state, max_in_flight, timeout, retry_schedule,"
        " source, created_at, updated_at, store_response)"
        " VALUES ($1, $2, $3, $4, $5, 'enabled', $6, $7, $8, $9, $10, $10, $11)",
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
        int(spec.store_response),
    )
    subscriber = await get_subscriber(conn, spec.name)
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


async def update_subscriber(
    conn: asyncpg.Connection, name: str, changes: Mapping[str, Any], at: datetime
) -> Subscriber | None:
    unknown = set(changes) - set(_UPDATABLE)
    if unknown:
        raise ValueError(f"cannot change {sorted(unknown)}")
    await _lock(conn)
    assignments = [f"{column} = ${number}" for number, column in enumerate(changes, 1)]
    values = [_UPDATABLE[column](value) for column, value in changes.items()]
    count = len(values)
    await conn.execute(
        f"UPDATE subscribers SET {', '.join([*assignments, f'updated_at = ${count + 1}'])}"
        f" WHERE name = ${count + 2} AND removed_at IS NULL",
        *values,
        iso(at),
        name,
    )
    return await get_subscriber(conn, name)


async def set_state(
    conn: asyncpg.Connection, name: str, state: SubscriberState, reason: str | None, at: datetime
) -> Subscriber | None:
    """Pause, resume (enabled) or disable a subscriber. Resuming clears the failure streak."""
    await _lock(conn)
    await conn.execute(
        "UPDATE subscribers SET state = $1, disabled_reason = $2, updated_at = $3,"
        " failing_since = CASE WHEN $1 = 'enabled' THEN NULL ELSE failing_since END"
        " WHERE name = $4 AND removed_at IS NULL",
        state.value,
        reason,
        iso(at),
        name,
    )
    if state is SubscriberState.ENABLED:
        await conn.execute(f"NOTIFY {CHANNEL}")
    return await get_subscriber(conn, name)


async def remove_subscriber(conn: asyncpg.Connection, name: str, at: datetime) -> int | None:
    """Delete a subscriber; its unfinished deliveries end as cancelled. None if there is no such subscriber."""
    await _lock(conn)
    subscriber_id = await conn.fetchval(
        "SELECT id FROM subscribers WHERE name = $1 AND removed_at IS NULL FOR UPDATE", name
    )
    if subscriber_id is None:
        return None
    cancelled = rowcount(
        await conn.execute(
            "UPDATE deliveries SET state = 'cancelled', lease_expires_at = NULL, updated_at = $1"
            " WHERE subscriber_id = $2 AND state IN ('pending', 'in_flight')",
            iso(at),
            subscriber_id,
        )
    )
    await conn.execute(
        "UPDATE subscribers SET removed_at = $1, secret = '', previous_secret = NULL, updated_at = $1 WHERE id = $2",
        iso(at),
        subscriber_id,
    )
    return cancelled


async def rotate_secret(
    conn: asyncpg.Connection, name: str, new_secret: str, grace_until: datetime, at: datetime
) -> Subscriber | None:
    await _lock(conn)
    await conn.execute(
        "UPDATE subscribers SET previous_secret = secret, previous_secret_expires_at = $1, secret = $2,"
        " updated_at = $3 WHERE name = $4 AND removed_at IS NULL",
        iso(grace_until),
        new_secret,
        iso(at),
        name,
    )
    return await get_subscriber(conn, name)


async def subscribers_version(conn: asyncpg.Connection) -> tuple[object, ...]:
    """Changes whenever a subscriber is added, changed or removed, by this replica or another."""
    row = await conn.fetchrow("SELECT count(*), max(updated_at) FROM subscribers")
    assert row is not None
    return (int(row[0]), row[1])


async def snapshot(conn: asyncpg.Connection) -> Snapshot:
    """The subscribers with their version; the version is read first, so a change in between only
    makes the snapshot look stale (and be read again), never look fresh."""
    version = await subscribers_version(conn)
    return Snapshot(version, tuple(await list_subscribers(conn)))
