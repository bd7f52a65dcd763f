"""Deliveries: lease due ones (per-subscriber limits, strict order), give leases back, requeue, find the failed.

Across PostgreSQL replicas: a claim locks the rows of the subscribers it serves (``FOR NO KEY UPDATE SKIP
LOCKED``), so only one replica at a time leases a given subscriber's deliveries: its in-flight limit and, with
``max_in_flight = 1``, its strict order hold across replicas, while other replicas skip to other subscribers
instead of waiting. Not ``FOR UPDATE``: that conflicts with the key-share lock a callback being recorded holds on
each subscriber it owes deliveries to (the foreign key), and under saturated ingest, with one such transaction
nearly always open, a claim skipped the subscriber. The delivery rows are taken ``FOR UPDATE SKIP LOCKED`` too.
SQLite has one writer at a time: nothing to lock, and the subscribers' in-flight counts come with them in one
statement.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

import orjson

from relay.domain.delivery import Claim, trigger_of
from relay.domain.destinations import ContentMode, Kind, Rate, Route, parse_rate, slowest
from relay.domain.fanout import Owed
from relay.store.db import CHANNEL, Db
from relay.store.formats import iso, when
from relay.store.rows import Row, signing_secrets


async def notify(db: Db) -> None:
    """Wake every replica's worker when this transaction commits (PostgreSQL folds repeats into one); SQLite's
    processes find each other's work by polling."""
    if db.dialect.postgres:
        await db.execute(f"NOTIFY {CHANNEL}")


async def insert_owed(db: Db, owed: Sequence[Owed], callback_id: int, stamp: str) -> int:
    """Store the events and one pending delivery per subscriber each is owed to (and wake every replica when
    this commits); returns deliveries created."""
    if not owed:
        return 0
    deliveries = [(o.event.id, s) for o in owed for s in o.subscriber_ids]
    if db.dialect.postgres:
        # One statement however many events and subscribers: a round trip each would cost more than the rows.
        events = [o.event for o in owed]
        await db.execute(
            "WITH stored AS (INSERT INTO events(id, item_key, type, subject, callback_id, created_at, body)"
            " SELECT i, k, t, s, ?, ?, b FROM unnest(CAST(? AS text[]), CAST(? AS text[]), CAST(? AS text[]),"
            " CAST(? AS text[]), CAST(? AS bytea[])) AS e(i, k, t, s, b) ON CONFLICT(id) DO NOTHING),"
            " queued AS (INSERT INTO deliveries(event_id, subscriber_id, state, attempts, failures, next_attempt_at,"
            " created_at, updated_at) SELECT e, s, 'pending', 0, 0, ?, ?, ?"
            " FROM unnest(CAST(? AS text[]), CAST(? AS bigint[])) AS d(e, s) ON CONFLICT(event_id, subscriber_id)"
            f" DO NOTHING RETURNING 1) SELECT pg_notify('{CHANNEL}', '') WHERE EXISTS (SELECT 1 FROM queued)",
            callback_id,
            stamp,
            [event.id for event in events],
            [event.item_key for event in events],
            [event.type for event in events],
            [event.subject for event in events],
            [event.body for event in events],
            stamp,
            stamp,
            stamp,
            [event_id for event_id, _ in deliveries],
            [subscriber_id for _, subscriber_id in deliveries],
        )
        return len(deliveries)
    await db.executemany(
        "INSERT INTO events(id, item_key, type, subject, callback_id, created_at, body, body_packed)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, 1)"
        " ON CONFLICT(id) DO NOTHING",
        [
            (
                o.event.id,
                o.event.item_key,
                o.event.type,
                o.event.subject,
                callback_id,
                stamp,
                db.dialect.pack(o.event.body),
            )
            for o in owed
        ],
    )
    await db.executemany(
        "INSERT INTO deliveries(event_id, subscriber_id, state, attempts, failures, next_attempt_at, created_at,"
        " updated_at) VALUES (?, ?, 'pending', 0, 0, ?, ?, ?) ON CONFLICT(event_id, subscriber_id) DO NOTHING",
        [(event_id, subscriber_id, stamp, stamp, stamp) for event_id, subscriber_id in deliveries],
    )
    return len(deliveries)


async def claim_due(
    db: Db,
    now: datetime,
    lease_margin: timedelta,
    capacity: int,
    subscriber_id: int | None = None,
) -> list[Claim]:
    """Lease up to ``capacity`` due deliveries, honouring each subscriber's in-flight limit.

    A lease lasts the subscriber's timeout plus ``lease_margin``; one that expired (its worker or replica
    died) makes the delivery claimable again. A subscriber with ``max_in_flight = 1`` only ever gets its
    oldest unfinished delivery, so its order is strict. ``subscriber_id`` limits the claim to one.
    """
    stamp = iso(now)
    chosen: list[int] = []
    for row in await _subscribers(db, stamp, subscriber_id):
        if len(chosen) >= capacity:
            break
        if db.dialect.postgres:  # counted once the row is locked: another replica may just have leased some
            busy = await db.fetchval(
                "SELECT count(*) FROM deliveries WHERE subscriber_id = ? AND state = 'in_flight'"
                " AND lease_expires_at > ?",
                row["id"],
                stamp,
            )
        else:
            busy = row["busy"]
        free = min(row["max_in_flight"] - busy, capacity - len(chosen))
        if row["handshake"] and row["granted"] is None:
            free = min(free, 1 - busy)  # its receiver is asked first, once: the grant may set a slower rate
        rate, free_at = _rate(row), None
        if rate is not None and free > 0:
            # Read once the row is locked (PostgreSQL): another replica's pacing is committed by then.
            free_at = when(await db.fetchval("SELECT free_at FROM rate_pacing WHERE subscriber_id = ?", row["id"]))
            free = rate.pace(now, free_at, free).allowed
        if free <= 0:
            continue
        ids = (
            await _head_if_due(db, row["id"], stamp)
            if row["max_in_flight"] == 1
            else await _due(db, row["id"], stamp, free)
        )
        if ids and rate is not None:
            await db.execute(
                "INSERT INTO rate_pacing(subscriber_id, free_at) VALUES (?, ?)"
                " ON CONFLICT(subscriber_id) DO UPDATE SET free_at = excluded.free_at",
                row["id"],
                iso(rate.pace(now, free_at, len(ids)).free_at),
            )
        if ids:
            expires = iso(now + timedelta(seconds=row["timeout"]) + lease_margin)
            among, values = db.dialect.among("id", ids)
            await db.execute(
                "UPDATE deliveries SET state = 'in_flight', lease_expires_at = ?, attempts = attempts + 1,"
                f" updated_at = ? WHERE {among}",
                expires,
                stamp,
                *values,
            )
            chosen += ids
    if not chosen:
        return []
    return await _claims(db, chosen, stamp)


#: The rate a receiver allowed in a CloudEvents handshake that still holds for the subscriber's URL (its expiry is
#: the handshake's business: an expired grant still paces until it is asked again).
_HANDSHAKE = "LEFT JOIN handshakes h ON h.subscriber_id = s.id AND h.granted = 1 AND h.url = s.url AND s.handshake = 1"
_ALLOWED_RATE = "h.allowed_rate, s.handshake, h.subscriber_id AS granted"


def _rate(row: Row) -> Rate | None:
    """The subscriber's own rate or the one its receiver allowed, whichever is slower."""
    return slowest(*(parse_rate(row[key]) for key in ("rate", "allowed_rate") if row[key] is not None))


async def _subscribers(db: Db, stamp: str, subscriber_id: int | None) -> Sequence[Row]:
    """The enabled subscribers to claim for (PostgreSQL: those with due work no other replica is claiming for,
    locked, in id order)."""
    if db.dialect.postgres:
        return await db.fetch(
            f"SELECT s.id, s.max_in_flight, s.timeout, s.rate, {_ALLOWED_RATE} FROM subscribers s {_HANDSHAKE}"
            " WHERE s.state = 'enabled' AND s.removed_at IS NULL AND (CAST(? AS bigint) IS NULL OR s.id = ?)"
            " AND (EXISTS (SELECT 1 FROM deliveries d WHERE d.subscriber_id = s.id AND d.state = 'pending'"
            " AND d.next_attempt_at <= ?) OR EXISTS (SELECT 1 FROM deliveries d WHERE d.subscriber_id = s.id"
            " AND d.state = 'in_flight' AND d.lease_expires_at <= ?))"
            " ORDER BY s.id FOR NO KEY UPDATE OF s SKIP LOCKED",
            subscriber_id,
            subscriber_id,
            stamp,
            stamp,
        )
    return await db.fetch(
        f"SELECT s.id, s.max_in_flight, s.timeout, s.rate, {_ALLOWED_RATE}, (SELECT count(*) FROM deliveries d"
        " WHERE d.subscriber_id = s.id AND d.state = 'in_flight' AND d.lease_expires_at > ?) AS busy"
        f" FROM subscribers s {_HANDSHAKE}"
        " WHERE s.state = 'enabled' AND s.removed_at IS NULL AND (? IS NULL OR s.id = ?)",
        stamp,
        subscriber_id,
        subscriber_id,
    )


async def _due(db: Db, subscriber_id: int, stamp: str, limit: int) -> list[int]:
    """Due pending deliveries, then expired leases: two index range scans, never a sort of the backlog."""
    ids: list[int] = [
        row["id"]
        for row in await db.fetch(
            "SELECT id FROM deliveries WHERE subscriber_id = ? AND state = 'pending' AND next_attempt_at <= ?"
            f" ORDER BY next_attempt_at LIMIT ?{db.dialect.skip_locked}",
            subscriber_id,
            stamp,
            limit,
        )
    ]
    if len(ids) >= limit:
        return ids
    return ids + [
        row["id"]
        for row in await db.fetch(
            "SELECT id FROM deliveries WHERE subscriber_id = ? AND state = 'in_flight' AND lease_expires_at <= ?"
            f" LIMIT ?{db.dialect.skip_locked}",
            subscriber_id,
            stamp,
            limit - len(ids),
        )
    ]


async def _head_if_due(db: Db, subscriber_id: int, stamp: str) -> list[int]:
    """The subscriber's oldest unfinished delivery, if it may be attempted now (strict order)."""
    head = await db.fetchrow(
        "SELECT id, state, next_attempt_at, lease_expires_at FROM deliveries WHERE id = (SELECT min(id) FROM ("
        " SELECT min(id) AS id FROM deliveries WHERE subscriber_id = ? AND state = 'pending'"
        " UNION ALL SELECT min(id) FROM deliveries WHERE subscriber_id = ? AND state = 'in_flight') AS heads)",
        subscriber_id,
        subscriber_id,
    )
    if head is None:
        return []
    due_at = head["next_attempt_at"] if head["state"] == "pending" else head["lease_expires_at"]
    return [head["id"]] if due_at <= stamp else []


#: A subscriber's part of every claim of it: everything but the delivery's own fields.
_SubscriberPart = tuple[str, str, tuple[str, ...], float, tuple[float, ...] | None, datetime | None, bool, Route]


async def _claims(db: Db, chosen: list[int], stamp: str) -> list[Claim]:
    """The claims of the leased deliveries, in id order.

    Each subscriber's part (secrets, schedule, failure streak) is read and parsed once, not once per
    delivery, and rows are taken by position: on SQLite this runs on the writer thread, holding the GIL the
    delivery loop waits for.
    """
    among, values = db.dialect.among("d.id", chosen)
    rows = await db.fetch(
        "SELECT d.id, d.event_id, d.subscriber_id, d.failures, d.attempts, d.last_outcome, d.created_at,"
        f" e.body, {db.dialect.packed('e.body')} FROM deliveries d JOIN events e ON e.id = d.event_id WHERE {among}"
        " ORDER BY d.id",
        *values,
    )
    parts = await _subscriber_parts(db, {row["subscriber_id"] for row in rows}, stamp)
    claims = []
    for row in rows:
        delivery_id, event_id, subscriber_id, failures, attempts, last_outcome, created_at, body, packed = tuple(row)
        name, url, secrets, timeout, schedule, failing_since, store_response, route = parts[subscriber_id]
        claims.append(
            Claim(
                delivery_id,
                event_id,
                db.dialect.unpack(body, packed),
                subscriber_id,
                name,
                url,
                secrets,
                timeout,
                schedule,
                failures,
                trigger_of(attempts, last_outcome),
                datetime.fromisoformat(created_at),
                failing_since,
                store_response,
                route,
            )
        )
    return claims


async def _subscriber_parts(db: Db, ids: set[int], stamp: str) -> dict[int, _SubscriberPart]:
    parts: dict[int, _SubscriberPart] = {}
    among, values = db.dialect.among("s.id", sorted(ids))
    for row in await db.fetch(
        "SELECT s.id, s.name, s.url, s.secret, s.previous_secret, s.previous_secret_expires_at, s.timeout,"
        " s.retry_schedule, s.failing_since, s.store_response, s.kind, s.content_mode, s.template,"
        f" s.rate, {_ALLOWED_RATE} FROM subscribers s {_HANDSHAKE} WHERE {among}",
        *values,
    ):
        schedule = orjson.loads(row["retry_schedule"]) if row["retry_schedule"] else None
        parts[row["id"]] = (
            row["name"],
            row["url"],
            signing_secrets(row, stamp),
            row["timeout"],
            tuple(schedule) if schedule is not None else None,
            when(row["failing_since"]),
            bool(row["store_response"]),
            Route(
                Kind(row["kind"]),
                ContentMode(row["content_mode"]),
                bool(row["handshake"]),
                row["template"],
                _rate(row),
            ),
        )
    return parts


async def next_due(db: Db) -> datetime | None:
    """When the next delivery of an enabled subscriber becomes due (pending, or a lease expiring).

    One index lookup per enabled subscriber: scanning the pending deliveries instead cost the idle
    worker a pass over every delivery held for paused subscribers, after every callback.
    """
    # A rate-limited subscriber's next delivery is due when both it and the rate's pacing allow.
    due = await db.fetchval(
        "SELECT min(t) AS due FROM (SELECT CASE WHEN p.free_at > o.t THEN p.free_at ELSE o.t END AS t"
        " FROM (SELECT s.id, s.rate, (SELECT min(d.next_attempt_at) FROM deliveries d"
        " WHERE d.subscriber_id = s.id AND d.state = 'pending') AS t FROM subscribers s"
        " WHERE s.state = 'enabled' AND s.removed_at IS NULL) AS o"
        " LEFT JOIN rate_pacing p ON p.subscriber_id = o.id AND o.rate IS NOT NULL"
        " UNION ALL SELECT min(lease_expires_at) FROM deliveries WHERE state = 'in_flight') AS due"
    )
    return when(due)


async def requeue(db: Db, delivery_ids: Iterable[int], at: datetime) -> int:
    """Queue deliveries again now with a fresh retry schedule (manual retry and bulk recover)."""
    ids = list(delivery_ids)
    if not ids:
        return 0
    among, values = db.dialect.among("id", ids)
    count = await db.execute(
        "UPDATE deliveries SET state = 'pending', next_attempt_at = ?, failures = 0, last_outcome = 'manual',"
        f" updated_at = ? WHERE {among} AND state IN ('pending', 'delivered', 'dead', 'dropped')",
        iso(at),
        iso(at),
        *values,
    )
    await notify(db)
    return count


async def recoverable(db: Db, subscriber_id: int, since: datetime, after_id: int, limit: int) -> list[int]:
    """Failed (retrying), dead or dropped deliveries created since ``since``, in id order, for bulk recovery
    (a negative ``limit``: all of them)."""
    rows = await db.fetch(
        "SELECT id FROM deliveries WHERE subscriber_id = ? AND created_at >= ? AND id > ?"
        " AND (state IN ('dead', 'dropped') OR (state = 'pending' AND failures > 0)) ORDER BY id LIMIT ?",
        subscriber_id,
        iso(since),
        after_id,
        db.dialect.limit(limit),
    )
    return [row["id"] for row in rows]


async def release(db: Db, claim: Claim, at: datetime) -> None:
    """Give back a lease that was never attempted (shutdown), so it is due again at once."""
    await db.execute(
        "UPDATE deliveries SET state = 'pending', lease_expires_at = NULL, attempts = attempts - 1, updated_at = ?"
        " WHERE id = ? AND state = 'in_flight'",
        iso(at),
        claim.delivery_id,
    )
    await notify(db)
