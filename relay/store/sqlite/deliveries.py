"""Deliveries: lease due ones (per-subscriber limits, strict order), give leases back, requeue, find the failed."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

import orjson

from relay.domain.delivery import Claim, trigger_of
from relay.domain.fanout import Owed
from relay.store.formats import iso, when
from relay.store.rows import signing_secrets
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
    return _claims(conn, chosen, stamp)


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


#: A subscriber's part of every claim of it: everything but the delivery's own fields.
_SubscriberPart = tuple[str, str, tuple[str, ...], float, tuple[float, ...] | None, datetime | None, bool]


def _claims(conn: sqlite3.Connection, chosen: list[int], stamp: str) -> list[Claim]:
    """The claims of the leased deliveries, in id order.

    Each subscriber's part (secrets, schedule, failure streak) is read and parsed once, not once per
    delivery, and rows come as plain tuples: this runs on the writer thread, holding the GIL the
    delivery loop waits for.
    """
    marks = ",".join("?" * len(chosen))
    cursor = conn.cursor()
    cursor.row_factory = None
    rows = cursor.execute(
        "SELECT d.id, d.event_id, d.subscriber_id, d.failures, d.attempts, d.last_outcome, d.created_at,"
        f" e.body, e.body_packed FROM deliveries d JOIN events e ON e.id = d.event_id WHERE d.id IN ({marks})"
        " ORDER BY d.id",
        chosen,
    ).fetchall()
    parts = _subscriber_parts(conn, {row[2] for row in rows}, stamp)
    claims = []
    for delivery_id, event_id, subscriber_id, failures, attempts, last_outcome, created_at, body, packed in rows:
        name, url, secrets, timeout, schedule, failing_since, store_response = parts[subscriber_id]
        claims.append(
            Claim(
                delivery_id,
                event_id,
                unpack(body, packed),
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
            )
        )
    return claims


def _subscriber_parts(conn: sqlite3.Connection, ids: set[int], stamp: str) -> dict[int, _SubscriberPart]:
    parts: dict[int, _SubscriberPart] = {}
    for row in conn.execute(
        "SELECT id, name, url, secret, previous_secret, previous_secret_expires_at, timeout, retry_schedule,"
        f" failing_since, store_response FROM subscribers WHERE id IN ({','.join('?' * len(ids))})",
        tuple(ids),
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
        )
    return parts


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
        f" updated_at = ? WHERE id IN ({marks}) AND state IN ('pending', 'delivered', 'dead', 'dropped')",
        (iso(at), iso(at), *ids),
    ).rowcount


def recoverable(conn: sqlite3.Connection, subscriber_id: int, since: datetime, after_id: int, limit: int) -> list[int]:
    """Failed (retrying), dead or dropped deliveries created since ``since``, in id order, for bulk recovery."""
    return [
        row["id"]
        for row in conn.execute(
            "SELECT id FROM deliveries WHERE subscriber_id = ? AND created_at >= ? AND id > ?"
            " AND (state IN ('dead', 'dropped') OR (state = 'pending' AND failures > 0)) ORDER BY id LIMIT ?",
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
