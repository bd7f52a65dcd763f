"""The event log of the lazy outbox (docs/design/lazy-outbox.md): events in commit order, and what a claim leases
from it for a subscriber's cursor.

A delivery is the pair (subscriber, event). Only its exceptions are rows of ``deliveries`` (retrying, dead, held
for a confirmation, requeued by hand, and today's rows of before the log); every other matching event of the log
is owed through the subscriber's cursor: at a position ``<= acked`` it was delivered in order, in
``(acked, leased]`` it is out with a worker under the lease ``leased_by``, above ``leased`` it is pending.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson

from relay.domain.events import Event
from relay.domain.fanout import Owed
from relay.domain.filters import Filter
from relay.store.db import CHANNEL, Db
from relay.store.formats import iso
from relay.store.rows import Row

#: Serialises the events' commits across PostgreSQL replicas, so that positions are taken in commit order: a reader
#: never sees a position above a hole that a transaction still open fills later (a sequence would allow that).
LOG_LOCK = 0x636F736C6F67
#: The log's last position (0 when it is empty): one probe of its unique index, which is partial (events of before
#: the log have none), so the condition that names it is what lets SQLite use it instead of a scan; or the last
#: position pruning removed, when it removed the head.
HEAD = (
    "(SELECT max(p) FROM (SELECT max(position) AS p FROM events WHERE position IS NOT NULL"
    " UNION ALL SELECT position FROM log_floor WHERE id = 1) AS head)"
)
#: An event ``e`` that every subscriber's cursor has passed (or of before the log): retention may take it once
#: nothing else needs it (`keep_head` first). Removed subscribers' cursors hold nothing.
PASSED = (
    "(e.position IS NULL OR NOT EXISTS (SELECT 1 FROM cursors c JOIN subscribers s ON s.id = c.subscriber_id"
    " WHERE c.acked < e.position AND s.removed_at IS NULL))"
)
#: Positions of the log a claim reads past a cursor at most (non-matching events are passed over for free).
SCAN = 1000
#: How much of an event's object key is kept for filters: a prefix filter needs no more (COS keys are at most
#: 850 bytes), and a hostile sender's long key is not stored twice.
OBJECT_KEY_KEPT = 1024


async def insert_events(db: Db, owed: Sequence[Owed], held: Collection[str], callback_id: int, stamp: str) -> int:
    """Store the events at the next positions of the log (and wake every replica when this commits); a delivery
    row only for the events whose item key is ``held`` (they wait for a confirmation: `confirmations.hold`).
    Returns the deliveries owed: rows and log together."""
    if not owed:
        return 0
    events = [o.event for o in owed]
    rows = [(o.event.id, s) for o in owed if o.event.item_key in held for s in o.subscriber_ids]
    if db.dialect.postgres:
        # Taken just before the events' insert, in a statement of its own (the insert's snapshot must see every
        # position committed before the lock was granted); held until this transaction commits.
        await db.execute("SELECT pg_advisory_xact_lock(?)", LOG_LOCK)
        # One statement however many events and rows: a round trip each would cost more than the rows.
        await db.execute(
            "WITH stored AS (INSERT INTO events(id, item_key, type, subject, callback_id, created_at, body,"
            " tag, state, queue_id, bucket, object_key, position)"
            f" SELECT i, k, t, s, ?, ?, b, g, st, q, bu, o, {HEAD} + n"
            " FROM unnest(CAST(? AS text[]), CAST(? AS text[]), CAST(? AS text[]), CAST(? AS text[]),"
            " CAST(? AS bytea[]), CAST(? AS text[]), CAST(? AS text[]), CAST(? AS text[]), CAST(? AS text[]),"
            " CAST(? AS text[])) WITH ORDINALITY AS e(i, k, t, s, b, g, st, q, bu, o, n)"
            " ON CONFLICT(id) DO NOTHING RETURNING 1),"
            " queued AS (INSERT INTO deliveries(event_id, subscriber_id, state, attempts, failures, next_attempt_at,"
            " created_at, updated_at) SELECT e, s, 'pending', 0, 0, ?, ?, ?"
            " FROM unnest(CAST(? AS text[]), CAST(? AS bigint[])) AS d(e, s) ON CONFLICT(event_id, subscriber_id)"
            f" DO NOTHING) SELECT pg_notify('{CHANNEL}', '') WHERE EXISTS (SELECT 1 FROM stored)",
            callback_id,
            stamp,
            [event.id for event in events],
            [event.item_key for event in events],
            [event.type for event in events],
            [event.subject for event in events],
            [event.body for event in events],
            [event.tag for event in events],
            [event.state for event in events],
            [event.queue_id for event in events],
            [event.bucket for event in events],
            [_kept(event) for event in events],
            stamp,
            stamp,
            stamp,
            [event_id for event_id, _ in rows],
            [subscriber_id for _, subscriber_id in rows],
        )
    else:
        # One writer at a time: the next position is the log's head + 1 (one probe of its unique index).
        await db.executemany(
            "INSERT INTO events(id, item_key, type, subject, callback_id, created_at, body, body_packed,"
            " tag, state, queue_id, bucket, object_key, position) VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?,"
            f" {HEAD} + 1) ON CONFLICT(id) DO NOTHING",
            [
                (
                    event.id,
                    event.item_key,
                    event.type,
                    event.subject,
                    callback_id,
                    stamp,
                    db.dialect.pack(event.body),
                    event.tag,
                    event.state,
                    event.queue_id,
                    event.bucket,
                    _kept(event),
                )
                for event in events
            ],
        )
        await db.executemany(
            "INSERT INTO deliveries(event_id, subscriber_id, state, attempts, failures, next_attempt_at, created_at,"
            " updated_at) VALUES (?, ?, 'pending', 0, 0, ?, ?, ?) ON CONFLICT(event_id, subscriber_id) DO NOTHING",
            [(event_id, subscriber_id, stamp, stamp, stamp) for event_id, subscriber_id in rows],
        )
    return sum(len(o.subscriber_ids) for o in owed)


async def keep_head(db: Db) -> None:
    """Before pruning events: remember the log's head, so that it never goes back when its event goes."""
    await db.execute(f"UPDATE log_floor SET position = {HEAD}")


async def log_head(db: Db) -> int:
    """The last position of the event log (0 when it is empty)."""
    return int(await db.fetchval(f"SELECT {HEAD}"))


def _kept(event: Event) -> str | None:
    return None if event.object_key is None else event.object_key[:OBJECT_KEY_KEPT]


@dataclass(frozen=True)
class Leased:
    """An event of the log leased to a worker for one subscriber (no delivery row)."""

    event_id: str
    position: int
    created_at: str
    #: The lease's token: its finish counts only while the cursor is still under it.
    lease: str
    #: Whether it was out under a lease that expired (taken over: attempted again, as a retry).
    again: bool = False


async def filter_history(db: Db, subscriber_id: int) -> list[tuple[int, Filter]]:
    """The subscriber's filters, each with the position after which it applies, in position order."""
    rows = await db.fetch(
        "SELECT from_position, types, filters FROM filters WHERE subscriber_id = ? ORDER BY from_position",
        subscriber_id,
    )
    return [(row["from_position"], _filter(row)) for row in rows]


async def filter_histories(db: Db, subscriber_ids: Sequence[int]) -> dict[int, list[tuple[int, Filter]]]:
    """`filter_history` of several subscribers at once."""
    among, values = db.dialect.among("subscriber_id", subscriber_ids)
    histories: dict[int, list[tuple[int, Filter]]] = {}
    for row in await db.fetch(
        f"SELECT subscriber_id, from_position, types, filters FROM filters WHERE {among} ORDER BY from_position",
        *values,
    ):
        histories.setdefault(row["subscriber_id"], []).append((row["from_position"], _filter(row)))
    return histories


def _filter(row: Row) -> Filter:
    return Filter(tuple(orjson.loads(row["types"])), orjson.loads(row["filters"] or "{}"))


def filter_at(history: Sequence[tuple[int, Filter]], position: int) -> Filter | None:
    """The filter in force for the event at ``position`` (None: the subscriber did not exist yet)."""
    found = None
    for start, kept in history:
        if start >= position:
            break
        found = kept
    return found


async def lease(db: Db, subscriber_id: int, now: datetime, expires: datetime, limit: int) -> list[Leased]:
    """Lease up to ``limit`` of the subscriber's owed events of the log, the next ones after what is out already.

    Each claim leases a range of its own, so a lane that finished takes the next events at once while a slow one
    holds only the cursor's ``acked``. When a range's lease expired (its worker or replica died), every range of the
    subscriber is given up and the log is taken over from ``acked`` (at least once: what finished after it is sent
    again). A range ends at the last event leased, or at the last one read when fewer were owed: it passes the events
    the filter (as it was at each event) does not match and those with a delivery row for the subscriber (the row
    is their truth), owing nothing for them.
    """
    stamp = iso(now)
    cursor = await db.fetchrow(
        "SELECT acked, leased, (SELECT min(expires_at) FROM leases l WHERE l.subscriber_id = c.subscriber_id) AS expiry"
        " FROM cursors c WHERE c.subscriber_id = ?",
        subscriber_id,
    )
    if cursor is None:
        return []
    start = cursor["leased"]
    if cursor["expiry"] is not None and cursor["expiry"] <= stamp:
        await db.execute("DELETE FROM leases WHERE subscriber_id = ?", subscriber_id)
        start = cursor["acked"]
    history = await filter_history(db, subscriber_id)
    token = f"{stamp}/{uuid.uuid4().hex[:12]}"
    taken: list[Leased] = []
    last, read = start, 0
    # Read in batches sized to what is asked (a lane wants one or a few): most claims need one batch, a filter that
    # passes most events reads on, up to `SCAN` positions.
    while len(taken) < limit and read < SCAN:
        rows = await db.fetch(
            "SELECT e.id, e.position, e.created_at, e.type, e.subject, e.item_key, e.tag, e.state, e.queue_id,"
            " e.bucket, e.object_key, EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id"
            " AND d.subscriber_id = ?) AS rowed FROM events e WHERE e.position > ? ORDER BY e.position LIMIT ?",
            subscriber_id,
            last,
            min(SCAN - read, max(2 * (limit - len(taken)), 16)),
        )
        if not rows:
            break
        read += len(rows)
        for row in rows:
            last = row["position"]
            kept = filter_at(history, last)
            if row["rowed"] or kept is None:
                continue
            if kept.everything or kept.matches(matchable(row)):
                taken.append(Leased(row["id"], last, row["created_at"], token, last <= cursor["leased"]))
                if len(taken) >= limit:
                    break
    if last == start:
        if start != cursor["leased"]:
            await db.execute("UPDATE cursors SET leased = ? WHERE subscriber_id = ?", start, subscriber_id)
        return []
    if taken:
        await db.execute(
            "INSERT INTO leases(token, subscriber_id, after_position, last_position, outstanding, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            token,
            subscriber_id,
            start,
            last,
            len(taken),
            iso(expires),
        )
    # Nothing owed in what was read: passed for free (``acked`` too, when no range is out before it).
    await db.execute(
        "UPDATE cursors SET leased = ?, acked = CASE WHEN EXISTS (SELECT 1 FROM leases l"
        " WHERE l.subscriber_id = cursors.subscriber_id) THEN acked ELSE ? END, updated_at = ? WHERE subscriber_id = ?",
        last,
        last,
        stamp,
        subscriber_id,
    )
    return taken


def matchable(row: Row) -> Event:
    """An event of the log as a filter looks at it (no body)."""
    return Event(
        row["id"],
        row["type"],
        row["subject"],
        row["item_key"],
        b"",
        row["tag"],
        row["state"],
        row["queue_id"],
        row["bucket"],
        row["object_key"],
    )


async def finished(db: Db, subscriber_id: int, token: str, count: int, at: str) -> None:
    """``count`` events of the lease ``token`` are finished (delivered, or turned into delivery rows). A range with
    none left goes, and ``acked`` moves to the start of the first range still out (to ``leased`` when none is).
    A lease given up since (it expired and the log was taken over) is gone: nothing."""
    left = await db.fetchval(
        "UPDATE leases SET outstanding = outstanding - ? WHERE token = ? RETURNING outstanding", count, token
    )
    if left is None or left > 0:
        return
    await db.execute("DELETE FROM leases WHERE token = ?", token)
    await db.execute(
        "UPDATE cursors SET acked = coalesce((SELECT min(after_position) FROM leases l"
        " WHERE l.subscriber_id = cursors.subscriber_id), leased), updated_at = ? WHERE subscriber_id = ?",
        at,
        subscriber_id,
    )


async def give_back(db: Db, token: str, at: str) -> None:
    """End a lease at once (a claim handed back unattempted): the next claim takes the log over from ``acked``."""
    await db.execute("UPDATE leases SET expires_at = ? WHERE token = ?", at, token)
