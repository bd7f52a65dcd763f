"""Pruning: one bounded batch of the retention rules (`relay.domain.retention`), giving freed pages back,
counting what a prune would remove, and consistent copies of the live file.

Every step finds its rows through an index, a bounded number at a time: tables whose rows are stamped in
id order are taken from their start while the stamp is old enough (the "leading" rows), finished deliveries
through (state, created_at), events through the deliveries just removed or the callback that brought them.
A batch never scans what it keeps, so a paused subscriber's backlog costs a prune nothing.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

from relay.domain.retention import FINISHED, KINDS, Cutoffs
from relay.store.formats import iso, when

_FINISHED = ",".join(f"'{state}'" for state in FINISHED)
#: Children whose callback_id is cleared, not deleted, when their raw callback goes: they follow the job window.
_KEPT_CHILDREN = ("job_states", "workflow_states", "nonexistent_job_ids")


def prune_batch(conn: sqlite3.Connection, cutoffs: Cutoffs, limit: int, at: datetime, reclaim: int) -> dict[str, int]:
    """Remove up to ``limit`` rows of each kind that the rules let go; then give back up to ``reclaim`` free pages.

    All zero means there was nothing left to remove. ``at`` is recorded as the last successful prune.
    """
    counts = dict.fromkeys(KINDS, 0)
    if cutoffs.raw is not None:
        raw = iso(cutoffs.raw)
        _finished_deliveries(conn, raw, limit, counts)
        _raw_callbacks(conn, raw, limit, counts)
    if cutoffs.jobs is not None:
        jobs = iso(cutoffs.jobs)
        for table, kind in (
            ("job_states", "job_states"),
            ("workflow_states", "workflow_states"),
            ("nonexistent_job_ids", "nonexistent_job_ids"),
        ):
            ids = _leading(conn, f"SELECT id, received_at FROM {table} ORDER BY id LIMIT ?", jobs, limit)
            if ids:
                counts[kind] = conn.execute(f"DELETE FROM {table} WHERE id BETWEEN ? AND ?", (ids[0], ids[-1])).rowcount
        _job_records(conn, jobs, limit, counts)
    # Every batch that commits counts as success: a long first prune after an upgrade is progress, not a stall.
    conn.execute(
        "INSERT INTO maintenance(name, at) VALUES ('pruned', ?) ON CONFLICT(name) DO UPDATE SET at = excluded.at",
        (iso(at),),
    )
    reclaim_pages(conn, reclaim)
    return counts


def _leading(conn: sqlite3.Connection, query: str, cutoff: str, limit: int) -> list[Any]:
    """Keys of the first rows ``query`` gives (key, stamp) while their stamp is before ``cutoff``."""
    keys = []
    for key, stamp in conn.execute(query, (limit,)):
        if stamp is None or stamp >= cutoff:
            break
        keys.append(key)
    return keys


def _marks(values: list[Any]) -> str:
    return ",".join("?" * len(values))


def _finished_deliveries(conn: sqlite3.Connection, raw: str, limit: int, counts: dict[str, int]) -> None:
    rows: list[sqlite3.Row] = []
    for state in FINISHED:
        rows += conn.execute(
            "SELECT id, event_id FROM deliveries WHERE state = ? AND created_at < ? ORDER BY created_at LIMIT ?",
            (state, raw, limit - len(rows)),
        ).fetchall()
    if not rows:
        return
    ids = [row["id"] for row in rows]
    counts["attempts"] = conn.execute(f"DELETE FROM attempts WHERE delivery_id IN ({_marks(ids)})", ids).rowcount
    counts["deliveries"] = conn.execute(f"DELETE FROM deliveries WHERE id IN ({_marks(ids)})", ids).rowcount
    events = sorted({row["event_id"] for row in rows})
    counts["events"] += conn.execute(
        f"DELETE FROM events WHERE id IN ({_marks(events)}) AND created_at < ?"
        " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = events.id)",
        (*events, raw),
    ).rowcount


def _raw_callbacks(conn: sqlite3.Connection, raw: str, limit: int, counts: dict[str, int]) -> None:
    ids = _leading(conn, "SELECT id, received_at FROM callbacks ORDER BY id LIMIT ?", raw, limit)
    if not ids:
        return
    span = (ids[0], ids[-1])
    counts["dedup_keys"] = conn.execute("DELETE FROM items WHERE callback_id BETWEEN ? AND ?", span).rowcount
    # Events nobody is owed go with their callback (those owed to no subscriber at all among them); an event
    # a delivery still needs stays, without its callback.
    counts["events"] += conn.execute(
        "DELETE FROM events WHERE callback_id BETWEEN ? AND ?"
        " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = events.id)",
        span,
    ).rowcount
    for table in ("events", *_KEPT_CHILDREN):
        conn.execute(f"UPDATE {table} SET callback_id = NULL WHERE callback_id BETWEEN ? AND ?", span)
    counts["callbacks"] = conn.execute("DELETE FROM callbacks WHERE id BETWEEN ? AND ?", span).rowcount


def _job_records(conn: sqlite3.Connection, jobs: str, limit: int, counts: dict[str, int]) -> None:
    # The latest state's callback_id grows with updated_at: the index on it orders jobs by last update.
    job_ids = _leading(conn, "SELECT job_id, updated_at FROM jobs ORDER BY callback_id LIMIT ?", jobs, limit)
    if job_ids:
        counts["jobs"] = conn.execute(f"DELETE FROM jobs WHERE job_id IN ({_marks(job_ids)})", job_ids).rowcount
    run_ids = _leading(conn, "SELECT run_id, updated_at FROM workflow_runs ORDER BY callback_id LIMIT ?", jobs, limit)
    if run_ids:
        conn.execute(f"DELETE FROM workflow_tasks WHERE run_id IN ({_marks(run_ids)})", run_ids)
        counts["workflows"] = conn.execute(
            f"DELETE FROM workflow_runs WHERE run_id IN ({_marks(run_ids)})", run_ids
        ).rowcount


def reclaim_pages(conn: sqlite3.Connection, pages: int) -> int:
    """Give up to ``pages`` free pages back to the filesystem (files in auto_vacuum=INCREMENTAL only; in others
    freed pages stay in the file and new rows reuse them). Returns how many were given back."""
    if pages <= 0 or conn.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
        return 0
    free = min(pages, conn.execute("PRAGMA freelist_count").fetchone()[0])
    # Python's sqlite3 steps a statement without result columns once, and each step frees one page.
    for _ in range(free):
        conn.execute("PRAGMA incremental_vacuum(1)")
    return int(free)


def count_prunable(conn: sqlite3.Connection, cutoffs: Cutoffs) -> dict[str, int]:
    """What pruning to ``cutoffs`` would remove, per kind (a dry run: full counts, so slower than a batch)."""
    counts = dict.fromkeys(KINDS, 0)

    def count(kind: str, query: str, *args: Any) -> None:
        counts[kind] = conn.execute(query, args).fetchone()[0]

    if cutoffs.raw is not None:
        raw = iso(cutoffs.raw)
        gone = f"d.state IN ({_FINISHED}) AND d.created_at < ?"
        count("callbacks", "SELECT count(*) FROM callbacks WHERE received_at < ?", raw)
        count("dedup_keys", "SELECT count(*) FROM items WHERE received_at < ?", raw)
        count("deliveries", f"SELECT count(*) FROM deliveries d WHERE {gone}", raw)
        joined = "attempts a JOIN deliveries d ON d.id = a.delivery_id"
        count("attempts", f"SELECT count(*) FROM {joined} WHERE {gone}", raw)
        count(
            "events",
            "SELECT count(*) FROM events e WHERE e.created_at < ? AND NOT EXISTS (SELECT 1 FROM deliveries d"
            f" WHERE d.event_id = e.id AND NOT ({gone}))",
            raw,
            raw,
        )
    if cutoffs.jobs is not None:
        jobs = iso(cutoffs.jobs)
        count("jobs", "SELECT count(*) FROM jobs WHERE updated_at < ?", jobs)
        count("workflows", "SELECT count(*) FROM workflow_runs WHERE updated_at < ?", jobs)
        for table in _KEPT_CHILDREN:
            count(table, f"SELECT count(*) FROM {table} WHERE received_at < ?", jobs)
    return counts


def last_pruned(conn: sqlite3.Connection) -> datetime | None:
    """When a prune batch last committed."""
    row = conn.execute("SELECT at FROM maintenance WHERE name = 'pruned'").fetchone()
    return when(row["at"]) if row else None


def reusable_bytes(conn: sqlite3.Connection) -> int:
    """Free pages inside the file: space new rows take before the file grows."""
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    return int(free) * int(conn.execute("PRAGMA page_size").fetchone()[0])


def backup(conn: sqlite3.Connection, target: Path) -> None:
    """A consistent, compacted copy of the database as of one read snapshot (writers go on meanwhile).

    The copy has auto_vacuum=INCREMENTAL whatever the source has: VACUUM INTO builds it with the connection's
    setting, and asking for it on a file without auto-vacuum only records the wish (no lock, no change).
    """
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    conn.execute("VACUUM INTO ?", (str(target),))
