"""Deliveries with no row of their own, read from the event log (docs/design/lazy-outbox.md): delivered in order,
in flight under a lease, or pending after a subscriber's cursor; the listing that shows them among the rows, and
their counts.

A listing walks the log newest first and, for each event, the subscribers it is owed to (the filter in force at the
event) newest first: the row when there is one, else the implied delivery (``"id": null``). Deliveries of events of
before the log are rows only, and come after. States only rows can have (dead, dropped, ...) are read from the rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from relay.domain.filters import Filter
from relay.store.answers import Delivery
from relay.store.db import Db
from relay.store.ops import owed
from relay.store.ops.log import HEAD, filter_at, filter_histories, matchable
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
_BATCH = 200
#: A count of a subscriber's matching events stops at this many (the figure is then a floor, said where it is
#: shown).
COUNT_CAP = 10_000

#: The answer columns of a row of ``deliveries d`` joined with its event ``e`` and subscriber ``s``.
_ROW_COLUMNS = (
    "d.id, d.event_id, e.type AS event_type, e.subject, s.name AS subscriber, d.subscriber_id, d.state, d.attempts,"
    " d.failures, d.next_attempt_at, d.last_outcome, d.last_status, d.created_at, d.updated_at, d.delivered_at"
)
_ROW_JOINS = " FROM deliveries d JOIN events e ON e.id = d.event_id JOIN subscribers s ON s.id = d.subscriber_id"
_EVENT_COLUMNS = (
    "e.id, e.position, e.created_at, e.type, e.subject, e.item_key, e.tag, e.state, e.queue_id, e.bucket, e.object_key"
)

#: The success attempt of the delivery with no row of ``{event}`` to ``{subscriber}`` (SQL expressions).
_SUCCEEDED = (
    "SELECT 1 FROM attempts a WHERE a.event_id = {event} AND a.subscriber_id = {subscriber}"
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


async def cursors(db: Db, name: str | None = None, *, removed: bool = False, only: int | None = None) -> list[Cursor]:
    """The live subscribers' cursors (``name``, ``only``: that one's; ``removed``: the removed ones' too), newest
    first."""
    rows = await db.fetch(
        "SELECT c.subscriber_id, s.name, c.acked, c.leased, s.removed_at FROM cursors c"
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
    histories = await filter_histories(db, ids)
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
            histories.get(row["subscriber_id"], []),
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
    """A listing's ``next_cursor``: ``<position>:<subscriber id>`` in the log, ``0:<row id>`` before it."""
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
) -> Page[Delivery]:
    """Deliveries, newest first (the log's order, then the rows of before it); ``subject``: of the events of that
    job or workflow run."""
    events = ("e.id = ?", event_id) if event_id is not None else ("e.subject = ?", subject) if subject else None
    at = parse_cursor(cursor)
    items: list[Delivery] = []
    walks = state is None or state in IMPLIED_STATES
    # Unfinished deliveries of the log are all after their cursor's acked: the walk stops at the lowest one, and
    # the rows in that state below it come with the rows of before the log.
    floor = await _lowest_acked(db, subscriber) if state in ("pending", "in_flight") else 0
    if walks and (at is None or at[0] > 0):
        start = at or (int(await db.fetchval(f"SELECT {HEAD}")) + 1, 0)
        items, resume = await _walk(db, subscriber, state, events, limit, start, floor)
        if resume is not None:
            return Page(items[:limit], f"{resume[0]}:{resume[1]}")
        at = None
    # The rows of before the log (for states only rows have: every row), newest first.
    before = None if at is None else at[1]
    rows = await _rows(db, subscriber, state, events, before, limit - len(items) + 1, before_log=walks, floor=floor)
    items += [_row_answer(row) for row in rows]
    if len(items) > limit:
        return Page(items[:limit], f"0:{items[limit - 1]['id']}")
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
) -> tuple[list[Delivery], tuple[int, int] | None]:
    """Up to ``limit`` + 1 deliveries of the log before ``start`` (position, subscriber id), and where the next
    page starts when this one stopped early (its scan bound, or more items than ``limit``)."""
    owed = await cursors(db, subscriber, removed=subscriber is None)
    items: list[tuple[int, int, Delivery]] = []
    upper, first, scanned = start[0], start, 0
    while scanned < PAGE_SCAN:
        clause, values = (f" AND {events_of[0]}", (events_of[1],)) if events_of is not None else ("", ())
        events = await db.fetch(
            f"SELECT {_EVENT_COLUMNS} FROM events e WHERE e.position < ? AND e.position > ?{clause}"
            " ORDER BY e.position DESC LIMIT ?",
            upper + (1 if first[1] else 0),
            floor,
            *values,
            _BATCH,
        )
        if not events:
            return [item for _, _, item in items], None
        rows, succeeded = await _around(db, [event["id"] for event in events], subscriber)
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
    db: Db, event_ids: list[str], subscriber: str | None
) -> tuple[dict[tuple[str, int], Delivery], dict[tuple[str, int], Success]]:
    """The rows of these events (``subscriber``'s only, when given), and which deliveries with no row succeeded."""
    among, values = db.dialect.among("d.event_id", event_ids, "text")
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
    among, values = db.dialect.among("event_id", event_ids, "text")
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


async def count(db: Db, state: str) -> int:
    """Deliveries in ``state``: rows, and (pending, in flight, delivered) those of the log; a filtered subscriber's
    pending ones counted up to `COUNT_CAP`, the others' exactly."""
    rows = int(await db.fetchval("SELECT count(*) FROM deliveries WHERE state = ?", state))
    if state not in IMPLIED_STATES:
        return rows
    total = rows
    if state in GAP_STATES:
        for owner in await cursors(db, removed=True):
            for after, last, reason in owner.gaps:
                total += await matching(db, owner, after, last) if reason == state else 0
        return total
    if state == "in_flight":
        return total + await _outstanding(db)
    if state == "delivered":  # delivered in order: one success attempt each, its record
        return total + int(
            await db.fetchval(
                "SELECT count(*) FROM attempts a JOIN subscribers s ON s.id = a.subscriber_id"
                " WHERE a.delivery_id IS NULL AND s.removed_at IS NULL"
            )
        )
    head = int(await db.fetchval(f"SELECT {HEAD}"))
    plain, filtered = _by_filter(await cursors(db), head)
    total += await _plain_pending(db, plain)
    for owner in filtered:
        total += await matching(db, owner, owner.leased, head)
    return total


def _everything(history: Sequence[tuple[int, Filter]], after: int, upto: int) -> bool:
    """Whether the filters in force over the events in (after, upto] all take every event (False when the
    subscriber did not exist at ``after``)."""
    # The one in force at the range's start, and those that began inside it.
    starts = [start for start, _ in history if start <= after]
    in_force = [kept for start, kept in history if starts and max(starts) <= start < upto]
    return bool(in_force) and all(kept.everything for kept in in_force)


async def matching(db: Db, owner: Cursor, after: int, upto: int, cap: int = COUNT_CAP) -> int:
    """The events in (after, upto] owed to ``owner`` with no row, up to ``cap`` of them (counted in SQL, each
    filter of its history as a condition: `owed`)."""
    return await owed.count(db, owner.id, owner.history, after, upto, cap)


#: How long the outbox gauges reuse a filtered subscriber's figures (a count per filter and subscriber) before they
#: read them again: what they may lag behind by (said in the gauges' help and docs/metrics.md).
RECOUNT_AFTER = 30.0


@dataclass(frozen=True)
class Figures:
    """A subscriber's deliveries of the log as the outbox gauges count them."""

    pending: int
    #: When the first pending one, and the first one in flight, was recorded (None: none).
    first_pending: str | None
    first_in_flight: str | None
    dropped: int


class Recounts:
    """The outbox gauges' figures of the subscribers with a filter, each read again once it is `RECOUNT_AFTER`
    seconds old: their events are counted by their filters (up to `COUNT_CAP` each), which a scrape cannot afford for
    every subscriber every time. Read again, a subscriber whose cursor, filter, given-up ranges and rows are as they
    were (paused, say: a backlog that only grows) has only the events since added. One per store (a process's own:
    PostgreSQL replicas may differ by that much)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, every: float = RECOUNT_AFTER) -> None:
        self._clock = clock
        self._every = every
        self._kept: dict[int, _Kept] = {}

    async def of(self, db: Db, owners: Sequence[Cursor], head: int) -> list[Figures]:
        """The figures of ``owners``, read again where they are too old; the others' are forgotten."""
        now = self._clock()
        due = [owner for owner in owners if owner.id not in self._kept or now - self._kept[owner.id].at >= self._every]
        due_ids = {owner.id for owner in due}
        rows = await _rows_of(db, list(due_ids)) if due else {}
        kept = {owner.id: self._kept[owner.id] for owner in owners if owner.id not in due_ids}
        for owner in due:
            basis = (owner.leased, owner.history, owner.gaps, rows.get(owner.id))
            before = self._kept.get(owner.id)
            if before is not None and before.basis == basis and head >= before.head:
                figures = await _owed_since(db, owner, before, head)
            else:
                figures = await _owed(db, owner, head)
            kept[owner.id] = _Kept(now, basis, head, figures)
        self._kept = kept
        return [found.figures for found in kept.values()]


@dataclass(frozen=True)
class _Kept:
    """A subscriber's figures, when they were read, and what from."""

    at: float
    #: Its ``leased``, filter history, given-up ranges and rows (how many, the last id): while they stay the same,
    #: only events after ``head`` can change its figures.
    basis: tuple[object, ...]
    head: int
    figures: Figures


async def _rows_of(db: Db, subscriber_ids: Sequence[int]) -> dict[int, tuple[int, int]]:
    """How many delivery rows each of the subscribers has, and the last one's id (for those with any)."""
    among, values = db.dialect.among("subscriber_id", subscriber_ids)
    return {
        row["subscriber_id"]: (row["n"], row["last"])
        for row in await db.fetch(
            f"SELECT subscriber_id, count(*) AS n, max(id) AS last FROM deliveries WHERE {among}"
            " GROUP BY subscriber_id",
            *values,
        )
    }


async def outbox(db: Db, recounts: Recounts | None = None) -> dict[str, tuple[int, str | None]]:
    """The deliveries of the log still owed (pending, in flight) and dropped, each state's count and (owed) its oldest
    event's ``created_at``. In flight: the leases' outstanding events. Subscribers whose filter takes everything:
    exact, in a few statements for all of them however many (positions between their cursors and the head, less
    their rows). Subscribers with a filter: their matching events after ``leased`` (up to `COUNT_CAP`) and in their
    `gaps` rows ``dropped``, as ``recounts`` keeps them (None: read now)."""
    head = int(await db.fetchval(f"SELECT {HEAD}"))
    plain, filtered = _by_filter(await cursors(db), head)
    figures = await (recounts or Recounts(every=0.0)).of(db, filtered, head)
    pending = await _plain_pending(db, plain) + sum(owed.pending for owed in figures)
    dropped = await _plain_dropped(db, plain) + sum(owed.dropped for owed in figures)
    first_pending, first_in_flight = await _plain_firsts(db, plain)
    return {
        "pending": (
            pending,
            min(filter(None, [first_pending, *(owed.first_pending for owed in figures)]), default=None),
        ),
        "in_flight": (
            await _outstanding(db),
            min(filter(None, [first_in_flight, *(owed.first_in_flight for owed in figures)]), default=None),
        ),
        "dropped": (dropped, None),
    }


def _by_filter(owners: Sequence[Cursor], head: int) -> tuple[list[Cursor], list[Cursor]]:
    """The subscribers whose filter takes every event over what the gauges read of the log (from their lowest
    dropped range or ``acked`` on), and the others."""
    plain: list[Cursor] = []
    filtered: list[Cursor] = []
    for owner in owners:
        low = min([owner.acked, *(after for after, _, reason in owner.gaps if reason == "dropped")])
        (plain if _everything(owner.history, low, max(head, low + 1)) else filtered).append(owner)
    return plain, filtered


async def _owed(db: Db, owner: Cursor, head: int) -> Figures:
    """A filtered subscriber's figures, its events counted by its filters."""
    pending = await matching(db, owner, owner.leased, head)
    return Figures(
        pending,
        await _first_owed(db, owner, owner.leased, head) if pending else None,
        await _first_owed(db, owner, min(after for after, _ in owner.leases), owner.leased) if owner.leases else None,
        sum([await matching(db, owner, after, last) for after, last, reason in owner.gaps if reason == "dropped"]),
    )


async def _owed_since(db: Db, owner: Cursor, before: _Kept, head: int) -> Figures:
    """A filtered subscriber's figures read ``before``, with the events recorded since (its first one in flight
    read again: its leases' events finish while ``leased`` stays)."""
    added = await matching(db, owner, before.head, head)
    first = before.figures.first_pending or (await _first_owed(db, owner, before.head, head) if added else None)
    return Figures(
        before.figures.pending + added,
        first,
        await _first_owed(db, owner, min(after for after, _ in owner.leases), owner.leased) if owner.leases else None,
        before.figures.dropped,
    )


async def _outstanding(db: Db) -> int:
    """The events out with workers under the live subscribers' leases."""
    return int(
        await db.fetchval(
            "SELECT coalesce(sum(l.outstanding), 0) FROM leases l JOIN subscribers s ON s.id = l.subscriber_id"
            " WHERE s.removed_at IS NULL"
        )
    )


async def _plain_pending(db: Db, owners: Sequence[Cursor]) -> int:
    """The pending deliveries of the log of subscribers whose filter takes everything: for each, the events after
    its ``leased``, less its rows among them. Two statements for all of them: the events between one cursor and the
    next are counted once (each cursor owes those of every stretch above it)."""
    if not owners:
        return 0
    among, values = db.dialect.among("subscriber_id", [owner.id for owner in owners])
    stretches = await db.fetch(
        "SELECT m, k, (SELECT count(*) FROM events e WHERE e.position > m AND e.position <= coalesce(n, "
        f"{HEAD})) AS events FROM (SELECT m, k, lead(m) OVER (ORDER BY m) AS n FROM (SELECT leased AS m,"
        f" count(*) AS k FROM cursors WHERE {among} GROUP BY leased) AS marks) AS bounds",
        *values,
    )
    owed, above = 0, 0
    for stretch in sorted(stretches, key=lambda stretch: -int(stretch["m"])):
        above += int(stretch["events"])
        owed += int(stretch["k"]) * above
    among, values = db.dialect.among("c.subscriber_id", [owner.id for owner in owners])
    rowed = await db.fetchval(
        "SELECT count(*) FROM cursors c JOIN deliveries d ON d.subscriber_id = c.subscriber_id"
        f" JOIN events e ON e.id = d.event_id WHERE {among} AND e.position > c.leased",
        *values,
    )
    return owed - int(rowed)


async def _plain_dropped(db: Db, owners: Sequence[Cursor]) -> int:
    """The deliveries in the ``dropped`` ranges of subscribers whose filter takes everything: the events in each
    range, less the subscriber's rows among them."""
    if not any(reason == "dropped" for owner in owners for _, _, reason in owner.gaps):
        return 0
    among, values = db.dialect.among("g.subscriber_id", [owner.id for owner in owners])
    events = await db.fetchval(
        "SELECT coalesce(sum(n), 0) FROM (SELECT (SELECT count(*) FROM events e WHERE e.position > g.from_position"
        f" AND e.position <= g.to_position) AS n FROM gaps g WHERE g.reason = 'dropped' AND {among}) AS ranges",
        *values,
    )
    rowed = await db.fetchval(
        "SELECT count(*) FROM gaps g JOIN deliveries d ON d.subscriber_id = g.subscriber_id"
        " JOIN events e ON e.id = d.event_id WHERE g.reason = 'dropped'"
        f" AND {among} AND e.position > g.from_position AND e.position <= g.to_position",
        *values,
    )
    return int(events) - int(rowed)


#: The ``created_at`` of the first event after ``{after}`` (up to ``{upto}``) with no row for ``{subscriber}`` and
#: (in a lease's range, where some are delivered already) no success.
_FIRST_OWED = (
    "(SELECT e.created_at FROM events e WHERE e.position > {after} AND e.position <= {upto} AND NOT EXISTS"
    " (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.subscriber_id = {subscriber}) AND NOT EXISTS"
    f" ({_SUCCEEDED.format(event='e.id', subscriber='{subscriber}')}) ORDER BY e.position LIMIT 1)"
)


async def _plain_firsts(db: Db, owners: Sequence[Cursor]) -> tuple[str | None, str | None]:
    """When the oldest pending and the oldest in-flight delivery of the log of subscribers whose filter takes
    everything were recorded (None: none): one probe of the log per subscriber, and per lease."""
    if not owners:
        return None, None
    ids = [owner.id for owner in owners]
    among, values = db.dialect.among("c.subscriber_id", ids)
    first = _FIRST_OWED.format(after="c.leased", upto=HEAD, subscriber="c.subscriber_id")
    pending = await db.fetchval(
        f"SELECT min(first) FROM (SELECT {first} AS first FROM cursors c WHERE {among}) AS firsts", *values
    )
    if not any(owner.leases for owner in owners):
        return pending, None
    among, values = db.dialect.among("l.subscriber_id", ids)
    first = _FIRST_OWED.format(after="l.after_position", upto="l.last_position", subscriber="l.subscriber_id")
    in_flight = await db.fetchval(
        f"SELECT min(first) FROM (SELECT {first} AS first FROM leases l WHERE {among}) AS firsts", *values
    )
    return pending, in_flight


async def _first_owed(db: Db, owner: Cursor, after: int, upto: int) -> str | None:
    """When the first event in (after, upto] owed to ``owner`` with no row and no success was recorded (within
    `_BATCH` events)."""
    for event in await db.fetch(
        f"SELECT {_EVENT_COLUMNS}, EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id"
        f" AND d.subscriber_id = ?) OR EXISTS ({_SUCCEEDED.format(event='e.id', subscriber='?')}) AS settled"
        " FROM events e WHERE e.position > ? AND e.position <= ? ORDER BY e.position LIMIT ?",
        owner.id,
        owner.id,
        after,
        upto,
        _BATCH,
    ):
        if not event["settled"] and owner.owes(event):
            return str(event["created_at"])
    return None


async def of_pair(db: Db, subscriber_id: int, event_id: str) -> Delivery | None:
    """The delivery of ``event_id`` to the subscriber: its row, or the one the log implies (None: not owed)."""
    row = await db.fetchrow(
        f"SELECT {_ROW_COLUMNS}{_ROW_JOINS} WHERE d.subscriber_id = ? AND d.event_id = ?", subscriber_id, event_id
    )
    if row is not None:
        return _row_answer(row)
    event = await db.fetchrow(
        f"SELECT {_EVENT_COLUMNS} FROM events e WHERE e.id = ? AND e.position IS NOT NULL", event_id
    )
    owners = [owner for owner in await cursors(db) if owner.id == subscriber_id]
    if event is None or not owners or not owners[0].owes(event):
        return None
    succeeded = await db.fetchrow(
        "SELECT status, started_at FROM attempts WHERE event_id = ? AND subscriber_id = ? AND delivery_id IS NULL"
        " AND outcome = 'success'",
        event_id,
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
        "UPDATE attempts SET delivery_id = ? WHERE event_id = ? AND subscriber_id = ? AND delivery_id IS NULL",
        delivery_id,
        event_id,
        subscriber_id,
    )
    return delivery_id


async def owed_upto(db: Db, owner: Cursor, after: int, count: int) -> tuple[int, int]:
    """How many of the events after ``after`` owed to ``owner`` with no row, up to ``count``, and the position of
    the last of them (``after`` when none)."""
    found, last, read = 0, after, after
    while found < count:
        events = await db.fetch(
            f"SELECT {_EVENT_COLUMNS}, EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id"
            " AND d.subscriber_id = ?) AS rowed FROM events e WHERE e.position > ? ORDER BY e.position LIMIT ?",
            owner.id,
            read,
            _BATCH,
        )
        if not events:
            break
        for event in events:
            read = event["position"]
            if not event["rowed"] and owner.owes(event):
                found, last = found + 1, read
                if found == count:
                    break
    return found, last


async def recent_states(db: Db, owner: Cursor, limit: int) -> dict[str, int]:
    """The states of the subscriber's latest attempted deliveries of the log with no row (up to ``limit``, from
    its last leased event down), by state."""
    found: dict[str, int] = {}
    events = await db.fetch(
        f"SELECT {_EVENT_COLUMNS}, EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id"
        " AND d.subscriber_id = ?) AS rowed FROM events e WHERE e.position <= ? AND e.position > ?"
        " ORDER BY e.position DESC LIMIT ?",
        owner.id,
        owner.leased,
        max(0, owner.leased - PAGE_SCAN),
        PAGE_SCAN,
    )
    owed = [event for event in events if not event["rowed"] and owner.owes(event)][:limit]
    if owed:
        among, values = db.dialect.among("event_id", [event["id"] for event in owed], "text")
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
        " AND a.subscriber_id = ? AND a.event_id IN (SELECT e.id FROM events e WHERE e.position <= ?"
        " AND e.position IS NOT NULL ORDER BY e.position DESC LIMIT 100) ORDER BY a.id DESC LIMIT 1",
        owner.id,
        owner.leased,
    )
