"""What the event log owes subscribers, counted: deliveries by state (the API), the outbox gauges' figures (a
filtered subscriber's kept between scrapes: `Recounts`), and backlogs for shedding.

A subscriber's filters are SQL conditions here, so that a count stops at the matches it asks for however many
events a filter passes over (a filter that takes one event in a hundred, counted by reading events, would stop at a
hundredth of the matches asked).
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from relay.domain.events import EVENT_TYPES
from relay.domain.filters import Filter
from relay.store.db import Db
from relay.store.ops.histories import History
from relay.store.ops.implied import BATCH, EVENT_COLUMNS, GAP_STATES, IMPLIED_STATES, SUCCEEDED, Cursor, cursors
from relay.store.ops.log import HEAD

#: A count of a subscriber's owed events stops at this many (the figure is then a floor, said where it is shown).
COUNT_CAP = 10_000


def _condition(db: Db, kept: Filter) -> tuple[str, tuple[object, ...]] | None:
    """The events ``e`` that ``kept`` takes, as a condition and its values; None when it takes none.

    Types are matched against the known event types (every event has one of them); ``*`` takes any."""
    clauses: list[str] = []
    values: list[object] = []
    if "*" not in kept.types:
        types = sorted({known for pattern in kept.types for known in fnmatch.filter(EVENT_TYPES, pattern)})
        if not types:
            return None
        among, typed = db.dialect.among("e.type", types, "text")
        clauses.append(among)
        values += typed
    for key, wanted in sorted(kept.match.items()):
        if key == "object_prefix":
            if wanted:  # an empty prefix takes every key, and events without one
                clauses.append("substr(e.object_key, 1, ?) = ?")
                values += [len(wanted), wanted]
        else:
            clauses.append(f"e.{key} = ?")
            values.append(wanted)
    return " AND ".join(clauses) or "TRUE", tuple(values)


def _segments(history: History, after: int, upto: int) -> Iterator[tuple[int, int, Filter]]:
    """The ranges (start, end] of (after, upto] with the filter in force over each (none before the first)."""
    for index, (start, kept) in enumerate(history):
        end = history[index + 1][0] if index + 1 < len(history) else upto
        low, high = max(start, after), min(end, upto)
        if high > low:
            yield low, high, kept


async def matching(db: Db, owner: Cursor, after: int, upto: int, cap: int = COUNT_CAP) -> int:
    """The events in (after, upto] owed to ``owner`` with no row of its own, up to ``cap`` of them."""
    total = 0
    for low, high, kept in _segments(owner.history, after, upto):
        if total >= cap:
            break
        found = _condition(db, kept)
        if found is None:
            continue
        clause, values = found
        total += int(
            await db.fetchval(
                "SELECT count(*) FROM (SELECT 1 FROM events e WHERE e.position > ? AND e.position <= ?"
                f" AND {clause} AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id"
                " AND d.subscriber_id = ?) LIMIT ?) AS owed",
                low,
                high,
                *values,
                owner.id,
                cap - total,
            )
        )
    return total


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
    f" ({SUCCEEDED.format(position='e.position', subscriber='{subscriber}')}) ORDER BY e.position LIMIT 1)"
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
    `BATCH` events)."""
    for event in await db.fetch(
        f"SELECT {EVENT_COLUMNS}, EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id"
        f" AND d.subscriber_id = ?) OR EXISTS ({SUCCEEDED.format(position='e.position', subscriber='?')}) AS settled"
        " FROM events e WHERE e.position > ? AND e.position <= ? ORDER BY e.position LIMIT ?",
        owner.id,
        owner.id,
        after,
        upto,
        BATCH,
    ):
        if not event["settled"] and owner.owes(event):
            return str(event["created_at"])
    return None


async def upto(db: Db, owner: Cursor, after: int, count: int) -> tuple[int, int]:
    """How many of the events after ``after`` owed to ``owner`` with no row, up to ``count``, and the position of
    the last of them (``after`` when none)."""
    found, last, read = 0, after, after
    while found < count:
        events = await db.fetch(
            f"SELECT {EVENT_COLUMNS}, EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id"
            " AND d.subscriber_id = ?) AS rowed FROM events e WHERE e.position > ? ORDER BY e.position LIMIT ?",
            owner.id,
            read,
            BATCH,
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
