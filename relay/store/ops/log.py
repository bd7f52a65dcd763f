"""The event log of the lazy outbox (docs/design/lazy-outbox.md): events in commit order, and what a claim leases
from it for a subscriber's cursor.

A delivery is the pair (subscriber, event). Only its exceptions are rows of ``deliveries`` (retrying, dead, held
for a confirmation, requeued by hand, and today's rows of before the log); every other matching event of the log
is owed through the subscriber's cursor: at a position ``<= acked`` it was delivered in order, in
``(acked, leased]`` it is out with a worker under a lease (a range of the ``leases`` table, one per lane) or was
finished in a range that went, above ``leased`` it is pending. The filters in force at each position:
`relay.store.ops.histories`.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from relay.domain.events import Event
from relay.store.db import CHANNEL, Db
from relay.store.formats import iso
from relay.store.ops.histories import History, filter_at, matchable, takes_everything

_T = TypeVar("_T")

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
#: A cursor moved to ``leased`` (?) past events it owes nothing more for, ``acked`` with it (?) when no range is out
#: (?: updated_at, subscriber id).
MOVE_PAST = (
    "UPDATE cursors SET leased = ?, acked = CASE WHEN EXISTS (SELECT 1 FROM leases l"
    " WHERE l.subscriber_id = cursors.subscriber_id) THEN acked ELSE ? END, updated_at = ? WHERE subscriber_id = ?"
)
#: A range with nothing owed left is gone: ``acked`` moves to the first range still out, ``leased`` when none (?:
#: updated_at, subscriber id).
_ACK_TO_FIRST_RANGE = (
    "UPDATE cursors SET acked = coalesce((SELECT min(after_position) FROM leases l"
    " WHERE l.subscriber_id = cursors.subscriber_id), leased), updated_at = ? WHERE subscriber_id = ?"
)
_INSERT_LEASE = (
    "INSERT INTO leases(token, subscriber_id, after_position, last_position, outstanding, expires_at, handed_back)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
#: A lease ended at once, its range unattempted (`handed_back`): the next claim takes it over as first attempts.
_HAND_BACK = "UPDATE leases SET expires_at = ?, handed_back = 1 WHERE token = ?"


async def insert_events(db: Db, events: Sequence[Event], callback_id: int, stamp: str) -> None:
    """Store the events at the next positions of the log (and wake every replica when this commits). On PostgreSQL
    the transaction holds `LOG_LOCK` from here to its commit: a subscriber change (`subscribers.lock`) waits for it,
    so what a change reads of the log's head, and what ``hold`` reads of the subscribers after this, agree."""
    if not events:
        return
    if db.dialect.postgres:
        # Taken just before the events' insert, in a statement of its own (the insert's snapshot must see every
        # position committed before the lock was granted); held until this transaction commits.
        await db.execute("SELECT pg_advisory_xact_lock(?)", LOG_LOCK)
        # One statement however many events: a round trip each would cost more than the rows.
        await db.execute(
            "WITH stored AS (INSERT INTO events(id, item_key, type, subject, callback_id, created_at, body,"
            " tag, state, queue_id, bucket, object_key, position)"
            f" SELECT i, k, t, s, ?, ?, b, g, st, q, bu, o, {HEAD} + n"
            " FROM unnest(CAST(? AS text[]), CAST(? AS text[]), CAST(? AS text[]), CAST(? AS text[]),"
            " CAST(? AS bytea[]), CAST(? AS text[]), CAST(? AS text[]), CAST(? AS text[]), CAST(? AS text[]),"
            " CAST(? AS text[])) WITH ORDINALITY AS e(i, k, t, s, b, g, st, q, bu, o, n)"
            " ON CONFLICT(id) DO NOTHING RETURNING 1)"
            f" SELECT pg_notify('{CHANNEL}', '') WHERE EXISTS (SELECT 1 FROM stored)",
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
    #: Whether it was out under a lease that expired with its worker (taken over: perhaps sent, so attempted as a
    #: retry). A range handed back unattempted is taken over as first attempts.
    again: bool = False


@dataclass(frozen=True)
class Want:
    """What a claim asks of a subscriber's log: its cursor as read once the subscriber is held, and how many."""

    subscriber_id: int
    leased: int
    #: A range of its expired (its worker or replica died): that range is taken over, the others stay with theirs.
    expired: bool
    #: Lanes: each gets a lease of its own, over a run of up to ``run`` owed events.
    count: int
    expires: datetime
    run: int = 1


@dataclass(frozen=True)
class _Entry:
    """An event of the log as a claim reads it: no body; its filter attributes only when a filter needs them."""

    event_id: str
    position: int
    created_at: str
    #: The subscribers with a delivery row for it (the row is their truth: the log owes them nothing for it).
    rowed: frozenset[int]
    event: Event | None


class _Log:
    """A run of consecutive events of the log read by one claim, so that the subscribers it serves at the same place
    (1,000 subscribers keeping up: every cursor one event behind) share one read."""

    def __init__(self, db: Db, attributes: bool) -> None:
        self._db = db
        self._attributes = attributes
        self._after = 0
        self._entries: list[_Entry] = []
        self._ended = False

    def _covers(self, after: int) -> bool:
        """Whether every event after ``after`` read so far is in the run (the run goes on from there)."""
        return self._after <= after and (self._ended or after <= self._last())

    def _last(self) -> int:
        return self._entries[-1].position if self._entries else self._after

    async def after(self, after: int, size: int) -> list[_Entry]:
        """The events after ``after`` read so far, with at least ``size`` more read when the run ends before them
        (fewer at the log's end)."""
        if not self._covers(after):
            self._after, self._entries, self._ended = after, [], False
        found = self._entries[bisect.bisect_right(self._entries, after, key=lambda entry: entry.position) :]
        if len(found) < size and not self._ended:
            more = await self._read(self._last(), size - len(found))
            self._ended = len(more) < size - len(found)
            self._entries += more
            found += more
        return found

    async def _read(self, after: int, size: int) -> list[_Entry]:
        # The filter attributes are stored after the body: reading them walks the body's overflow pages (SQLite).
        attributes = ", e.type, e.subject, e.item_key, e.tag, e.state, e.queue_id, e.bucket, e.object_key"
        rows = await self._db.fetch(
            "SELECT e.id, e.position, e.created_at, EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id)"
            f" AS rowed{attributes if self._attributes else ''} FROM events e WHERE e.position > ?"
            " ORDER BY e.position LIMIT ?",
            after,
            size,
        )
        rowed: dict[str, set[int]] = {}
        if any(row["rowed"] for row in rows):
            among, values = self._db.dialect.among("event_id", [row["id"] for row in rows if row["rowed"]], "text")
            for row in await self._db.fetch(f"SELECT event_id, subscriber_id FROM deliveries WHERE {among}", *values):
                rowed.setdefault(row["event_id"], set()).add(row["subscriber_id"])
        return [
            _Entry(
                row["id"],
                row["position"],
                row["created_at"],
                frozenset(rowed.get(row["id"], ())),
                matchable(row) if self._attributes else None,
            )
            for row in rows
        ]


async def lease(
    db: Db, wants: Sequence[Want], histories: Mapping[int, History], now: datetime, held: Collection[int] = ()
) -> list[tuple[int, Leased]]:
    """Lease each subscriber of ``wants`` up to its count of lanes, each lane a run of up to ``run`` of its owed events
    of the log under a lease (a range) of its own, the next ones after what is out already; the subscribers at the
    same place share one read of the log.

    A lease per lane is what a subscriber's in-flight limit counts (`deliveries._BUSY`): a lane sends one event at a
    time, so a run holds one place however long it is, and the lane sends its next event while the last one's record
    commits. When a range's lease expired (its worker or replica died), that range is taken over (`_take_over`): at
    least once, so what its worker finished but had not recorded is sent again, but the ranges other lanes hold, and
    those already finished, are not. The last range ends at the last event read when fewer were owed: it passes the
    events the filter (as it was at each event) does not match and those with a delivery row for the subscriber (the
    row is their truth), owing nothing for them. ``held``: the subscribers whose cursors this transaction holds
    already (`hold_cursors`).
    """
    stamp = iso(now)
    await hold_cursors(db, [want.subscriber_id for want in wants if want.subscriber_id not in held])
    leased: list[tuple[int, Leased]] = []
    for want in [want for want in wants if want.expired]:
        leased += await _take_over(db, want, histories[want.subscriber_id], now)
    wants = [want for want in wants if not want.expired]
    everything = {want.subscriber_id: takes_everything(histories[want.subscriber_id], want.leased) for want in wants}
    read = _Log(db, attributes=not all(everything.values()))
    ranges: list[_Range] = []
    moved: list[tuple[int, int, str, int]] = []
    for want in sorted(wants, key=lambda want: want.leased):
        history, wanted = histories[want.subscriber_id], want.count * want.run
        taken: list[_Entry] = []
        last, passed = want.leased, 0
        # Read in batches sized to what is asked (a lane wants one or a few): most claims need one batch, a filter that
        # passes most events reads on, up to `SCAN` positions. A filter that takes everything owes every event but
        # those with a row: no more is read than asked.
        while len(taken) < wanted and passed < SCAN:
            left = wanted - len(taken)
            size = left if everything[want.subscriber_id] else max(2 * left, 16)
            entries = await read.after(last, min(SCAN - passed, size))
            if not entries:
                break
            for entry in entries[: SCAN - passed]:
                last, passed = entry.position, passed + 1
                if _owes(history, want.subscriber_id, entry):
                    taken.append(entry)
                    if len(taken) >= wanted:
                        break
        if last == want.leased:
            continue
        cut, runs = _lanes(want, taken, want.count, want.leased, last, stamp)
        ranges += cut
        leased += runs
        moved.append((last, last, stamp, want.subscriber_id))
    if ranges:
        await db.executemany(_INSERT_LEASE, ranges)
    if moved:
        # Nothing owed in what was read: passed for free (``acked`` too, when no range is out before it).
        await db.executemany(MOVE_PAST, moved)
    return leased


#: A lease's row: token, subscriber id, after_position, last_position, outstanding, expires_at, handed_back.
_Range = tuple[str, int, int, int, int, str, int]


def _lanes(
    want: Want,
    taken: Sequence[_Entry],
    lanes: int,
    after: int,
    end: int,
    stamp: str,
    *,
    again: bool = False,
) -> tuple[list[_Range], list[tuple[int, Leased]]]:
    """The range (after, end] cut into a lease per lane, each over a run of ``taken`` (`_split`), the last to ``end``;
    and each run's events under its lease (``again``: taken over from an expired lease)."""
    ranges: list[_Range] = []
    leased: list[tuple[int, Leased]] = []
    start = after
    for run in _split(taken, lanes):
        token = _token(stamp)
        stop = end if run[-1] is taken[-1] else run[-1].position
        ranges.append((token, want.subscriber_id, start, stop, len(run), iso(want.expires), 0))
        leased += [
            (want.subscriber_id, Leased(entry.event_id, entry.position, entry.created_at, token, again))
            for entry in run
        ]
        start = stop
    return ranges, leased


def _split(items: Sequence[_T], lanes: int) -> list[Sequence[_T]]:
    """``items`` in order over at most ``lanes`` runs as even as can be: as many lanes as there are items, up to
    ``lanes`` (a short backlog is sent in parallel, a long one in runs)."""
    count = min(lanes, len(items))
    size, longer = divmod(len(items), count) if count else (0, 0)
    runs: list[Sequence[_T]] = []
    start = 0
    for index in range(count):
        end = start + size + (1 if index < longer else 0)
        runs.append(items[start:end])
        start = end
    return runs


async def _take_over(db: Db, want: Want, history: History, now: datetime) -> list[tuple[int, Leased]]:
    """The owed events of ``want``'s expired ranges, oldest first, up to its count of lanes, each lane's run under a
    new lease.

    What is left of a range past the lanes stays out under a lease of its own that has already expired (handed back
    if the range was), for the next claim; the dead worker's token is gone, so a finish it reports after all counts
    for nothing. The events of a range that expired with its worker are retries (it may have sent them); those of
    one handed back unattempted are first attempts."""
    stamp = iso(now)
    expired = await db.fetch(
        "SELECT token, after_position, last_position, handed_back FROM leases"
        " WHERE subscriber_id = ? AND expires_at <= ?"
        " ORDER BY after_position",
        want.subscriber_id,
        stamp,
    )
    leased: list[tuple[int, Leased]] = []
    lanes = want.count
    for row in expired:
        if lanes <= 0:
            break
        after, last = row["after_position"], row["last_position"]
        entries = await _Log(db, attributes=not takes_everything(history, after)).after(after, last - after)
        owed = [entry for entry in entries if entry.position <= last and _owes(history, want.subscriber_id, entry)]
        taken = owed[: lanes * want.run]
        end = taken[-1].position if len(taken) < len(owed) else last
        await db.execute("DELETE FROM leases WHERE token = ?", row["token"])
        handed_back = row["handed_back"]
        rows, runs = _lanes(want, taken, lanes, after, end, stamp, again=not handed_back)
        leased += runs
        lanes -= len(rows)
        if end < last:  # the rest, for the next claim
            rows.append((_token(stamp), want.subscriber_id, end, last, len(owed) - len(taken), stamp, handed_back))
        if rows:
            await db.executemany(_INSERT_LEASE, rows)
    await db.execute(_ACK_TO_FIRST_RANGE, stamp, want.subscriber_id)
    return leased


def _token(stamp: str) -> str:
    """A new lease's token: when it was made, and enough randomness that no two claims share one."""
    # 48 random bits, as uuid4().hex[:12] gave, for a fifth of its cost: a claim at 1,000 subscribers makes a
    # token for each.
    return f"{stamp}/{os.urandom(6).hex()}"


def _owes(history: History, subscriber_id: int, entry: _Entry) -> bool:
    """Whether the log owes ``subscriber_id`` the event: no row of its own, and the filter then in force takes it."""
    kept = filter_at(history, entry.position)
    if subscriber_id in entry.rowed or kept is None:
        return False
    return kept.everything or (entry.event is not None and kept.matches(entry.event))


@dataclass(frozen=True)
class Progress:
    """What a finish did to one lease: ``count`` of its events finished (delivered, or turned into delivery rows),
    the last of them at ``position``; ``given_back``: its lane stopped, the rest is for the next claim."""

    count: int
    position: int
    given_back: bool


async def finished(db: Db, progress: Mapping[tuple[int, str], Progress], at: str) -> None:
    """Of each lease (subscriber id, token) of ``progress``, that many events are finished. A lane sends its run in
    order, so the lease's range then starts after the last one finished (a crash sends again only what is after it);
    a range with none left goes, one given back expires now, and ``acked`` moves to the start of the first range
    still out (to ``leased`` when none is): one write per lease and one per subscriber, however many events. A lease
    given up since (it expired and the log was taken over) is gone: nothing. The caller holds the subscribers'
    cursors (`hold_cursors`)."""
    if not progress:
        return
    subscriber_ids = sorted({subscriber_id for subscriber_id, _ in progress})
    await db.executemany(
        "UPDATE leases SET outstanding = outstanding - ?,"
        " after_position = CASE WHEN after_position < ? THEN ? ELSE after_position END WHERE token = ?",
        [(done.count, done.position, done.position, token) for (_, token), done in progress.items()],
    )
    await db.executemany("DELETE FROM leases WHERE token = ? AND outstanding <= 0", [(token,) for _, token in progress])
    given_back = [(at, token) for (_, token), done in progress.items() if done.given_back]
    if given_back:
        await db.executemany(_HAND_BACK, given_back)
    await db.executemany(_ACK_TO_FIRST_RANGE, [(at, subscriber_id) for subscriber_id in subscriber_ids])


async def hold_cursors(db: Db, subscriber_ids: Collection[int]) -> None:
    """PostgreSQL: lock the subscribers' cursors, in id order (no deadlock between a claim and a finish), before
    their leases are read or written. A claim and a finish of the same subscriber then take turns: without it, a
    finish's ``acked`` that waited for a claim's cursor row was computed from a snapshot older than the claim's new
    range, and passed it (retention would then prune events still out). SQLite has one writer: nothing to do."""
    if db.dialect.postgres and subscriber_ids:
        among, values = db.dialect.among("subscriber_id", sorted(subscriber_ids))
        await db.fetch(f"SELECT 1 FROM cursors WHERE {among} ORDER BY subscriber_id FOR NO KEY UPDATE", *values)


async def give_back(db: Db, token: str, at: str) -> None:
    """End a lease at once (a claim handed back unattempted): the next claim takes its range over."""
    await db.execute(_HAND_BACK, at, token)
