"""Which replica reconciles a COS source this interval: one claim a source and interval, on both backends."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from relay.store.answers import CosQueue, InFlightJob
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


async def replace_in_flight(db: Db, source: str, jobs: Sequence[tuple[str, str, str, str]], at: datetime) -> None:
    """The source's jobs in flight are now ``jobs`` (job id, state, tag, creation time as COS wrote it)."""
    await db.execute("DELETE FROM jobs_in_flight WHERE source = ?", source)
    if jobs:
        await db.executemany(
            "INSERT INTO jobs_in_flight(source, job_id, state, tag, created, seen_at) VALUES (?, ?, ?, ?, ?, ?)",
            [(source, job_id, state, tag, created, iso(at)) for job_id, state, tag, created in jobs],
        )


async def list_in_flight(db: Db, limit: int) -> list[InFlightJob]:
    """The jobs in flight of every source, oldest first (COS's times sort as text within one offset)."""
    rows = await db.fetch(
        "SELECT source, job_id, state, tag, created, seen_at FROM jobs_in_flight ORDER BY created, job_id LIMIT ?",
        limit,
    )
    return [
        InFlightJob(
            source=row["source"],
            job_id=row["job_id"],
            state=row["state"],
            tag=row["tag"],
            created=row["created"],
            seen_at=row["seen_at"],
        )
        for row in rows
    ]


async def replace_queues(
    db: Db, source: str, queues: Sequence[tuple[str, str, str, str, str, bool]], at: datetime
) -> None:
    """The source's queues as checked now: (queue id, family, name, state, callback URL shown or "off", here)."""
    await db.execute("DELETE FROM cos_queues WHERE source = ?", source)
    if queues:
        await db.executemany(
            "INSERT INTO cos_queues(source, queue_id, family, name, state, callback, here, checked_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(source, *queue[:5], int(queue[5]), iso(at)) for queue in queues],
        )


async def list_queues(db: Db) -> list[CosQueue]:
    """Every source's queues as last checked, by source and queue."""
    rows = await db.fetch(
        "SELECT source, queue_id, family, name, state, callback, here, checked_at FROM cos_queues"
        " ORDER BY source, family, queue_id"
    )
    return [
        CosQueue(
            source=row["source"],
            queue_id=row["queue_id"],
            family=row["family"],
            name=row["name"],
            state=row["state"],
            callback=row["callback"],
            here=bool(row["here"]),
            checked_at=row["checked_at"],
        )
        for row in rows
    ]
