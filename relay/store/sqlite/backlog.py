"""Bounding each subscriber's backlog: past ``max_backlog`` pending deliveries, the oldest become ``dropped``."""

from __future__ import annotations

import sqlite3
from datetime import datetime

from relay.store.formats import iso


def over(conn: sqlite3.Connection, max_backlog: int) -> list[int]:
    """The subscribers with more than ``max_backlog`` pending deliveries (a read: one pass over the pending
    index, so the writer is taken only when there is something to drop)."""
    return [
        row[0]
        for row in conn.execute(
            "SELECT subscriber_id FROM deliveries WHERE state = 'pending' GROUP BY subscriber_id HAVING count(*) > ?",
            (max_backlog,),
        )
    ]


def drop_oldest(
    conn: sqlite3.Connection, subscriber_ids: list[int], max_backlog: int, limit: int, at: datetime
) -> dict[str, int]:
    """Mark up to ``limit`` of each subscriber's oldest pending deliveries past ``max_backlog`` dropped; how many,
    by subscriber name. Counted again here, in the write: what was delivered meanwhile is not over."""
    dropped: dict[str, int] = {}
    for subscriber_id in subscriber_ids:
        pending = conn.execute(
            "SELECT count(*) FROM deliveries WHERE subscriber_id = ? AND state = 'pending'", (subscriber_id,)
        ).fetchone()[0]
        excess = min(limit, pending - max_backlog)
        if excess <= 0:
            continue
        count = conn.execute(
            "UPDATE deliveries SET state = 'dropped', updated_at = ? WHERE id IN (SELECT id FROM deliveries"
            " WHERE subscriber_id = ? AND state = 'pending' ORDER BY id LIMIT ?)",
            (iso(at), subscriber_id, excess),
        ).rowcount
        name = conn.execute("SELECT name FROM subscribers WHERE id = ?", (subscriber_id,)).fetchone()[0]
        dropped[name] = count
    return dropped
