"""Pruning: one bounded batch of the retention rules (`relay.domain.retention`), counting what a prune would
remove, and the time of the last prune.

Every step finds its rows through an index, a bounded number at a time: tables whose rows are stamped in
id order are taken from their start while the stamp is old enough (the "leading" rows), finished deliveries
through (state, created_at), events through the deliveries just removed or the callback that brought them.
A batch never scans what it keeps, so a paused subscriber's backlog costs a prune nothing.

On PostgreSQL, replicas and the delivery worker write at once, so what SQLite's single writer gives for free
is made explicit:

* one replica prunes a batch at a time (a transaction-level advisory lock: a batch is milliseconds, so the
  others wait that long, and each then works on what is left);
* rows are deleted by the keys just read, never by a range that a late-committing callback could fall into
  (SQLite deletes the leading rows by their id range);
* finished deliveries are locked with SKIP LOCKED, and every delete repeats its rule, so a delivery an
  operator requeues meanwhile (pending again) or a job a callback updates meanwhile stays.

Ingest does not wait on a batch: it inserts new rows, and the rare one that touches a row a batch removes (a
job's latest state, updated in place; a dedup key reused after its window) waits at most for that batch.

Only SQLite gives freed pages back (`reclaim_pages`, incremental vacuum); on PostgreSQL plain autovacuum marks
dead rows' space reusable and new rows take it (docs/operations.md). A VACUUM FULL would lock every table for
its whole run, so ``reclaim`` is ignored there.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from relay.domain.retention import FINISHED, KINDS, Cutoffs
from relay.store.db import Db
from relay.store.formats import iso, when
from relay.store.ops.log import PASSED, keep_head
from relay.store.rows import Row

#: The advisory lock a PostgreSQL prune batch holds (any fixed number, distinct from the migrations' and
#: subscribers').
PRUNE_LOCK = 0x636F7370_72756E65
#: Children whose callback_id is cleared, not deleted, when their raw callback goes: they follow the job window.
_KEPT_CHILDREN = ("job_states", "workflow_states", "nonexistent_job_ids")
#: What keeps a row of those past its window: a job's current state is read by its job (its Code and Message
#: are kept there alone), and goes only with it. Both are stamped alike, so this holds a row only while a batch
#: has not yet reached its job (jobs are pruned first, up to the batch's limit).
_KEPT_FOR = {
    "job_states": " AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.job_id = job_states.job_id"
    " AND j.state_id = job_states.id)",
    "workflow_states": "",
    "nonexistent_job_ids": "",
}


async def prune_batch(db: Db, cutoffs: Cutoffs, limit: int, at: datetime, reclaim: int) -> dict[str, int]:
    """Remove up to ``limit`` rows of each kind that the rules let go; then (SQLite) give back up to ``reclaim``
    free pages.

    All zero means there was nothing left to remove. ``at`` is recorded as the last successful prune.
    """
    if db.dialect.postgres:
        await db.execute("SELECT pg_advisory_xact_lock(?)", PRUNE_LOCK)
    counts = dict.fromkeys(KINDS, 0)
    if cutoffs.raw is not None:
        raw = iso(cutoffs.raw)
        await _finished_deliveries(db, raw, limit, counts)
        await _delivered_in_order(db, raw, limit, counts)
        await _raw_callbacks(db, raw, limit, counts)
        # Events a cursor held past their callback's window, now passed by every cursor.
        await _events(
            db, "e.callback_id IS NULL AND e.position IS NOT NULL AND e.created_at < ?", (raw,), counts, limit
        )
    if cutoffs.jobs is not None:
        jobs = iso(cutoffs.jobs)
        await _job_records(db, jobs, limit, counts)
        for table in _KEPT_CHILDREN:  # stamped when received, in id order
            ids = await _leading(db, f"SELECT id, received_at FROM {table} ORDER BY id LIMIT ?", jobs, limit)
            if ids:
                among, values = _taken(db, "id", ids)
                counts[table] = await db.execute(f"DELETE FROM {table} WHERE {among}{_KEPT_FOR[table]}", *values)
    # Every batch that commits counts as success: a long first prune after an upgrade is progress, not a stall.
    await db.execute(
        "INSERT INTO maintenance(name, at) VALUES ('pruned', ?) ON CONFLICT(name) DO UPDATE SET at = excluded.at",
        iso(at),
    )
    if not db.dialect.postgres:
        await reclaim_pages(db, reclaim)
    return counts


async def _leading(db: Db, query: str, cutoff: str, limit: int) -> list[Any]:
    """Keys of the first rows ``query`` gives (key, stamp) while their stamp is before ``cutoff``."""
    keys = []
    for key, stamp in await db.fetch(query, limit):
        if stamp is None or stamp >= cutoff:
            break
        keys.append(key)
    return keys


def _taken(db: Db, column: str, ids: Sequence[int]) -> tuple[str, tuple[object, ...]]:
    """``column`` is one of the leading ``ids`` just read: their range on SQLite (nothing can have been written
    into it since), the keys themselves on PostgreSQL."""
    if db.dialect.postgres:
        return db.dialect.among(column, ids)
    return f"{column} BETWEEN ? AND ?", (ids[0], ids[-1])


#: A row of ``deliveries`` whose event its live subscriber's cursor has not passed yet.
_AHEAD_OF_CURSOR = (
    "EXISTS (SELECT 1 FROM events e JOIN cursors c ON c.subscriber_id = deliveries.subscriber_id"
    " JOIN subscribers s ON s.id = c.subscriber_id WHERE e.id = deliveries.event_id AND e.position > c.acked"
    " AND s.removed_at IS NULL)"
)


async def _finished_deliveries(db: Db, raw: str, limit: int, counts: dict[str, int]) -> None:
    rows: list[Row] = []
    # One state at a time: each is an ordered range of the (state, created_at) index that LIMIT stops early,
    # where all three at once would sort every prunable row first. SKIP LOCKED: a delivery being requeued right
    # now is left for the next batch.
    # A row of an event of the log goes only once its subscriber's cursor passed the event: until then the row is
    # what keeps the cursor from owing the event again (a paused subscriber's finished rows wait with it).
    for state in FINISHED:
        rows += await db.fetch(
            f"SELECT id, event_id FROM deliveries WHERE state = ? AND created_at < ? AND NOT {_AHEAD_OF_CURSOR}"
            f" ORDER BY created_at LIMIT ?{db.dialect.skip_locked}",
            state,
            raw,
            limit - len(rows),
        )
    if not rows:
        return
    among, ids = db.dialect.among("delivery_id", [row["id"] for row in rows])
    counts["attempts"] += await db.execute(f"DELETE FROM attempts WHERE {among}", *ids)
    among, ids = db.dialect.among("id", [row["id"] for row in rows])
    counts["deliveries"] += await db.execute(f"DELETE FROM deliveries WHERE {among}", *ids)
    among, events = db.dialect.among("e.id", sorted({row["event_id"] for row in rows}), "text")
    await _events(db, f"{among} AND e.created_at < ?", (*events, raw), counts)


async def _delivered_in_order(db: Db, raw: str, limit: int, counts: dict[str, int]) -> None:
    """Deliveries of the event log with no row, past the window: those delivered in order (their attempt is their
    record), and the ranges given up in bulk (dropped, cancelled: their `gaps` row; a cursor is past them)."""
    await db.execute("DELETE FROM gaps WHERE at < ?", raw)
    ids = await _leading(
        db, "SELECT id, started_at FROM attempts WHERE delivery_id IS NULL ORDER BY started_at LIMIT ?", raw, limit
    )
    if ids:
        among, values = db.dialect.among("id", ids)
        delivered = await db.execute(f"DELETE FROM attempts WHERE {among}", *values)
        counts["attempts"] += delivered
        counts["deliveries"] += delivered


async def _events(
    db: Db, which: str, values: Sequence[object], counts: dict[str, int], limit: int | None = None
) -> None:
    """Delete the events ``which`` (a condition on ``e``; up to ``limit``) that nobody is owed any more, with the
    attempts of their deliveries delivered in order (no row)."""
    gone = [
        (row["id"], row["position"])
        for row in await db.fetch(
            f"SELECT e.id, e.position FROM events e WHERE {which} AND {PASSED}"
            " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id) LIMIT ?",
            *values,
            db.dialect.limit(-1 if limit is None else limit),
        )
    ]
    if not gone:
        return
    await keep_head(db)
    positions = [position for _, position in gone if position is not None]  # an event from before the log: none
    if positions:
        among, ids = db.dialect.among("position", positions)
        counts["attempts"] += await db.execute(f"DELETE FROM attempts WHERE {among} AND delivery_id IS NULL", *ids)
    among, ids = db.dialect.among("id", [event_id for event_id, _ in gone], "text")
    counts["events"] += await db.execute(f"DELETE FROM events WHERE {among}", *ids)


async def _raw_callbacks(db: Db, raw: str, limit: int, counts: dict[str, int]) -> None:
    ids = await _leading(db, "SELECT id, received_at FROM callbacks ORDER BY id LIMIT ?", raw, limit)
    if not ids:
        return
    by_callback, values = _taken(db, "callback_id", ids)
    counts["dedup_keys"] = await db.execute(f"DELETE FROM items WHERE {by_callback}", *values)
    # Events nobody is owed go with their callback (those owed to no subscriber at all among them); an event
    # a delivery still needs stays, without its callback.
    await _events(db, *_taken(db, "e.callback_id", ids), counts)
    for table in ("events", *_KEPT_CHILDREN):
        await db.execute(f"UPDATE {table} SET callback_id = NULL WHERE {by_callback}", *values)
    # What came of confirming the callback's jobs goes with it; a job still waiting for COS stays (owed).
    await db.execute(f"DELETE FROM confirmations WHERE {by_callback} AND status <> 'waiting'", *values)
    by_id, values = _taken(db, "id", ids)
    counts["callbacks"] = await db.execute(f"DELETE FROM callbacks WHERE {by_id}", *values)


async def _job_records(db: Db, jobs: str, limit: int, counts: dict[str, int]) -> None:
    # The latest state's callback_id grows with updated_at: the index on it orders jobs by last update. The
    # delete repeats the rule: on PostgreSQL a callback may have updated the job since it was read.
    job_ids = await _leading(db, "SELECT job_id, updated_at FROM jobs ORDER BY callback_id LIMIT ?", jobs, limit)
    if job_ids:
        among, values = db.dialect.among("job_id", job_ids, "text")
        counts["jobs"] = await db.execute(f"DELETE FROM jobs WHERE {among} AND updated_at < ?", *values, jobs)
    run_ids = await _leading(
        db, "SELECT run_id, updated_at FROM workflow_runs ORDER BY callback_id LIMIT ?", jobs, limit
    )
    if run_ids:
        among, values = db.dialect.among("run_id", run_ids, "text")
        gone = await db.fetch(
            f"DELETE FROM workflow_runs WHERE {among} AND updated_at < ? RETURNING run_id", *values, jobs
        )
        counts["workflows"] = len(gone)
        if gone:
            among, values = db.dialect.among("run_id", [row["run_id"] for row in gone], "text")
            await db.execute(f"DELETE FROM workflow_tasks WHERE {among}", *values)


async def reclaim_pages(db: Db, pages: int) -> int:
    """Give up to ``pages`` free pages back to the filesystem (SQLite files in auto_vacuum=INCREMENTAL only; in
    others freed pages stay in the file and new rows reuse them). Returns how many were given back."""
    if pages <= 0 or await db.fetchval("PRAGMA auto_vacuum") != 2:
        return 0
    free = min(pages, int(await db.fetchval("PRAGMA freelist_count")))
    # Python's sqlite3 steps a statement without result columns once, and each step frees one page.
    for _ in range(free):
        await db.execute("PRAGMA incremental_vacuum(1)")
    return free


async def count_prunable(db: Db, cutoffs: Cutoffs) -> dict[str, int]:
    """What pruning to ``cutoffs`` would remove, per kind (a dry run: full counts, so slower than a batch)."""
    counts = dict.fromkeys(KINDS, 0)

    async def count(kind: str, query: str, *args: object) -> None:
        counts[kind] = int(await db.fetchval(query, *args))

    if cutoffs.raw is not None:
        raw = iso(cutoffs.raw)
        finished, states = db.dialect.among("d.state", FINISHED, "text")
        gone = f"{finished} AND d.created_at < ? AND NOT {_AHEAD_OF_CURSOR.replace('deliveries.', 'd.')}"
        await count("callbacks", "SELECT count(*) FROM callbacks WHERE received_at < ?", raw)
        await count("dedup_keys", "SELECT count(*) FROM items WHERE received_at < ?", raw)
        await count("deliveries", f"SELECT count(*) FROM deliveries d WHERE {gone}", *states, raw)
        joined = "attempts a JOIN deliveries d ON d.id = a.delivery_id"
        await count("attempts", f"SELECT count(*) FROM {joined} WHERE {gone}", *states, raw)
        # Delivered in order from the event log: the attempt is the delivery's record.
        in_order = int(
            await db.fetchval("SELECT count(*) FROM attempts WHERE delivery_id IS NULL AND started_at < ?", raw)
        )
        counts["deliveries"] += in_order
        counts["attempts"] += in_order
        await count(
            "events",
            f"SELECT count(*) FROM events e WHERE e.created_at < ? AND {PASSED} AND NOT EXISTS (SELECT 1"
            f" FROM deliveries d WHERE d.event_id = e.id AND NOT ({gone}))",
            raw,
            *states,
            raw,
        )
    if cutoffs.jobs is not None:
        jobs = iso(cutoffs.jobs)
        await count("jobs", "SELECT count(*) FROM jobs WHERE updated_at < ?", jobs)
        await count("workflows", "SELECT count(*) FROM workflow_runs WHERE updated_at < ?", jobs)
        for table in _KEPT_CHILDREN:
            await count(table, f"SELECT count(*) FROM {table} WHERE received_at < ?", jobs)
    return counts


async def last_pruned(db: Db) -> datetime | None:
    """When a prune batch last committed (by any process or replica)."""
    return when(await db.fetchval("SELECT at FROM maintenance WHERE name = 'pruned'"))
