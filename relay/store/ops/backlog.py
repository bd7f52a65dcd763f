"""Bounding each subscriber's backlog: past ``max_backlog`` pending deliveries, the oldest become ``dropped``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from relay.store.db import Db
from relay.store.formats import iso

#: The advisory lock a PostgreSQL shedding batch holds: one replica at a time, so two never drop the same excess
#: twice.
BACKLOG_LOCK = 0x636F7362_61636B6C


async def over(db: Db, max_backlog: int) -> list[int]:
    """The subscribers with more than ``max_backlog`` pending deliveries (a read: one pass over the pending
    index, so that SQLite's writer is taken only when there is something to drop)."""
    rows = await db.fetch(
        "SELECT subscriber_id FROM deliveries WHERE state = 'pending' GROUP BY subscriber_id HAVING count(*) > ?",
        max_backlog,
    )
    return [row["subscriber_id"] for row in rows]


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
    return dropped
