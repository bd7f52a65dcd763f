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

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson

from relay.domain.delivery import Claim, trigger_of
from relay.domain.destinations import ContentMode, Kind, Rate, Route, parse_rate, slowest
from relay.store.db import CHANNEL, Db
from relay.store.formats import iso, when
from relay.store.ops import log
from relay.store.ops.histories import HISTORY_KEY, Histories, history_key
from relay.store.ops.log import Leased
from relay.store.rows import Row, signing_secrets


async def notify(db: Db) -> None:
    """Wake every replica's worker when this transaction commits (PostgreSQL folds repeats into one); SQLite's
    processes find each other's work by polling."""
    if db.dialect.postgres:
        await db.execute(f"NOTIFY {CHANNEL}")


async def claim_due(
    db: Db,
    now: datetime,
    lease_margin: timedelta,
    capacity: int,
    wants: Mapping[int, int] | None = None,
    histories: Histories | None = None,
    held: Collection[int] = (),
    run: int = 1,
) -> list[Claim]:
    """Lease up to ``capacity`` lanes' work, honouring each subscriber's in-flight limit (in lanes): its due delivery
    rows first (retries, requeued, and rows of before the log), a lane each, then the next owed events of the log
    after its cursor, each lane a run of up to ``run`` of them under a lease of its own (`relay.domain.delivery.runs`
    groups a claim's runs).

    A lease lasts the subscriber's timeout plus ``lease_margin``; one that expired (its worker or replica
    died) makes the delivery claimable again. A subscriber with ``max_in_flight = 1`` only ever gets its
    oldest unfinished delivery, so its order is strict: the log is read only when it has no unfinished row. Its
    runs are of one event, as are those of a subscriber paced by a rate or waiting for its handshake.
    ``wants`` limits the claim to those subscribers, each to that many lanes (a finished batch's lanes). ``histories``:
    the filter histories this process read before (`Histories`). ``held``: the subscribers whose cursors the
    transaction holds already (`log.hold_cursors`).

    The subscribers' state comes in one statement, and their logs are leased together (`log.lease`): a claim costs
    statements per subscriber only for its delivery rows and its rate.
    """
    stamp = iso(now)
    histories = histories or Histories()
    chosen: list[int] = []
    leased: list[tuple[int, Leased]] = []
    #: A rate-limited subscriber's pacing as read, and how many of its rows this claim took.
    paced: dict[int, tuple[Rate, datetime | None, int]] = {}
    after = 0
    while len(chosen) + _lanes(leased) < capacity:
        # A page of subscribers with room, no more than the room left (each takes one at least, but for its rate).
        # Their logs are leased together; a subscriber given fewer lanes than asked leaves room to the next page.
        reserved = len(chosen) + _lanes(leased)
        page = await _subscribers(db, stamp, wants, after, capacity - reserved)
        if not page:
            break
        asks: list[log.Want] = []
        keys: dict[int, tuple[object, ...]] = {}
        for row in page:
            if reserved >= capacity:
                break
            after = row["id"]
            busy = row["busy"]
            free = min(row["max_in_flight"] - busy, capacity - reserved)
            if wants is not None:
                free = min(free, wants[row["id"]])
            waiting = row["handshake"] and row["granted"] is None
            if waiting:
                free = min(free, 1 - busy)  # its receiver is asked first, once: the grant may set a slower rate
            rate, free_at = _rate(row), None
            if rate is not None and free > 0:
                # Read once the row is locked (PostgreSQL): another replica's pacing is committed by then.
                free_at = when(await db.fetchval("SELECT free_at FROM rate_pacing WHERE subscriber_id = ?", row["id"]))
                free = rate.pace(now, free_at, free).allowed
            if free <= 0:
                continue
            expires = now + timedelta(seconds=row["timeout"]) + lease_margin
            if row["max_in_flight"] == 1:
                head = await _head_if_due(db, row["id"], stamp) if row["unfinished"] else None
                ids, count = head or [], 1 if head is None else 0
            else:
                ids = await _due(db, row["id"], stamp, free) if row["rows_due"] else []
                count = free - len(ids)
            expired = row["expiry"] is not None and row["expiry"] <= stamp
            if count and row["acked"] is not None and (row["log_behind"] or expired):
                # A rate paces events and a handshake's grant may set one: a lane of theirs takes one at a time.
                length = 1 if row["max_in_flight"] == 1 or rate is not None or waiting else run
                asks.append(log.Want(row["id"], row["leased"], expired, count, expires, length))
                keys[row["id"]] = history_key(row)
            else:
                count = 0
            if rate is not None:
                paced[row["id"]] = (rate, free_at, len(ids))
            if ids:
                among, values = db.dialect.among("id", ids)
                await db.execute(
                    "UPDATE deliveries SET state = 'in_flight', lease_expires_at = ?, attempts = attempts + 1,"
                    f" updated_at = ? WHERE {among}",
                    iso(expires),
                    stamp,
                    *values,
                )
                chosen += ids
            reserved += len(ids) + count
        if asks:
            leased += await log.lease(db, asks, await histories.of(db, keys), now, held)
    for subscriber_id, (rate, free_at, rows) in paced.items():
        taken = rows + sum(1 for owner, _ in leased if owner == subscriber_id)
        if taken:
            await db.execute(
                "INSERT INTO rate_pacing(subscriber_id, free_at) VALUES (?, ?)"
                " ON CONFLICT(subscriber_id) DO UPDATE SET free_at = excluded.free_at",
                subscriber_id,
                iso(rate.pace(now, free_at, taken).free_at),
            )
    if not chosen and not leased:
        return []
    return await _claims(db, chosen, leased, stamp)


def _lanes(leased: Sequence[tuple[int, Leased]]) -> int:
    return len({event.lease for _, event in leased})


#: Whether the subscriber ``s`` has delivery rows due (?: now, twice): pending and due, or in flight and expired.
_ROWS_DUE = (
    "(EXISTS (SELECT 1 FROM deliveries d WHERE d.subscriber_id = s.id AND d.state = 'pending'"
    " AND d.next_attempt_at <= ?) OR EXISTS (SELECT 1 FROM deliveries d WHERE d.subscriber_id = s.id"
    " AND d.state = 'in_flight' AND d.lease_expires_at <= ?))"
)


#: The subscriber ``s``'s lanes out with workers (?: now, twice): rows in flight and the log's leases that hold (a
#: lane's run of events is one lease, sent one event at a time).
_BUSY = (
    "((SELECT count(*) FROM deliveries d WHERE d.subscriber_id = s.id AND d.state = 'in_flight'"
    " AND d.lease_expires_at > ?) + (SELECT count(*) FROM leases l WHERE l.subscriber_id = s.id AND l.expires_at > ?))"
)


#: A subscriber's state as a claim needs it, for the subscriber ``s`` (?: now, four times): its deliveries out with
#: workers (rows in flight and leased events of the log under leases that hold), its cursor and whether the log goes
#: on after it, when its first lease expires, whether it has delivery rows due or unfinished, its filter history's
#: key. On PostgreSQL read once the subscriber is locked, in a statement of its own: it then sees what another
#: replica committed before the lock was granted.
_STATE = (
    f"{_BUSY} AS busy,"
    f" c.acked, c.leased, c.leased < {log.HEAD} AS log_behind,"
    " (SELECT min(expires_at) FROM leases l WHERE l.subscriber_id = s.id) AS expiry,"
    f" {_ROWS_DUE} AS rows_due,"
    " (EXISTS (SELECT 1 FROM deliveries d WHERE d.subscriber_id = s.id AND d.state = 'pending')"
    " OR EXISTS (SELECT 1 FROM deliveries d WHERE d.subscriber_id = s.id AND d.state = 'in_flight')) AS unfinished,"
    f" {HISTORY_KEY} FROM subscribers s LEFT JOIN cursors c ON c.subscriber_id = s.id"
)


#: Whether the subscriber's cursor has work (?: now): the log longer than what it leased, or a lease expired. The
#: cursor is compared with the head (one probe of the log's index a statement), as in `_STATE` and `next_due`: an
#: EXISTS over the events after it was planned by PostgreSQL as a scan of the events table from its start, which
#: grew with the log (0.7 ms a claim after 2,000 events).
_LOG_DUE = (
    f"EXISTS (SELECT 1 FROM cursors c WHERE c.subscriber_id = s.id AND (c.leased < {log.HEAD}"
    " OR EXISTS (SELECT 1 FROM leases l WHERE l.subscriber_id = s.id AND l.expires_at <= ?)))"
)


#: The rate a receiver allowed in a CloudEvents handshake that still holds for the subscriber's URL (its expiry is
#: the handshake's business: an expired grant still paces until it is asked again).
_HANDSHAKE = "LEFT JOIN handshakes h ON h.subscriber_id = s.id AND h.granted = 1 AND h.url = s.url AND s.handshake = 1"
_ALLOWED_RATE = "h.allowed_rate, s.handshake, h.subscriber_id AS granted"


def _rate(row: Row) -> Rate | None:
    """The subscriber's own rate or the one its receiver allowed, whichever is slower."""
    return slowest(*(parse_rate(row[key]) for key in ("rate", "allowed_rate") if row[key] is not None))


async def _subscribers(
    db: Db, stamp: str, wants: Mapping[int, int] | None, after: int, limit: int
) -> list[dict[str, Any]]:
    """Up to ``limit`` enabled subscribers after the id ``after``, in id order, with due work and room for it
    (``wants``: of those), each with its state (`_STATE`). PostgreSQL: those no other replica is claiming for,
    locked."""
    among, values = ("TRUE", ()) if wants is None else db.dialect.among("s.id", sorted(wants))
    due = (
        f"s.state = 'enabled' AND s.removed_at IS NULL AND {among} AND s.id > ? AND ({_ROWS_DUE} OR {_LOG_DUE})"
        f" AND {_BUSY} < s.max_in_flight ORDER BY s.id LIMIT ?"
    )
    arguments = (*values, after, *(stamp,) * 5, limit)
    if not db.dialect.postgres:
        # One writer: the state in the same statement (the due test written out: its columns' names in a WHERE
        # around the query made SQLite compute them twice).
        rows = await db.fetch(
            f"SELECT s.id, s.max_in_flight, s.timeout, s.rate, {_ALLOWED_RATE}, {_STATE} {_HANDSHAKE} WHERE {due}",
            *(stamp,) * 4,
            *arguments,
        )
        return [dict(row) for row in rows]
    locked = await db.fetch(
        f"SELECT s.id, s.max_in_flight, s.timeout, s.rate, {_ALLOWED_RATE} FROM subscribers s {_HANDSHAKE}"
        f" WHERE {due} FOR NO KEY UPDATE OF s SKIP LOCKED",
        *arguments,
    )
    if not locked:
        return []
    held, ids = db.dialect.among("s.id", [row["id"] for row in locked])
    states = {row["id"]: row for row in await db.fetch(f"SELECT s.id, {_STATE} WHERE {held}", *(stamp,) * 4, *ids)}
    return [{**dict(row), **dict(states[row["id"]])} for row in locked]


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


async def _head_if_due(db: Db, subscriber_id: int, stamp: str) -> list[int] | None:
    """The subscriber's oldest unfinished delivery row, if it may be attempted now (strict order); None when it has
    no unfinished row (its head is then the log's next owed event)."""
    head = await db.fetchrow(
        "SELECT id, state, next_attempt_at, lease_expires_at FROM deliveries WHERE id = (SELECT min(id) FROM ("
        " SELECT min(id) AS id FROM deliveries WHERE subscriber_id = ? AND state = 'pending'"
        " UNION ALL SELECT min(id) FROM deliveries WHERE subscriber_id = ? AND state = 'in_flight') AS heads)",
        subscriber_id,
        subscriber_id,
    )
    if head is None:
        return None
    due_at = head["next_attempt_at"] if head["state"] == "pending" else head["lease_expires_at"]
    return [head["id"]] if due_at <= stamp else []


#: A subscriber's part of every claim of it: everything but the delivery's own fields.
_SubscriberPart = tuple[str, str, tuple[str, ...], float, tuple[float, ...] | None, datetime | None, bool, Route]


async def _claims(db: Db, chosen: list[int], leased: list[tuple[int, Leased]], stamp: str) -> list[Claim]:
    """The claims of the leased delivery rows, in id order, then of the leased events of the log, in position order.

    Each subscriber's part (secrets, schedule, failure streak) is read and parsed once, not once per
    delivery, each event's body is inflated once however many subscribers take it (the claims share the bytes),
    and rows are taken by position: on SQLite this runs on the writer thread, holding the GIL the delivery loop
    waits for.
    """
    rows: Sequence[Row] = []
    if chosen:
        among, values = db.dialect.among("d.id", chosen)
        rows = await db.fetch(
            "SELECT d.id, d.event_id, d.subscriber_id, d.failures, d.attempts, d.last_outcome, d.created_at,"
            f" e.body, {db.dialect.packed('e.body')} FROM deliveries d JOIN events e ON e.id = d.event_id"
            f" WHERE {among} ORDER BY d.id",
            *values,
        )
    bodies: dict[str, bytes] = {}
    if leased:
        among, values = db.dialect.among("id", sorted({event.event_id for _, event in leased}), "text")
        for row in await db.fetch(f"SELECT id, body, {db.dialect.packed('body')} FROM events WHERE {among}", *values):
            event_id, body, packed = tuple(row)
            bodies[event_id] = db.dialect.unpack(body, packed)
    subscribers = {row["subscriber_id"] for row in rows} | {subscriber_id for subscriber_id, _ in leased}
    parts = await _subscriber_parts(db, subscribers, stamp)
    claims = []
    for row in rows:
        delivery_id, event_id, subscriber_id, failures, attempts, last_outcome, created_at, body, packed = tuple(row)
        if event_id not in bodies:
            bodies[event_id] = db.dialect.unpack(body, packed)
        part, trigger = parts[subscriber_id], trigger_of(attempts, last_outcome)
        claims.append(
            _claim(part, subscriber_id, event_id, bodies[event_id], created_at, delivery_id, failures, trigger)
        )
    for subscriber_id, event in leased:
        part, trigger = parts[subscriber_id], "retry" if event.again else "first"
        claims.append(
            _claim(
                part,
                subscriber_id,
                event.event_id,
                bodies[event.event_id],
                event.created_at,
                None,
                0,
                trigger,
                event.lease,
                event.position,
            )
        )
    return claims


def _claim(
    part: _SubscriberPart,
    subscriber_id: int,
    event_id: str,
    body: bytes,
    created_at: str,
    delivery_id: int | None,
    failures: int,
    trigger: str,
    lease: str | None = None,
    position: int | None = None,
) -> Claim:
    name, url, secrets, timeout, schedule, failing_since, store_response, route = part
    return Claim(
        delivery_id,
        event_id,
        body,
        subscriber_id,
        name,
        url,
        secrets,
        timeout,
        schedule,
        failures,
        trigger,
        datetime.fromisoformat(created_at),
        failing_since,
        store_response,
        route,
        lease,
        position,
    )


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
    """When the next delivery of an enabled subscriber becomes due (a pending row, its cursor behind the log's
    head, or a lease expiring).

    One index lookup per enabled subscriber: scanning the pending deliveries instead cost the idle
    worker a pass over every delivery held for paused subscribers, after every callback.
    """
    # A rate-limited subscriber's next delivery is due when both it and the rate's pacing allow. A cursor behind
    # the head with no range out is due since it last moved (now, in effect).
    due = await db.fetchval(
        "SELECT min(t) AS due FROM (SELECT CASE WHEN p.free_at > o.t THEN p.free_at ELSE o.t END AS t"
        " FROM (SELECT i.id, i.rate, CASE WHEN i.r IS NULL OR i.c < i.r THEN i.c ELSE i.r END AS t FROM ("
        " SELECT s.id, s.rate, (SELECT min(d.next_attempt_at) FROM deliveries d"
        " WHERE d.subscriber_id = s.id AND d.state = 'pending') AS r,"
        " (SELECT CASE WHEN c.leased < ? THEN c.updated_at ELSE (SELECT min(l.expires_at) FROM leases l"
        " WHERE l.subscriber_id = s.id) END FROM cursors c WHERE c.subscriber_id = s.id) AS c FROM subscribers s"
        " WHERE s.state = 'enabled' AND s.removed_at IS NULL) AS i) AS o"
        " LEFT JOIN rate_pacing p ON p.subscriber_id = o.id AND o.rate IS NOT NULL"
        " UNION ALL SELECT min(lease_expires_at) FROM deliveries WHERE state = 'in_flight') AS due",
        await log.log_head(db),
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
    """Give back a lease that was never attempted (shutdown), so it is due again at once (an event of the log: its
    lease's range, taken over by the next claim)."""
    if claim.lease is not None:
        await log.give_back(db, claim.lease, iso(at))
        await notify(db)
        return
    await db.execute(
        "UPDATE deliveries SET state = 'pending', lease_expires_at = NULL, attempts = attempts - 1, updated_at = ?"
        " WHERE id = ? AND state = 'in_flight'",
        iso(at),
        claim.delivery_id,
    )
    await notify(db)
