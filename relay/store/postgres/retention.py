"""Pruning on PostgreSQL: one bounded batch of the retention rules (`relay.domain.retention`), counting what a
prune would remove, and the time of the last prune.

The same steps as the SQLite store's (relay/store/sqlite/retention.py), each through an index (schema step 3),
with what a single writer gave for free made explicit, since replicas and the delivery worker write at once:

* one replica prunes a batch at a time (a transaction-level advisory lock: a batch is milliseconds, so the
  others wait that long, and each then works on what is left);
* rows are deleted by the keys just read, never by a range that a late-committing callback could fall into;
* finished deliveries are locked with SKIP LOCKED, and every delete repeats its rule, so a delivery an
  operator requeues meanwhile (pending again) or a job a callback updates meanwhile stays.

Ingest does not wait on a batch: it inserts new rows, and the rare one that touches a row a batch removes (a
job's latest state, updated in place; a dedup key reused after its window) waits at most for that batch.

There is no page give-back: SQLite's incremental vacuum returns freed pages to the filesystem, while on
PostgreSQL plain autovacuum marks dead rows' space reusable and new rows take it (docs/operations.md). A
VACUUM FULL would lock every table for its whole run, so ``reclaim`` is ignored here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from relay.domain.retention import FINISHED, KINDS, Cutoffs
from relay.store.formats import iso, when
from relay.store.postgres.connection import rowcount

#: The advisory lock a prune batch holds (any fixed number, distinct from the migrations' and subscribers').
PRUNE_LOCK = 0x636F7370_72756E65
#: Children whose callback_id is cleared, not deleted, when their raw callback goes: they follow the job window.
_KEPT_CHILDREN = ("job_states", "workflow_states", "nonexistent_job_ids")


async def prune_batch(
    conn: asyncpg.Connection, cutoffs: Cutoffs, limit: int, at: datetime, reclaim: int
) -> dict[str, int]:
    """Remove up to ``limit`` rows of each kind that the rules let go (``reclaim``: see the module's doc).

    All zero means there was nothing left to remove. ``at`` is recorded as the last successful prune.
    """
    await conn.execute("SELECT pg_advisory_xact_lock($1)", PRUNE_LOCK)
    counts = dict.fromkeys(KINDS, 0)
    if cutoffs.raw is not None:
        raw = iso(cutoffs.raw)
        await _finished_deliveries(conn, raw, limit, counts)
        await _raw_callbacks(conn, raw, limit, counts)
    if cutoffs.jobs is not None:
        jobs = iso(cutoffs.jobs)
        for table in _KEPT_CHILDREN:  # stamped when received, in id order
            ids = await _leading(conn, f"SELECT id, received_at FROM {table} ORDER BY id LIMIT $1", jobs, limit)
            if ids:
                counts[table] = rowcount(await conn.execute(f"DELETE FROM {table} WHERE id = ANY($1::bigint[])", ids))
        await _job_records(conn, jobs, limit, counts)
    # Every batch that commits counts as success: a long first prune after an upgrade is progress, not a stall.
    await conn.execute(
        "INSERT INTO maintenance(name, at) VALUES ('pruned', $1) ON CONFLICT(name) DO UPDATE SET at = excluded.at",
        iso(at),
    )
    return counts


async def _leading(conn: asyncpg.Connection, query: str, cutoff: str, limit: int) -> list[Any]:
    """Keys of the first rows ``query`` gives (key, stamp) while their stamp is before ``cutoff``."""
    keys = []
    for key, stamp in await conn.fetch(query, limit):
        if stamp is None or stamp >= cutoff:
            break
        keys.append(key)
    return keys


async def _finished_deliveries(conn: asyncpg.Connection, raw: str, limit: int, counts: dict[str, int]) -> None:
    rows: list[asyncpg.Record] = []
    # One state at a time: each is an ordered range of the (state, created_at) index that LIMIT stops early,
    # where all three at once would sort every prunable row first. SKIP LOCKED: a delivery being requeued right
    # now is left for the next batch.
    for state in FINISHED:
        rows += await conn.fetch(
            "SELECT id, event_id FROM deliveries WHERE state = $1 AND created_at < $2"
            " ORDER BY created_at LIMIT $3 FOR UPDATE SKIP LOCKED",
            state,
            raw,
            limit - len(rows),
        )
    if not rows:
        return
    ids = [row["id"] for row in rows]
    counts["attempts"] = rowcount(await conn.execute("DELETE FROM attempts WHERE delivery_id = ANY($1::bigint[])", ids))
    counts["deliveries"] = rowcount(await conn.execute("DELETE FROM deliveries WHERE id = ANY($1::bigint[])", ids))
    events = sorted({row["event_id"] for row in rows})
    counts["events"] += rowcount(
        await conn.execute(
            "DELETE FROM events WHERE id = ANY($1::text[]) AND created_at < $2"
            " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = events.id)",
            events,
            raw,
        )
    )


async def _raw_callbacks(conn: asyncpg.Connection, raw: str, limit: int, counts: dict[str, int]) -> None:
    ids = await _leading(conn, "SELECT id, received_at FROM callbacks ORDER BY id LIMIT $1", raw, limit)
    if not ids:
        return
    counts["dedup_keys"] = rowcount(await conn.execute("DELETE FROM items WHERE callback_id = ANY($1::bigint[])", ids))
    # Events nobody is owed go with their callback (those owed to no subscriber at all among them); an event
    # a delivery still needs stays, without its callback.
    counts["events"] += rowcount(
        await conn.execute(
            "DELETE FROM events WHERE callback_id = ANY($1::bigint[])"
            " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = events.id)",
            ids,
        )
    )
    for table in ("events", *_KEPT_CHILDREN):
        await conn.execute(f"UPDATE {table} SET callback_id = NULL WHERE callback_id = ANY($1::bigint[])", ids)
    counts["callbacks"] = rowcount(await conn.execute("DELETE FROM callbacks WHERE id = ANY($1::bigint[])", ids))


async def _job_records(conn: asyncpg.Connection, jobs: str, limit: int, counts: dict[str, int]) -> None:
    # The latest state's callback_id grows with updated_at: the index on it orders jobs by last update. The
    # delete repeats the rule: a callback may have updated the job since it was read.
    job_ids = await _leading(conn, "SELECT job_id, updated_at FROM jobs ORDER BY callback_id LIMIT $1", jobs, limit)
    if job_ids:
        counts["jobs"] = rowcount(
            await conn.execute("DELETE FROM jobs WHERE job_id = ANY($1::text[]) AND updated_at < $2", job_ids, jobs)
        )
    run_ids = await _leading(
        conn, "SELECT run_id, updated_at FROM workflow_runs ORDER BY callback_id LIMIT $1", jobs, limit
    )
    if run_ids:
        gone = await conn.fetch(
            "DELETE FROM workflow_runs WHERE run_id = ANY($1::text[]) AND updated_at < $2 RETURNING run_id",
            run_ids,
            jobs,
        )
        counts["workflows"] = len(gone)
        await conn.execute("DELETE FROM workflow_tasks WHERE run_id = ANY($1::text[])", [row["run_id"] for row in gone])


async def count_prunable(conn: asyncpg.Connection, cutoffs: Cutoffs) -> dict[str, int]:
    """What pruning to ``cutoffs`` would remove, per kind (a dry run: full counts, so slower than a batch)."""
    counts = dict.fromkeys(KINDS, 0)

    async def count(kind: str, query: str, *args: Any) -> None:
        counts[kind] = int(await conn.fetchval(query, *args))

    if cutoffs.raw is not None:
        raw = iso(cutoffs.raw)
        finished = list(FINISHED)
        gone = "d.state = ANY($2::text[]) AND d.created_at < $1"
        await count("callbacks", "SELECT count(*) FROM callbacks WHERE received_at < $1", raw)
        await count("dedup_keys", "SELECT count(*) FROM items WHERE received_at < $1", raw)
        await count("deliveries", f"SELECT count(*) FROM deliveries d WHERE {gone}", raw, finished)
        joined = "attempts a JOIN deliveries d ON d.id = a.delivery_id"
        await count("attempts", f"SELECT count(*) FROM {joined} WHERE {gone}", raw, finished)
        await count(
            "events",
            "SELECT count(*) FROM events e WHERE e.created_at < $1 AND NOT EXISTS (SELECT 1 FROM deliveries d"
            f" WHERE d.event_id = e.id AND NOT ({gone}))",
            raw,
            finished,
        )
    if cutoffs.jobs is not None:
        jobs = iso(cutoffs.jobs)
        await count("jobs", "SELECT count(*) FROM jobs WHERE updated_at < $1", jobs)
        await count("workflows", "SELECT count(*) FROM workflow_runs WHERE updated_at < $1", jobs)
        for table in _KEPT_CHILDREN:
            await count(table, f"SELECT count(*) FROM {table} WHERE received_at < $1", jobs)
    return counts


async def last_pruned(conn: asyncpg.Connection) -> datetime | None:
    """When a prune batch last committed (by any replica)."""
    return when(await conn.fetchval("SELECT at FROM maintenance WHERE name = 'pruned'"))
