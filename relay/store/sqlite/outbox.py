"""The outbox: subscribers, events fanned out to deliveries, leases, attempts, replay."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson

from relay.outbox.events import Event
from relay.outbox.filters import Filter
from relay.outbox.subscribers import Subscriber, SubscriberSpec, SubscriberState
from relay.store.records import Claim, Finished, Recorded
from relay.store.sqlite.connection import iso, to_json

_SUBSCRIBER_COLUMNS = (
    "id, name, url, secret, previous_secret, previous_secret_expires_at, types, filters, state, disabled_reason,"
    " failing_since, max_in_flight, timeout, retry_schedule, source, created_at"
)


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _subscriber(row: sqlite3.Row) -> Subscriber:
    schedule = orjson.loads(row["retry_schedule"]) if row["retry_schedule"] else None
    return Subscriber(
        id=row["id"],
        name=row["name"],
        url=row["url"],
        secret=row["secret"],
        filter=Filter(tuple(orjson.loads(row["types"])), orjson.loads(row["filters"])),
        state=SubscriberState(row["state"]),
        max_in_flight=row["max_in_flight"],
        timeout=row["timeout"],
        retry_schedule=tuple(schedule) if schedule is not None else None,
        previous_secret=row["previous_secret"],
        previous_secret_expires_at=_when(row["previous_secret_expires_at"]),
        disabled_reason=row["disabled_reason"],
        failing_since=_when(row["failing_since"]),
        created_at=_when(row["created_at"]),
        source=row["source"],
    )


# -- subscribers ------------------------------------------------------------------------------------


def list_subscribers(conn: sqlite3.Connection) -> list[Subscriber]:
    return [
        _subscriber(row)
        for row in conn.execute(f"SELECT {_SUBSCRIBER_COLUMNS} FROM subscribers WHERE removed_at IS NULL ORDER BY name")
    ]


def get_subscriber(conn: sqlite3.Connection, name: str) -> Subscriber | None:
    row = conn.execute(
        f"SELECT {_SUBSCRIBER_COLUMNS} FROM subscribers WHERE name = ? AND removed_at IS NULL", (name,)
    ).fetchone()
    return None if row is None else _subscriber(row)


def insert_subscriber(conn: sqlite3.Connection, spec: SubscriberSpec, at: datetime) -> Subscriber:
    """Raises sqlite3.IntegrityError when the name is taken."""
    conn.execute(
        "INSERT INTO subscribers(name, url, secret, types, filters, state, max_in_flight, timeout, retry_schedule,"
        " source, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'enabled', ?, ?, ?, ?, ?, ?)",
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


# -- fan-out ----------------------------------------------------------------------------------------


class SubscriberCache:
    """The subscribers as the ingest path last read them, reread only when the table changed.

    Every change to a subscriber's URL, filters or state bumps ``updated_at``, so count and newest
    ``updated_at`` are enough to notice one (from this process or another).
    """

    def __init__(self) -> None:
        self._key: tuple[object, ...] | None = None
        self._subscribers: list[Subscriber] = []

    def get(self, conn: sqlite3.Connection) -> list[Subscriber]:
        key = tuple(conn.execute("SELECT count(*), max(updated_at) FROM subscribers").fetchone())
        if key != self._key:
            self._subscribers, self._key = list_subscribers(conn), key
        return self._subscribers


def fan_out(
    conn: sqlite3.Connection, events: Sequence[Event], callback_id: int, at: datetime, subscribers: SubscriberCache
) -> int:
    """Store the events and one pending delivery per matching subscriber; returns deliveries created.

    Paused and disabled subscribers get deliveries too: they are held, not lost, until resumed.
    """
    if not events:
        return 0
    stamp = iso(at)
    conn.executemany(
        "INSERT INTO events(id, item_key, type, subject, callback_id, created_at, body) VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT(id) DO NOTHING",
        [(e.id, e.item_key, e.type, e.subject, callback_id, stamp, e.body) for e in events],
    )
    current = subscribers.get(conn)
    rows = [
        (e.id, s.id, stamp, stamp, stamp) for e in events for s in current if s.filter.everything or s.filter.matches(e)
    ]
    conn.executemany(
        "INSERT INTO deliveries(event_id, subscriber_id, state, attempts, failures, next_attempt_at, created_at,"
        " updated_at) VALUES (?, ?, 'pending', 0, 0, ?, ?, ?) ON CONFLICT(event_id, subscriber_id) DO NOTHING",
        rows,
    )
    return len(rows)


# -- the worker's side ------------------------------------------------------------------------------


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
        "SELECT d.id, d.event_id, d.failures, d.attempts, d.created_at, d.last_outcome, e.body, s.id AS sid, s.name,"
        " s.url, s.secret, s.previous_secret, s.previous_secret_expires_at, s.timeout, s.retry_schedule"
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
        body=bytes(row["body"]),
        subscriber_id=row["sid"],
        subscriber=row["name"],
        url=row["url"],
        secrets=tuple(secrets),
        timeout=row["timeout"],
        retry_schedule=tuple(schedule) if schedule is not None else None,
        failures=row["failures"],
        trigger=trigger,
        created_at=datetime.fromisoformat(row["created_at"]),
    )


def finish(conn: sqlite3.Connection, finished: Sequence[Finished], lease_margin: timedelta) -> list[Recorded]:
    """Record a batch of attempts, apply their decisions, and lease each lane its subscriber's next delivery.

    Handing the freed slots straight to the next deliveries saves the worker a claim transaction per
    attempt; claiming once per subscriber for the whole batch saves most of the claim's queries.
    """
    disabled = [_apply(conn, item) for item in finished]
    lanes: dict[int, list[int]] = {}  # subscriber id -> positions whose lane wants a next delivery
    for position, (item, reason) in enumerate(zip(finished, disabled, strict=True)):
        if reason is None:
            lanes.setdefault(item.claim.subscriber_id, []).append(position)
    following: dict[int, Claim] = {}
    if lanes:
        at = max(item.finished_at for item in finished)
        for subscriber_id, positions in lanes.items():
            claims = claim_due(conn, at, lease_margin, len(positions), subscriber_id)
            following.update(zip(positions, claims, strict=False))
    return [Recorded(reason, following.get(position)) for position, reason in enumerate(disabled)]


def _apply(conn: sqlite3.Connection, finished: Finished) -> str | None:
    claim, attempt, decision = finished.claim, finished.attempt, finished.decision
    stamp = iso(finished.finished_at)
    conn.execute(
        "INSERT INTO attempts(delivery_id, started_at, duration, outcome, status, error, response_body, trigger)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            claim.delivery_id,
            iso(finished.started_at),
            attempt.duration,
            attempt.outcome.value,
            attempt.status,
            attempt.error,
            attempt.response_body,
            claim.trigger,
        ),
    )
    delivered = decision.state == "delivered"
    # A delivery cancelled meanwhile (subscriber removed) stays cancelled.
    conn.execute(
        "UPDATE deliveries SET state = ?, next_attempt_at = coalesce(?, next_attempt_at), lease_expires_at = NULL,"
        " failures = failures + ?, last_outcome = ?, last_status = ?, updated_at = ?,"
        " delivered_at = CASE WHEN ? THEN ? ELSE delivered_at END WHERE id = ? AND state = 'in_flight'",
        (
            decision.state,
            iso(decision.next_attempt_at) if decision.next_attempt_at else None,
            0 if delivered else 1,
            attempt.outcome.value,
            attempt.status,
            stamp,
            delivered,
            stamp,
            claim.delivery_id,
        ),
    )
    if delivered:
        conn.execute(
            "UPDATE subscribers SET failing_since = NULL WHERE id = ? AND failing_since IS NOT NULL",
            (claim.subscriber_id,),
        )
        return None
    conn.execute(
        "UPDATE subscribers SET failing_since = coalesce(failing_since, ?) WHERE id = ?", (stamp, claim.subscriber_id)
    )
    reason = decision.disable_reason
    if reason is None and decision.disable_if_failing_since is not None:
        row = conn.execute("SELECT failing_since FROM subscribers WHERE id = ?", (claim.subscriber_id,)).fetchone()
        if row["failing_since"] <= iso(decision.disable_if_failing_since):
            reason = f"failing continuously since {row['failing_since']}"
    if reason is None:
        return None
    disabled = conn.execute(
        "UPDATE subscribers SET state = 'disabled', disabled_reason = ?, updated_at = ?"
        " WHERE id = ? AND state = 'enabled'",
        (reason, stamp, claim.subscriber_id),
    ).rowcount
    return reason if disabled else None


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
    return _when(row["due"])


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
