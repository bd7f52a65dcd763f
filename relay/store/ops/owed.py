"""A subscriber's filter as SQL: how many events of a range of the log it is owed, counted by the database.

A count then stops at the matches it asks for, however many events a filter passes over (a filter that takes one
event in a hundred, counted by reading events, would stop at a hundredth of the matches asked).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Sequence

from relay.domain.events import EVENT_TYPES
from relay.domain.filters import Filter
from relay.store.db import Db

#: A subscriber's filters, each with the position after which it applies, in position order (`log.History`).
History = Sequence[tuple[int, Filter]]


def condition(db: Db, kept: Filter) -> tuple[str, tuple[object, ...]] | None:
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


def segments(history: History, after: int, upto: int) -> Iterator[tuple[int, int, Filter]]:
    """The ranges (start, end] of (after, upto] with the filter in force over each (none before the first)."""
    for index, (start, kept) in enumerate(history):
        end = history[index + 1][0] if index + 1 < len(history) else upto
        low, high = max(start, after), min(end, upto)
        if high > low:
            yield low, high, kept


async def count(db: Db, subscriber_id: int, history: History, after: int, upto: int, cap: int) -> int:
    """The events in (after, upto] owed to the subscriber with no row of its own, up to ``cap`` of them."""
    total = 0
    for low, high, kept in segments(history, after, upto):
        found = condition(db, kept)
        if found is None or total >= cap:
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
                subscriber_id,
                cap - total,
            )
        )
    return total
