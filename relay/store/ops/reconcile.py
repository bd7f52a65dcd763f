"""Which replica reconciles a COS source this interval: one claim a source and interval, on both backends."""

from __future__ import annotations

from datetime import datetime, timedelta

from relay.store.db import Db
from relay.store.formats import iso


async def claim_reconcile(db: Db, source: str, at: datetime, every: float) -> bool:
    """Start the source's run at ``at`` unless one started less than ``every`` seconds before: True for the one
    caller (replica) that does. The conditional update is the claim: on PostgreSQL a second replica's waits for
    the first's row lock, then finds the row changed and updates nothing."""
    await db.execute(
        "INSERT INTO reconcile_runs(source, started_at) VALUES (?, '') ON CONFLICT(source) DO NOTHING", source
    )
    claimed = await db.execute(
        "UPDATE reconcile_runs SET started_at = ? WHERE source = ? AND started_at <= ?",
        iso(at),
        source,
        iso(at - timedelta(seconds=every)),
    )
    return claimed == 1
