"""A subscriber's filter history over the event log: the filter in force at each position (a change applies from the
log's head at the change), read once per process while it holds (`Histories`), and what a filter looks at of an
event."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import orjson

from relay.domain.events import Event
from relay.domain.filters import Filter
from relay.store.db import Db
from relay.store.rows import Row

#: A subscriber's filters, each with the position after which it applies, in position order.
History = list[tuple[int, Filter]]


async def filter_histories(db: Db, subscriber_ids: Sequence[int]) -> dict[int, History]:
    """The filter history of each of ``subscriber_ids`` that has one."""
    among, values = db.dialect.among("subscriber_id", subscriber_ids)
    histories: dict[int, History] = {}
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


#: What tells whether a subscriber's filter history changed (`HISTORY_KEY`'s columns, by their names): a change
#: appends an entry at the log's head, or replaces the last one when the head has not moved since; the last entry
#: is always the subscriber's own ``types`` and ``filters`` (`subscribers._filter_from`).
HISTORY_KEY_COLUMNS = ("history_entries", "history_last", "types", "filters")
#: `HISTORY_KEY_COLUMNS` for the subscriber ``s`` of a query.
HISTORY_KEY = (
    "(SELECT count(*) FROM filters f WHERE f.subscriber_id = s.id) AS history_entries,"
    " (SELECT max(from_position) FROM filters f WHERE f.subscriber_id = s.id) AS history_last, s.types, s.filters"
)


class Histories:
    """The filter histories as this process's claims and pages of deliveries last read them, each kept while its key
    (`HISTORY_KEY`, read in the caller's own transaction) is the same: a caller reads and parses only the histories
    that changed since, whichever process or replica changed them.

    Shared by threads (SQLite's readers and its writer): an entry is a (key, history) pair, replaced whole, and each
    caller answers with the pairs it checked against its own keys, never with what another thread put there since."""

    def __init__(self) -> None:
        self._kept: dict[int, tuple[tuple[object, ...], History]] = {}

    async def of(self, db: Db, keys: Mapping[int, tuple[object, ...]]) -> dict[int, History]:
        """The history of each subscriber of ``keys`` (subscriber id -> its key as read now)."""
        found: dict[int, History] = {}
        for subscriber_id, key in keys.items():
            kept = self._kept.get(subscriber_id)
            if kept is not None and kept[0] == key:
                found[subscriber_id] = kept[1]
        stale = [subscriber_id for subscriber_id in keys if subscriber_id not in found]
        if stale:
            read = await filter_histories(db, stale)
            for subscriber_id in stale:
                found[subscriber_id] = read.get(subscriber_id, [])
                self._kept[subscriber_id] = (keys[subscriber_id], found[subscriber_id])
        return found


def history_key(row: Row) -> tuple[object, ...]:
    return tuple(row[column] for column in HISTORY_KEY_COLUMNS)


def takes_everything(history: History, after: int) -> bool:
    """Whether every filter in force for the events after ``after`` takes every event."""
    since = max((start for start, _ in history if start <= after), default=None)
    return all(kept.everything for start, kept in history if since is None or start >= since)


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
