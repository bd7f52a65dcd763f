"""Bounding each subscriber's backlog: past ``max_backlog`` pending deliveries, the oldest become ``dropped``."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from relay.store.formats import iso
from relay.store.postgres.connection import rowcount

#: The advisory lock a shedding batch holds: one replica at a time, so two never drop the same excess twice.
BACKLOG_LOCK = 0x636F7362_61636B6C


async def drop_oldest(conn: asyncpg.Connection, max_backlog: int, limit: int, at: datetime) -> dict[str, int]:
    """Mark up to ``limit`` of each subscriber's oldest pending deliveries past ``max_backlog`` dropped; how many,
    by subscriber name. Rows a replica holds (a claim under way) are skipped, not waited for."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", BACKLOG_LOCK)
    dropped: dict[str, int] = {}
    for row in await conn.fetch(
        "SELECT d.subscriber_id, s.name, count(*) AS n FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id"
        " WHERE d.state = 'pending' GROUP BY d.subscriber_id, s.name HAVING count(*) > $1",
        max_backlog,
    ):
        # The ids first, then the update: as one statement's subquery, LIMIT would not bound what it changes.
        ids = await conn.fetch(
            "SELECT id FROM deliveries WHERE subscriber_id = $1 AND state = 'pending' ORDER BY id LIMIT $2"
            " FOR UPDATE SKIP LOCKED",
            row["subscriber_id"],
            min(limit, row["n"] - max_backlog),
        )
        dropped[row["name"]] = rowcount(
            await conn.execute(
                "UPDATE deliveries SET state = 'dropped', updated_at = $1 WHERE id = ANY($2::bigint[])",
                iso(at),
                [record["id"] for record in ids],
            )
        )
    return dropped
