"""Bounding each subscriber's backlog: past ``max_backlog`` pending deliveries, the oldest become ``dropped``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from relay.store.db import Db
from relay.store.formats import iso
from relay.store.ops import implied, owed
from relay.store.ops.log import MOVE_PAST, log_head

#: The advisory lock a PostgreSQL shedding batch holds: one replica at a time, so two never drop the same excess
#: twice.
BACKLOG_LOCK = 0x636F7362_61636B6C


async def over(db: Db, max_backlog: int) -> list[int]:
    """The subscribers with more than ``max_backlog`` pending deliveries, rows and log (a read: one pass over the
    pending index, and per subscriber behind by more than the bound, a count of its log bounded by it, so that
    SQLite's writer is taken only when there is something to drop)."""
    pending = await _pending_rows(db)
    found = {subscriber_id for subscriber_id, n in pending.items() if n > max_backlog}
    head = await log_head(db)
    for owner in await implied.cursors(db):
        behind = max_backlog - pending.get(owner.id, 0)
        # Positions bound the events owed: a count only for a subscriber further behind than its bound.
        if (
            owner.id not in found
            and head - owner.leased > behind
            and await owed.matching(db, owner, owner.leased, head, cap=behind + 1) > behind
        ):
            found.add(owner.id)
    return sorted(found)


async def _pending_rows(db: Db) -> dict[int, int]:
    """Pending rows per subscriber, for those with any."""
    rows = await db.fetch(
        "SELECT subscriber_id, count(*) AS n FROM deliveries WHERE state = 'pending' GROUP BY subscriber_id"
    )
    return {row["subscriber_id"]: row["n"] for row in rows}


async def drop_oldest(
    db: Db, max_backlog: int, limit: int, at: datetime, subscriber_ids: Sequence[int] | None = None
) -> dict[str, int]:
    """Mark up to ``limit`` of each subscriber's oldest pending deliveries past ``max_backlog`` dropped; how many,
    by subscriber name. Counted here, in the write (among ``subscriber_ids`` when given): what was delivered
    meanwhile is not over. Rows a PostgreSQL replica holds (a claim under way) are skipped, not waited for."""
    if db.dialect.postgres:
        await db.execute("SELECT pg_advisory_xact_lock(?)", BACKLOG_LOCK)
    among, values = ("TRUE", ()) if subscriber_ids is None else db.dialect.among("d.subscriber_id", subscriber_ids)
    dropped: dict[str, int] = {}
    for row in await db.fetch(
        "SELECT d.subscriber_id, s.name, count(*) AS n FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id"
        f" WHERE d.state = 'pending' AND {among} GROUP BY d.subscriber_id, s.name HAVING count(*) > ?",
        *values,
        max_backlog,
    ):
        # The ids first, then the update: as one statement's subquery, LIMIT would not bound what PostgreSQL
        # changes.
        ids = await db.fetch(
            "SELECT id FROM deliveries WHERE subscriber_id = ? AND state = 'pending' ORDER BY id"
            f" LIMIT ?{db.dialect.skip_locked}",
            row["subscriber_id"],
            min(limit, row["n"] - max_backlog),
        )
        taken, keys = db.dialect.among("id", [each["id"] for each in ids])
        dropped[row["name"]] = await db.execute(
            f"UPDATE deliveries SET state = 'dropped', updated_at = ? WHERE {taken}", iso(at), *keys
        )
    # The log's part: the oldest owed events after a cursor, given up as one `gaps` row however many.
    pending = await _pending_rows(db)
    head = await log_head(db)
    for owner in await implied.cursors(db):
        if subscriber_ids is not None and owner.id not in subscriber_ids:
            continue
        excess = await owed.matching(db, owner, owner.leased, head, cap=max_backlog + limit + 1)
        excess = min(limit - dropped.get(owner.name, 0), excess + pending.get(owner.id, 0) - max_backlog)
        if excess <= 0:
            continue
        count, last = await owed.upto(db, owner, owner.leased, excess)
        await db.execute(
            "INSERT INTO gaps(subscriber_id, from_position, to_position, reason, at) VALUES (?, ?, ?, 'dropped', ?)",
            owner.id,
            owner.leased,
            last,
            iso(at),
        )
        await db.execute(MOVE_PAST, last, last, iso(at), owner.id)
        dropped[owner.name] = dropped.get(owner.name, 0) + count
    return dropped
