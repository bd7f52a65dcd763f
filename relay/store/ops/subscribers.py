"""Subscriber rows: create, change, remove, rotate, list.

On PostgreSQL every change takes `SUBSCRIBERS_LOCK` and the event log's `LOG_LOCK` exclusively (`lock`); a
transaction recording callbacks holds `LOG_LOCK` from its events' insert to its commit, so a change never reads the
log's head (a new cursor's start, a filter's first position) while events that will commit below it are in flight,
and the rows of events held for a confirmation are for the subscribers as they are once the change committed
(SQLite's single writer orders them already).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from relay.domain.subscribers import Subscriber, SubscriberSpec, SubscriberState
from relay.store.db import CHANNEL, Db
from relay.store.formats import iso, to_json
from relay.store.ops import implied, owed
from relay.store.ops.log import LOG_LOCK, log_head
from relay.store.rows import SUBSCRIBER_COLUMNS, subscriber_from

SUBSCRIBERS_LOCK = 0x636F7372656C6170


async def lock(db: Db) -> None:
    """Hold the subscribers alone until the transaction ends, across replicas, and the log against new events."""
    if db.dialect.postgres:
        await db.execute("SELECT pg_advisory_xact_lock(?), pg_advisory_xact_lock(?)", SUBSCRIBERS_LOCK, LOG_LOCK)


async def list_subscribers(db: Db) -> list[Subscriber]:
    rows = await db.fetch(f"SELECT {SUBSCRIBER_COLUMNS} FROM subscribers WHERE removed_at IS NULL ORDER BY name")
    return [subscriber_from(row) for row in rows]


async def get_subscriber(db: Db, name: str) -> Subscriber | None:
    row = await db.fetchrow(f"SELECT {SUBSCRIBER_COLUMNS} FROM subscribers WHERE name = ? AND removed_at IS NULL", name)
    return None if row is None else subscriber_from(row)


async def insert_subscriber(db: Db, spec: SubscriberSpec, at: datetime) -> Subscriber:
    """Raises the driver's integrity error (the store's `StoreConflict`) when the name is taken."""
    await lock(db)
    await db.execute(
        "INSERT INTO subscribers(name, url, secret, types, filters, state, max_in_flight, timeout, retry_schedule,"
        " source, created_at, updated_at, store_response, kind, rate, handshake, content_mode, template)"
        " VALUES (?, ?, ?, ?, ?, 'enabled', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        spec.kind.value,
        None if spec.rate is None else str(spec.rate),
        int(spec.handshake),
        spec.content_mode.value,
        spec.template,
    )
    subscriber = await get_subscriber(db, spec.name)
    assert subscriber is not None
    # Owed exactly the events committed after it: its cursor and its filter start at the log's head, read while
    # the subscribers and the log are held (`lock`: on PostgreSQL no transaction is logging events meanwhile).
    head = await log_head(db)
    await db.execute(
        "INSERT INTO cursors(subscriber_id, acked, leased, updated_at) VALUES (?, ?, ?, ?)",
        subscriber.id,
        head,
        head,
        iso(at),
    )
    await _filter_from(db, subscriber.id, head)
    return subscriber


async def _filter_from(db: Db, subscriber_id: int, head: int) -> None:
    """The subscriber's filter as stored now applies to the events after ``head`` (a change at the same head
    replaces the one before it)."""
    await db.execute(
        "INSERT INTO filters(subscriber_id, from_position, types, filters) SELECT id, ?, types, filters"
        " FROM subscribers WHERE id = ? ON CONFLICT(subscriber_id, from_position)"
        " DO UPDATE SET types = excluded.types, filters = excluded.filters",
        head,
        subscriber_id,
    )


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
    "kind": str,
    "rate": lambda rate: None if rate is None else str(rate),
    "handshake": int,
    "content_mode": str,
    "template": lambda template: template,
    "secret": str,
}


async def update_subscriber(db: Db, name: str, changes: Mapping[str, Any], at: datetime) -> Subscriber | None:
    unknown = set(changes) - set(_UPDATABLE)
    if unknown:
        raise ValueError(f"cannot change {sorted(unknown)}")
    await lock(db)
    assignments = [f"{column} = ?" for column in changes]
    values = [_UPDATABLE[column](value) for column, value in changes.items()]
    if "secret" in changes:
        # Replaced, not rotated: the one before it (and any still in its grace) signs nothing from now on.
        assignments += ["previous_secret = NULL", "previous_secret_expires_at = NULL"]
    await db.execute(
        f"UPDATE subscribers SET {', '.join([*assignments, 'updated_at = ?'])} WHERE name = ? AND removed_at IS NULL",
        *values,
        iso(at),
        name,
    )
    subscriber = await get_subscriber(db, name)
    if subscriber is not None and {"types", "filters"} & set(changes):
        # A changed filter applies from the log's head at the change, as it applies to callbacks accepted after it.
        await _filter_from(db, subscriber.id, await log_head(db))
    return subscriber


async def set_state(db: Db, name: str, state: SubscriberState, reason: str | None, at: datetime) -> Subscriber | None:
    """Pause, resume (enabled) or disable a subscriber. Resuming clears the failure streak."""
    await lock(db)
    await db.execute(
        "UPDATE subscribers SET state = ?, disabled_reason = ?, updated_at = ?,"
        " failing_since = CASE WHEN ? = 'enabled' THEN NULL ELSE failing_since END"
        " WHERE name = ? AND removed_at IS NULL",
        state.value,
        reason,
        iso(at),
        state.value,
        name,
    )
    if state is SubscriberState.ENABLED and db.dialect.postgres:
        await db.execute(f"NOTIFY {CHANNEL}")
    return await get_subscriber(db, name)


async def remove_subscriber(db: Db, name: str, at: datetime) -> int | None:
    """Delete a subscriber; its unfinished deliveries end as cancelled. None if there is no such subscriber."""
    await lock(db)
    subscriber_id = await db.fetchval(
        f"SELECT id FROM subscribers WHERE name = ? AND removed_at IS NULL{db.dialect.for_update}", name
    )
    if subscriber_id is None:
        return None
    cancelled = await db.execute(
        "UPDATE deliveries SET state = 'cancelled', lease_expires_at = NULL, updated_at = ?"
        " WHERE subscriber_id = ? AND state IN ('pending', 'in_flight', 'confirming', 'unconfirmed')",
        iso(at),
        subscriber_id,
    )
    cancelled += await _cancel_log(db, subscriber_id, iso(at))
    await db.execute(
        "UPDATE subscribers SET removed_at = ?, secret = '', previous_secret = NULL, updated_at = ? WHERE id = ?",
        iso(at),
        iso(at),
        subscriber_id,
    )
    return cancelled


async def _cancel_log(db: Db, subscriber_id: int, at: str) -> int:
    """What the subscriber is owed in the log ends as cancelled: its leases, and the rest as one `gaps` row."""
    [owner] = await implied.cursors(db, name=None, only=subscriber_id)
    head = await log_head(db)
    count = await owed.matching(db, owner, owner.leased, head)
    count += int(
        await db.fetchval("SELECT coalesce(sum(outstanding), 0) FROM leases WHERE subscriber_id = ?", subscriber_id)
    )
    await db.execute("DELETE FROM leases WHERE subscriber_id = ?", subscriber_id)
    if head > owner.leased:
        await db.execute(
            "INSERT INTO gaps(subscriber_id, from_position, to_position, reason, at) VALUES (?, ?, ?, 'cancelled', ?)",
            subscriber_id,
            owner.leased,
            head,
            at,
        )
    await db.execute(
        "UPDATE cursors SET leased = ?, updated_at = ? WHERE subscriber_id = ?",
        max(head, owner.leased),
        at,
        subscriber_id,
    )
    return count


async def rotate_secret(db: Db, name: str, new_secret: str, grace_until: datetime, at: datetime) -> Subscriber | None:
    await lock(db)
    await db.execute(
        "UPDATE subscribers SET previous_secret = secret, previous_secret_expires_at = ?, secret = ?,"
        " updated_at = ? WHERE name = ? AND removed_at IS NULL",
        iso(grace_until),
        new_secret,
        iso(at),
        name,
    )
    return await get_subscriber(db, name)
