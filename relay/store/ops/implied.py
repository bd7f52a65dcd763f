"""Deliveries with no row of their own, read from the event log (docs/design/lazy-outbox.md): delivered in order,
in flight under a lease, or pending after a subscriber's cursor; the listing that shows them among the rows, and
their counts.

A listing walks the log newest first and, for each event, the subscribers it is owed to (the filter in force at the
event) newest first: the row when there is one, else the implied delivery (``"id": null``). Deliveries of events of
before the log are rows only, and come after. States only rows can have (dead, dropped, ...) are read from the rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from relay.domain.filters import Filter
from relay.store.answers import Delivery
from relay.store.db import Db
from relay.store.ops.histories import HISTORY_KEY, Histories, filter_at, filter_histories, history_key, matchable
from relay.store.ops.log import HEAD
from relay.store.records import Page
from relay.store.rows import Row

#: The states a delivery with no row can be in; any other is a row's.
IMPLIED_STATES = ("pending", "in_flight", "delivered", "dropped", "cancelled")
#: The states of a range of the log given up in bulk (a `gaps` row's reason).
GAP_STATES = ("dropped", "cancelled")
#: Events of the log one page of a listing reads at most: a page may then hold fewer items than asked, with a
#: ``next_cursor`` to go on from (bounded work per request).
PAGE_SCAN = 2000
#: Events read at a time while walking the log.
BATCH = 200

#: The answer columns of a row of ``deliveries d`` joined with its event ``e`` and subscriber ``s``.
_ROW_COLUMNS = (
    "d.id, d.event_id, e.type AS event_type, e.subject, s.name AS subscriber, d.subscriber_id, d.state, d.attempts,"
    " d.failures, d.next_attempt_at, d.last_outcome, d.last_status, d.created_at, d.updated_at, d.delivered_at"
)
_ROW_JOINS = " FROM deliveries d JOIN events e ON e.id = d.event_id JOIN subscribers s ON s.id = d.subscriber_id"
EVENT_COLUMNS = (
    "e.id, e.position, e.created_at, e.type, e.subject, e.item_key, e.tag, e.state, e.queue_id, e.bucket, e.object_key"
)

#: The success attempt of the delivery with no row of the event at ``{position}`` of the log to ``{subscriber}`` (SQL
#: expressions). The attempts of the log are found by position, not event id: see `m018_attempts_by_position`.
SUCCEEDED = (
    "SELECT 1 FROM attempts a WHERE a.position = {position} AND a.subscriber_id = {subscriber}"
    " AND a.delivery_id IS NULL AND a.outcome = 'success'"
)


@dataclass(frozen=True)
class Cursor:
    """A live subscriber's place in the log, as the reads see it."""

    id: int
    name: str
    acked: int
    leased: int
    history: list[tuple[int, Filter]]
    #: The ranges (after, last] out with workers.
    leases: list[tuple[int, int]]
    #: The ranges (after, last] given up in bulk, with why: dropped (backlog shedding), cancelled (removed).
    gaps: list[tuple[int, int, str]]
    #: A removed subscriber's: only what it was given up or delivered is shown.
    removed: bool = False

    def state(self, position: int, succeeded: bool) -> str | None:
        """The state of its delivery of the event at ``position`` (owed to it, no row); None when it was delivered
        and its record (the attempt) is gone with the retention window."""
        for after, last, reason in self.gaps:
            if after < position <= last:
                return reason
        if succeeded:
            return "delivered"
        if self.removed:
            return None
        if position > self.leased:
            return "pending"
        if any(after < position <= last for after, last in self.leases):
            return "in_flight"
        return None

    def owes(self, event: Row) -> bool:
        kept = filter_at(self.history, event["position"])
        return kept is not None and (kept.everything or kept.matches(matchable(event)))


async def cursors(
    db: Db,
    name: str | None = None,
    *,
    removed: bool = False,
    only: int | None = None,
    histories: Histories | None = None,
) -> list[Cursor]:
    """The live subscribers' cursors (``name``, ``only``: that one's; ``removed``: the removed ones' too), newest
    first. ``histories``: the filter histories this process read before (the store's), parsed again only where they
    changed (their keys are read with the cursors); without, every history is read and parsed."""
    keys = f", {HISTORY_KEY}" if histories is not None else ""
    rows = await db.fetch(
        f"SELECT c.subscriber_id, s.name, c.acked, c.leased, s.removed_at{keys} FROM cursors c"
        " JOIN subscribers s ON s.id = c.subscriber_id"
        " WHERE (s.removed_at IS NULL OR CAST(? AS boolean)) AND (CAST(? AS text) IS NULL OR s.name = ?)"
        " AND (CAST(? AS bigint) IS NULL OR s.id = ?) ORDER BY c.subscriber_id DESC",
        removed,
        name,
        name,
        only,
        only,
    )
    if not rows:
        return []
    ids = [row["subscriber_id"] for row in rows]
    if histories is not None:
        kept = await histories.of(db, {row["subscriber_id"]: history_key(row) for row in rows})
    else:
        kept = await filter_histories(db, ids)
    leases: dict[int, list[tuple[int, int]]] = {}
    among, values = db.dialect.among("subscriber_id", ids)
    for lease in await db.fetch(
        f"SELECT subscriber_id, after_position, last_position FROM leases WHERE {among}", *values
    ):
        leases.setdefault(lease["subscriber_id"], []).append((lease["after_position"], lease["last_position"]))
    gaps: dict[int, list[tuple[int, int, str]]] = {}
    for gap in await db.fetch(
        f"SELECT subscriber_id, from_position, to_position, reason FROM gaps WHERE {among}", *values
    ):
        gaps.setdefault(gap["subscriber_id"], []).append((gap["from_position"], gap["to_position"], gap["reason"]))
    return [
        Cursor(
            row["subscriber_id"],
            row["name"],
            row["acked"],
            row["leased"],
            kept.get(row["subscriber_id"], []),
            leases.get(row["subscriber_id"], []),
            gaps.get(row["subscriber_id"], []),
            row["removed_at"] is not None,
        )
        for row in rows
    ]


async def _lowest_acked(db: Db, subscriber: str | None) -> int:
    """The lowest ``acked`` of the live cursors (``subscriber``'s alone, when given)."""
    return int(
        await db.fetchval(
            "SELECT coalesce(min(c.acked), 0) FROM cursors c JOIN subscribers s ON s.id = c.subscriber_id"
            " WHERE s.removed_at IS NULL AND (CAST(? AS text) IS NULL OR s.name = ?)",
            subscriber,
            subscriber,
        )
    )


def parse_cursor(cursor: str | None) -> tuple[int, int] | None:
    """A listing's ``next_cursor``: ``<position>:<subscriber id>`` in the log, ``0:<row id>`` before it (``0:0``: the
    rows from the newest)."""
    if cursor is None:
        return None
    position, _, after = cursor.partition(":")
    return int(position), int(after or 0)


async def list_deliveries(
    db: Db,
    *,
    subscriber: str | None,
    state: str | None,
    event_id: str | None,
    limit: int,
    cursor: str | None,
    subject: str | None = None,
    histories: Histories | None = None,
) -> Page[Delivery]:
    """Deliveries, newest first (the log's order, then the rows of before it); ``subject``: of the events of that
    job or workflow run. ``histories``: the store's filter histories (at 1,000 subscribers, parsing every filter
    again was half of a page)."""
    events = ("e.id = ?", event_id) if event_id is not None else ("e.subject = ?", subject) if subject else None
    at = parse_cursor(cursor)
    items: list[Delivery] = []
    walks = state is None or state in IMPLIED_STATES
    # Unfinished deliveries of the log are all after their cursor's acked: the walk stops at the lowest one, and
    # the rows in that state below it come with the rows of before the log.
    floor = await _lowest_acked(db, subscriber) if state in ("pending", "in_flight") else 0
    if walks and (at is None or at[0] > 0):
        start = at or (int(await db.fetchval(f"SELECT {HEAD}")) + 1, 0)
        items, resume = await _walk(db, subscriber, state, events, limit, start, floor, histories)
        if resume is not None:
            return Page(items[:limit], f"{resume[0]}:{resume[1]}")
        at = None
    # The rows of before the log (for states only rows have: every row), newest first; ``0:0`` starts them.
    before = None if at is None or not at[1] else at[1]
    walked = len(items)
    rows = await _rows(db, subscriber, state, events, before, limit - len(items) + 1, before_log=walks, floor=floor)
    items += [_row_answer(row) for row in rows]
    if len(items) > limit:
        # A page the walk filled ends before the rows: the next one starts them from the newest.
        return Page(items[:limit], f"0:{items[limit - 1]['id'] if limit > walked else 0}")
    return Page(items, None)


async def _rows(
    db: Db,
    subscriber: str | None,
    state: str | None,
    events: tuple[str, str | None] | None,
    before: int | None,
    limit: int,
    *,
    before_log: bool,
    floor: int = 0,
) -> Sequence[Row]:
    conditions = ["(e.position IS NULL OR e.position <= ?)"] if before_log else []
    values: list[object] = [floor] if before_log else []
    for clause, value in (
        ("s.name = ? AND s.removed_at IS NULL", subscriber),
        ("d.state = ?", state),
        (events or ("", None)),
        ("d.id < ?", before),
    ):
        if value is not None:
            conditions.append(clause)
            values.append(value)
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    return await db.fetch(f"SELECT {_ROW_COLUMNS}{_ROW_JOINS}{where} ORDER BY d.id DESC LIMIT ?", *values, limit)


async def _walk(
    db: Db,
    subscriber: str | None,
    state: str | None,
    events_of: tuple[str, str | None] | None,
    limit: int,
    start: tuple[int, int],
    floor: int = 0,
    histories: Histories | None = None,
) -> tuple[list[Delivery], tuple[int, int] | None]:
    """Up to ``limit`` + 1 deliveries of the log before ``start`` (position, subscriber id), and where the next
    page starts when this one stopped early (its scan bound, or more items than ``limit``)."""
    owed = await cursors(db, subscriber, removed=subscriber is None, histories=histories)
    items: list[tuple[int, int, Delivery]] = []
    upper, first, scanned = start[0], start, 0
    while scanned < PAGE_SCAN:
        clause, values = (f" AND {events_of[0]}", (events_of[1],)) if events_of is not None else ("", ())
        events = await db.fetch(
            f"SELECT {EVENT_COLUMNS} FROM events e WHERE e.position < ? AND e.position > ?{clause}"
            " ORDER BY e.position DESC LIMIT ?",
            upper + (1 if first[1] else 0),
            floor,
            *values,
            BATCH,
        )
        if not events:
            return [item for _, _, item in items], None
        rows, succeeded = await _around(db, events, subscriber)
        for event in events:
            position = event["position"]
            pairs: dict[int, Delivery] = {}
            for owner in owed:
                if (event["id"], owner.id) not in rows and owner.owes(event):
                    implied = _implied(event, owner, succeeded.get((event["id"], owner.id)))
                    if implied is not None:
                        pairs[owner.id] = implied
            for (event_key, subscriber_id), row in rows.items():
                if event_key == event["id"]:
                    pairs[subscriber_id] = row
            for subscriber_id in sorted(pairs, reverse=True):
                if position == first[0] and first[1] and subscriber_id >= first[1]:
                    continue
                if state is None or pairs[subscriber_id]["state"] == state:
                    items.append((position, subscriber_id, pairs[subscriber_id]))
            if len(items) > limit:
                last = items[limit - 1]
                return [item for _, _, item in items], (last[0], last[1])
        scanned += len(events)
        upper, first = events[-1]["position"], (0, 0)
    return [item for _, _, item in items], (upper, 0)


async def _around(
    db: Db, events: Sequence[Row], subscriber: str | None
) -> tuple[dict[tuple[str, int], Delivery], dict[tuple[str, int], Success]]:
    """The rows of these events (``subscriber``'s only, when given), and which deliveries with no row succeeded."""
    among, values = db.dialect.among("d.event_id", [event["id"] for event in events], "text")
    rows = {
        (row["event_id"], row["subscriber_id"]): _row_answer(row)
        for row in await db.fetch(
            f"SELECT {_ROW_COLUMNS}{_ROW_JOINS} WHERE {among}"
            " AND (CAST(? AS text) IS NULL OR (s.name = ? AND s.removed_at IS NULL))",
            *values,
            subscriber,
            subscriber,
        )
    }
    among, values = db.dialect.among("position", [event["position"] for event in events])
    succeeded = {
        (row["event_id"], row["subscriber_id"]): (row["status"], row["started_at"])
        for row in await db.fetch(
            f"SELECT event_id, subscriber_id, status, started_at FROM attempts WHERE {among} AND delivery_id IS NULL"
            " AND outcome = 'success'",
            *values,
        )
    }
    return rows, succeeded


#: A delivery with no row that succeeded: its attempt's HTTP status and when it started.
Success = tuple[int | None, str]


def _implied(event: Row, owner: Cursor, succeeded: Success | None) -> Delivery | None:
    state = owner.state(event["position"], succeeded is not None)
    if state is None:
        return None
    status, delivered_at = succeeded if succeeded is not None and state == "delivered" else (None, None)
    return Delivery(
        id=None,
        event_id=event["id"],
        event_type=event["type"],
        subject=event["subject"],
        subscriber=owner.name,
        subscriber_id=owner.id,
        state=state,
        attempts=0 if state == "pending" else 1,
        failures=0,
        next_attempt_at=event["created_at"] if state == "pending" else None,
        last_outcome="success" if state == "delivered" else None,
        last_status=status,
        created_at=event["created_at"],
        updated_at=delivered_at or event["created_at"],
        delivered_at=delivered_at,
    )


def _row_answer(row: Row) -> Delivery:
    return Delivery(
        id=row["id"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        subject=row["subject"],
        subscriber=row["subscriber"],
        subscriber_id=row["subscriber_id"],
        state=row["state"],
        attempts=row["attempts"],
        failures=row["failures"],
        next_attempt_at=row["next_attempt_at"],
        last_outcome=row["last_outcome"],
        last_status=row["last_status"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        delivered_at=row["delivered_at"],
    )


async def of_pair(db: Db, subscriber_id: int, event_id: str) -> Delivery | None:
    """The delivery of ``event_id`` to the subscriber: its row, or the one the log implies (None: not owed)."""
    row = await db.fetchrow(
        f"SELECT {_ROW_COLUMNS}{_ROW_JOINS} WHERE d.subscriber_id = ? AND d.event_id = ?", subscriber_id, event_id
    )
    if row is not None:
        return _row_answer(row)
    event = await db.fetchrow(
        f"SELECT {EVENT_COLUMNS} FROM events e WHERE e.id = ? AND e.position IS NOT NULL", event_id
    )
    owners = [owner for owner in await cursors(db) if owner.id == subscriber_id]
    if event is None or not owners or not owners[0].owes(event):
        return None
    succeeded = await db.fetchrow(
        "SELECT status, started_at FROM attempts WHERE position = ? AND subscriber_id = ? AND delivery_id IS NULL"
        " AND outcome = 'success'",
        event["position"],
        subscriber_id,
    )
    return _implied(event, owners[0], None if succeeded is None else (succeeded["status"], succeeded["started_at"]))


async def materialise(db: Db, subscriber_id: int, event_id: str, at: str) -> int | None:
    """The id of the delivery's row, written first when the log implies it (its state as implied, the attempts of
    the log's delivery kept as its own): what an action on one delivery needs. None: not owed."""
    found = await of_pair(db, subscriber_id, event_id)
    if found is None or found["id"] is not None:
        return None if found is None else found["id"]
    delivered = found["state"] == "delivered"
    expires = (
        await db.fetchval("SELECT min(expires_at) FROM leases WHERE subscriber_id = ?", subscriber_id)
        if found["state"] == "in_flight"
        else None
    )
    delivery_id = int(
        await db.fetchval(
            "INSERT INTO deliveries(event_id, subscriber_id, state, attempts, failures, next_attempt_at,"
            " lease_expires_at, last_outcome, created_at, updated_at, delivered_at)"
            " VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?) RETURNING id",
            event_id,
            subscriber_id,
            found["state"],
            found["attempts"],
            found["created_at"],
            expires,
            found["last_outcome"],
            found["created_at"],
            at,
            at if delivered else None,
        )
    )
    await db.execute(
        "UPDATE attempts SET delivery_id = ? WHERE position = (SELECT position FROM events WHERE id = ?)"
        " AND subscriber_id = ? AND delivery_id IS NULL",
        delivery_id,
        event_id,
        subscriber_id,
    )
    return delivery_id


async def recent_states(db: Db, owner: Cursor, limit: int) -> dict[str, int]:
    """The states of the subscriber's latest attempted deliveries of the log with no row (up to ``limit``, from
    its last leased event down), by state."""
    found: dict[str, int] = {}
    events = await db.fetch(
        f"SELECT {EVENT_COLUMNS}, EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id"
        " AND d.subscriber_id = ?) AS rowed FROM events e WHERE e.position <= ? AND e.position > ?"
        " ORDER BY e.position DESC LIMIT ?",
        owner.id,
        owner.leased,
        max(0, owner.leased - PAGE_SCAN),
        PAGE_SCAN,
    )
    owed = [event for event in events if not event["rowed"] and owner.owes(event)][:limit]
    if owed:
        among, values = db.dialect.among("position", [event["position"] for event in owed])
        succeeded = {
            row["event_id"]
            for row in await db.fetch(
                f"SELECT event_id FROM attempts WHERE {among} AND subscriber_id = ? AND delivery_id IS NULL"
                " AND outcome = 'success'",
                *values,
                owner.id,
            )
        }
        for event in owed:
            state = owner.state(event["position"], event["id"] in succeeded)
            if state is not None:
                found[state] = found.get(state, 0) + 1
    return found


async def last_attempt(db: Db, owner: Cursor) -> Row | None:
    """The latest attempt of the subscriber's deliveries of the log with no row (among its 100 latest events)."""
    return await db.fetchrow(
        "SELECT a.id, a.outcome, a.status, a.error, a.started_at FROM attempts a WHERE a.delivery_id IS NULL"
        " AND a.subscriber_id = ? AND a.position IN (SELECT e.position FROM events e WHERE e.position <= ?"
        " AND e.position IS NOT NULL ORDER BY e.position DESC LIMIT 100) ORDER BY a.id DESC LIMIT 1",
        owner.id,
        owner.leased,
    )
