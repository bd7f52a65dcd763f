"""Deliveries: lease due ones (per-subscriber limits, strict order), give leases back, requeue, find the failed."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

import orjson

from relay.domain.delivery import Claim
from relay.domain.fanout import Owed
from relay.store.formats import iso, when
from relay.store.sqlite.packing import pack, unpack


def insert_owed(conn: sqlite3.Connection, owed: Sequence[Owed], callback_id: int, stamp: str) -> int:
    """Store the events and one pending delivery per subscriber each is owed to; returns deliveries created."""
    if not owed:
        return 0
    conn.executemany(
        "INSERT INTO events(id, item_key, type, subject, callback_id, created_at, body, body_packed)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, 1)"
        " ON CONFLICT(id) DO NOTHING",
        [
            (o.event.id, o.event.item_key, o.event.type, o.event.subject, callback_id, stamp, pack(o.event.body))
            for o in owed
        ],
    )
    rows = [(o.event.id, s, stamp, stamp, stamp) for o in owed for s in o.subscriber_ids]
    conn.executemany(
        "INSERT INTO deliveries(event_id, subscriber_id, state, attempts, failures, next_attempt_at, created_at,"
        " updated_at) VALUES (?, ?, 'pending', 0, 0, ?, ?, ?) ON CONFLICT(event_id, subscriber_id) DO NOTHING",
        rows,
    )
    return len(rows)


def claim_due(
    conn: sqlite3.Connection,
    now: datetime,
    lease_margin: timedelta,
    capacity: int,
    subscriber_id: int | None = None,
) -> list[Claim]:
    """Lease up to ``capacity`` due deliveries, honouring each subscriber's in-flight limit.

    A lease lasts the subscriber's timeout plus ``lease_margin``; one that expired (its worker died)
    makes the delivery claimable again. A subscriber with ``max_in_flight = 1`` only ever gets its
    oldest unfinished delivery, so its order is strict. ``subscriber_id`` limits the claim to one.
    """
    stamp = iso(now)
    chosen: list[int] = []
    subscribers = conn.execute(
        "SELECT s.id, s.max_in_flight, s.timeout, (SELECT count(*) FROM deliveries d WHERE d.subscriber_id = s.id"
        " AND d.state = 'in_flight' AND d.lease_expires_at > ?) AS busy FROM subscribers s"
        " WHERE s.state = 'enabled' AND s.removed_at IS NULL AND (? IS NULL OR s.id = ?)",
        (stamp, subscriber_id, subscriber_id),
    ).fetchall()
    for row in subscribers:
        free = min(row["max_in_flight"] - row["busy"], capacity - len(chosen))
        if free <= 0:
            continue
        ids = _head_if_due(conn, row["id"], stamp) if row["max_in_flight"] == 1 else _due(conn, row["id"], stamp, free)
        if ids:
            expires = iso(now + timedelta(seconds=row["timeout"]) + lease_margin)
            conn.execute(
                "UPDATE deliveries SET state = 'in_flight', lease_expires_at = ?, attempts = attempts + 1,"
                f" updated_at = ? WHERE id IN ({','.join('?' * len(ids))})",
                (expires, stamp, *ids),
            )
            chosen += ids
    if not chosen:
        return []
    rows = conn.execute(
        "SELECT d.id, d.event_id, d.failures, d.attempts, d.created_at, d.last_outcome, e.body, e.body_packed,"
        " s.id AS sid,"
        " s.name, s.url, s.secret, s.previous_secret, s.previous_secret_expires_at, s.timeout, s.retry_schedule,"
        " s.failing_since"
        " FROM deliveries d JOIN events e ON e.id = d.event_id JOIN subscribers s ON s.id = d.subscriber_id"
        f" WHERE d.id IN ({','.join('?' * len(chosen))}) ORDER BY d.id",
        chosen,
    ).fetchall()
    return [_claim(row, stamp) for row in rows]


def _due(conn: sqlite3.Connection, subscriber_id: int, stamp: str, limit: int) -> list[int]:
    """Due pending deliveries, then expired leases: two index range scans, never a sort of the backlog."""
    ids = [
        row["id"]
        for row in conn.execute(
            "SELECT id FROM deliveries WHERE subscriber_id = ? AND state = 'pending' AND next_attempt_at <= ?"
            " ORDER BY next_attempt_at LIMIT ?",
            (subscriber_id, stamp, limit),
        )
    ]
    return ids + [
        row["id"]
        for row in conn.execute(
            "SELECT id FROM deliveries WHERE subscriber_id = ? AND state = 'in_flight' AND lease_expires_at <= ?"
            " LIMIT ?",
            (subscriber_id, stamp, limit - len(ids)),
        )
    ]


def _head_if_due(conn: sqlite3.Connection, subscriber_id: int, stamp: str) -> list[int]:
    """The subscriber's oldest unfinished delivery, if it may be attempted now (strict order)."""
    head = conn.execute(
        "SELECT id, state, next_attempt_at, lease_expires_at FROM deliveries WHERE id = (SELECT min(id) FROM ("
        " SELECT min(id) AS id FROM deliveries WHERE subscriber_id = ? AND state = 'pending'"
        " UNION ALL SELECT min(id) FROM deliveries WHERE subscriber_id = ? AND state = 'in_flight'))",
        (subscriber_id, subscriber_id),
    ).fetchone()
    if head is None:
        return []
    due_at = head["next_attempt_at"] if head["state"] == "pending" else head["lease_expires_at"]
    return [head["id"]] if due_at <= stamp else []


def _claim(row: sqlite3.Row, stamp: str) -> Claim:
    secrets = [row["secret"]]
    if row["previous_secret"] and (row["previous_secret_expires_at"] or "") > stamp:
        secrets.append(row["previous_secret"])
    schedule = orjson.loads(row["retry_schedule"]) if row["retry_schedule"] else None
    if row["attempts"] == 1:
        trigger = "first"
    elif row["last_outcome"] == "manual":
        trigger = "manual"
    else:
        trigger = "retry"
    return Claim(
        delivery_id=row["id"],
        event_id=row["event_id"],
        body=unpack(row["body"], row["body_packed"]),
        subscriber_id=row["sid"],
        subscriber=row["name"],
        url=row["url"],
        secrets=tuple(secrets),
        timeout=row["timeout"],
        retry_schedule=tuple(schedule) if schedule is not None else None,
        failures=row["failures"],
        trigger=trigger,
        created_at=datetime.fromisoformat(row["created_at"]),
        failing_since=when(row["failing_since"]),
    )


def next_due(conn: sqlite3.Connection) -> datetime | None:
    """When the next delivery of an enabled subscriber becomes due (pending, or a lease expiring).

    One index lookup per enabled subscriber: scanning the pending deliveries instead cost the idle
    worker a pass over every delivery held for paused subscribers, after every callback.
    """
    row = conn.execute(
        "SELECT min(t) AS due FROM (SELECT (SELECT min(d.next_attempt_at) FROM deliveries d"
        " WHERE d.subscriber_id = s.id AND d.state = 'pending') AS t FROM subscribers s"
        " WHERE s.state = 'enabled' AND s.removed_at IS NULL"
        " UNION ALL SELECT min(lease_expires_at) FROM deliveries WHERE state = 'in_flight')"
    ).fetchone()
    return when(row["due"])


def requeue(conn: sqlite3.Connection, delivery_ids: Iterable[int], at: datetime) -> int:
    """Queue deliveries again now with a fresh retry schedule (manual retry and bulk recover)."""
    ids = list(delivery_ids)
    if not ids:
        return 0
    marks = ",".join("?" * len(ids))
    return conn.execute(
        "UPDATE deliveries SET state = 'pending', next_attempt_at = ?, failures = 0, last_outcome = 'manual',"
        f" updated_at = ? WHERE id IN ({marks}) AND state IN ('pending', 'delivered', 'dead')",
        (iso(at), iso(at), *ids),
    ).rowcount


def recoverable(conn: sqlite3.Connection, subscriber_id: int, since: datetime, after_id: int, limit: int) -> list[int]:
    """Failed (retrying) or dead deliveries created since ``since``, in id order, for bulk recovery."""
    return [
        row["id"]
        for row in conn.execute(
            "SELECT id FROM deliveries WHERE subscriber_id = ? AND created_at >= ? AND id > ?"
            " AND (state = 'dead' OR (state = 'pending' AND failures > 0)) ORDER BY id LIMIT ?",
            (subscriber_id, iso(since), after_id, limit),
        )
    ]


def release(conn: sqlite3.Connection, claim: Claim, at: datetime) -> None:
    """Give back a lease that was never attempted (shutdown), so it is due again at once."""
    conn.execute(
        "UPDATE deliveries SET state = 'pending', lease_expires_at = NULL, attempts = attempts - 1, updated_at = ?"
        " WHERE id = ? AND state = 'in_flight'",
        (iso(at), claim.delivery_id),
    )
