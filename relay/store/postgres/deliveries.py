"""Deliveries: lease due ones (per-subscriber limits, strict order), give leases back, requeue, find the failed.

Across replicas: a claim locks the rows of the subscribers it serves (``FOR UPDATE SKIP LOCKED``), so
only one replica at a time leases a given subscriber's deliveries: its in-flight limit and, with
``max_in_flight = 1``, its strict order hold across replicas, while other replicas skip to other
subscribers instead of waiting. The delivery rows are taken ``FOR UPDATE SKIP LOCKED`` too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

import asyncpg
import orjson

from relay.domain.delivery import Claim, trigger_of
from relay.domain.fanout import Owed
from relay.store.formats import iso, when
from relay.store.postgres.connection import CHANNEL, rowcount
from relay.store.rows import signing_secrets


async def notify(conn: asyncpg.Connection) -> None:
    """Wake every replica's worker when this transaction commits (PostgreSQL folds repeats into one)."""
    await conn.execute(f"NOTIFY {CHANNEL}")


async def insert_owed(conn: asyncpg.Connection, owed: Sequence[Owed], callback_id: int, stamp: str) -> int:
    """Store the events and one pending delivery per subscriber each is owed to, and wake every replica when
    this commits; returns deliveries created. One statement however many events and subscribers."""
    if not owed:
        return 0
    events = [o.event for o in owed]
    owed_events = [o.event.id for o in owed for _ in o.subscriber_ids]
    subscribers = [s for o in owed for s in o.subscriber_ids]
    await conn.execute(
        "WITH stored AS (INSERT INTO events(id, item_key, type, subject, callback_id, created_at, body)"
        " SELECT i, k, t, s, $6, $7, b FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[])"
        " AS e(i, k, t, s, b) ON CONFLICT(id) DO NOTHING),"
        " queued AS (INSERT INTO deliveries(event_id, subscriber_id, state, attempts, failures, next_attempt_at,"
        " created_at, updated_at) SELECT e, s, 'pending', 0, 0, $7, $7, $7"
        " FROM unnest($8::text[], $9::bigint[]) AS d(e, s) ON CONFLICT(event_id, subscriber_id) DO NOTHING"
        " RETURNING 1)"
        f" SELECT pg_notify('{CHANNEL}', '') WHERE EXISTS (SELECT 1 FROM queued)",
        [event.id for event in events],
        [event.item_key for event in events],
        [event.type for event in events],
        [event.subject for event in events],
        [event.body for event in events],
        callback_id,
        stamp,
        owed_events,
        subscribers,
    )
    return len(owed_events)


async def claim_due(
    conn: asyncpg.Connection,
    now: datetime,
    lease_margin: timedelta,
    capacity: int,
    subscriber_id: int | None = None,
) -> list[Claim]:
    """Lease up to ``capacity`` due deliveries, honouring each subscriber's in-flight limit.

    A lease lasts the subscriber's timeout plus ``lease_margin``; one that expired (its replica died)
    makes the delivery claimable again, by any replica. ``subscriber_id`` limits the claim to one.
    """
    stamp = iso(now)
    chosen: list[int] = []
    subscribers = await conn.fetch(
        "SELECT s.id, s.max_in_flight, s.timeout FROM subscribers s"
        " WHERE s.state = 'enabled' AND s.removed_at IS NULL AND ($2::bigint IS NULL OR s.id = $2)"
        " AND (EXISTS (SELECT 1 FROM deliveries d WHERE d.subscriber_id = s.id AND d.state = 'pending'"
        " AND d.next_attempt_at <= $1) OR EXISTS (SELECT 1 FROM deliveries d WHERE d.subscriber_id = s.id"
        " AND d.state = 'in_flight' AND d.lease_expires_at <= $1))"
        " ORDER BY s.id FOR UPDATE OF s SKIP LOCKED",
        stamp,
        subscriber_id,
    )
    for row in subscribers:
        if len(chosen) >= capacity:
            break
        busy = await conn.fetchval(
            "SELECT count(*) FROM deliveries WHERE subscriber_id = $1 AND state = 'in_flight'"
            " AND lease_expires_at > $2",
            row["id"],
            stamp,
        )
        free = min(row["max_in_flight"] - busy, capacity - len(chosen))
        if free <= 0:
            continue
        if row["max_in_flight"] == 1:
            ids = await _head_if_due(conn, row["id"], stamp)
        else:
            ids = await _due(conn, row["id"], stamp, free)
        if ids:
            expires = iso(now + timedelta(seconds=row["timeout"]) + lease_margin)
            await conn.execute(
                "UPDATE deliveries SET state = 'in_flight', lease_expires_at = $1, attempts = attempts + 1,"
                " updated_at = $2 WHERE id = ANY($3::bigint[])",
                expires,
                stamp,
                ids,
            )
            chosen += ids
    if not chosen:
        return []
    rows = await conn.fetch(
        "SELECT d.id, d.event_id, d.failures, d.attempts, d.created_at, d.last_outcome, e.body, s.id AS sid,"
        " s.name, s.url, s.secret, s.previous_secret, s.previous_secret_expires_at, s.timeout, s.retry_schedule,"
        " s.failing_since, s.store_response"
        " FROM deliveries d JOIN events e ON e.id = d.event_id JOIN subscribers s ON s.id = d.subscriber_id"
        " WHERE d.id = ANY($1::bigint[]) ORDER BY d.id",
        chosen,
    )
    return [_claim(row, stamp) for row in rows]


async def _due(conn: asyncpg.Connection, subscriber_id: int, stamp: str, limit: int) -> list[int]:
    """Due pending deliveries, then expired leases; rows another transaction holds are skipped."""
    ids: list[int] = [
        row["id"]
        for row in await conn.fetch(
            "SELECT id FROM deliveries WHERE subscriber_id = $1 AND state = 'pending' AND next_attempt_at <= $2"
            " ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED",
            subscriber_id,
            stamp,
            limit,
        )
    ]
    if len(ids) >= limit:
        return ids
    return ids + [
        row["id"]
        for row in await conn.fetch(
            "SELECT id FROM deliveries WHERE subscriber_id = $1 AND state = 'in_flight' AND lease_expires_at <= $2"
            " LIMIT $3 FOR UPDATE SKIP LOCKED",
            subscriber_id,
            stamp,
            limit - len(ids),
        )
    ]


async def _head_if_due(conn: asyncpg.Connection, subscriber_id: int, stamp: str) -> list[int]:
    """The subscriber's oldest unfinished delivery, if it may be attempted now (strict order)."""
    head = await conn.fetchrow(
        "SELECT id, state, next_attempt_at, lease_expires_at FROM deliveries WHERE id = (SELECT min(id) FROM ("
        " SELECT min(id) AS id FROM deliveries WHERE subscriber_id = $1 AND state = 'pending'"
        " UNION ALL SELECT min(id) FROM deliveries WHERE subscriber_id = $1 AND state = 'in_flight') AS heads)",
        subscriber_id,
    )
    if head is None:
        return []
    due_at = head["next_attempt_at"] if head["state"] == "pending" else head["lease_expires_at"]
    return [head["id"]] if due_at <= stamp else []


def _claim(row: asyncpg.Record, stamp: str) -> Claim:
    schedule = orjson.loads(row["retry_schedule"]) if row["retry_schedule"] else None
    return Claim(
        delivery_id=row["id"],
        event_id=row["event_id"],
        body=bytes(row["body"]),
        subscriber_id=row["sid"],
        subscriber=row["name"],
        url=row["url"],
        secrets=signing_secrets(row, stamp),
        timeout=row["timeout"],
        retry_schedule=tuple(schedule) if schedule is not None else None,
        failures=row["failures"],
        trigger=trigger_of(row["attempts"], row["last_outcome"]),
        created_at=datetime.fromisoformat(row["created_at"]),
        failing_since=when(row["failing_since"]),
        store_response=bool(row["store_response"]),
    )


async def next_due(conn: asyncpg.Connection) -> datetime | None:
    """When the next delivery of an enabled subscriber becomes due (pending, or a lease expiring)."""
    due = await conn.fetchval(
        "SELECT min(t) AS due FROM (SELECT (SELECT min(d.next_attempt_at) FROM deliveries d"
        " WHERE d.subscriber_id = s.id AND d.state = 'pending') AS t FROM subscribers s"
        " WHERE s.state = 'enabled' AND s.removed_at IS NULL"
        " UNION ALL SELECT min(lease_expires_at) FROM deliveries WHERE state = 'in_flight') AS due"
    )
    return when(due)


async def requeue(conn: asyncpg.Connection, delivery_ids: Iterable[int], at: datetime) -> int:
    """Queue deliveries again now with a fresh retry schedule (manual retry and bulk recover)."""
    ids = list(delivery_ids)
    if not ids:
        return 0
    count = rowcount(
        await conn.execute(
            "UPDATE deliveries SET state = 'pending', next_attempt_at = $1, failures = 0, last_outcome = 'manual',"
            " updated_at = $1 WHERE id = ANY($2::bigint[]) AND state IN ('pending', 'delivered', 'dead', 'dropped')",
            iso(at),
            ids,
        )
    )
    await notify(conn)
    return count


async def recoverable(
    conn: asyncpg.Connection, subscriber_id: int, since: datetime, after_id: int, limit: int
) -> list[int]:
    """Failed (retrying), dead or dropped deliveries created since ``since``, in id order, for bulk recovery."""
    rows = await conn.fetch(
        "SELECT id FROM deliveries WHERE subscriber_id = $1 AND created_at >= $2 AND id > $3"
        " AND (state IN ('dead', 'dropped') OR (state = 'pending' AND failures > 0)) ORDER BY id LIMIT $4",
        subscriber_id,
        iso(since),
        after_id,
        None if limit < 0 else limit,
    )
    return [row["id"] for row in rows]


async def release(conn: asyncpg.Connection, claim: Claim, at: datetime) -> None:
    """Give back a lease that was never attempted (shutdown), so it is due again at once."""
    await conn.execute(
        "UPDATE deliveries SET state = 'pending', lease_expires_at = NULL, attempts = attempts - 1, updated_at = $1"
        " WHERE id = $2 AND state = 'in_flight'",
        iso(at),
        claim.delivery_id,
    )
    await notify(conn)
