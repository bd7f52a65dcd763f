"""Confirmations: the jobs of callbacks read back from COS before their events go out (relay.domain.confirm).

A callback's jobs to confirm are written with it (`hold`, inside `record_callback`'s transaction): a row each,
waiting, and their events' deliveries ``confirming``, a state no claim takes. `settle` applies COS's verdicts:
confirmed releases the deliveries (pending, due now); not confirmed holds them for good (``unconfirmed``). An
admin may then release or discard an unconfirmed callback (`decide`). Every change repeats its rule in its
WHERE clause, so two PostgreSQL replicas settling the same job change it once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import cast

from relay.domain.confirm import ConfirmFamily, ToConfirm, Verdict
from relay.domain.events import Event, event_id
from relay.domain.fanout import fan_out
from relay.store.answers import CallbackJob, Confirmation
from relay.store.db import Db
from relay.store.formats import iso
from relay.store.ops.deliveries import notify
from relay.store.ops.subscribers import list_subscribers
from relay.store.rows import Row


async def hold(db: Db, callback_id: int, jobs: Sequence[ToConfirm], events: Sequence[Event], at: str) -> None:
    """Keep ``jobs`` (new items of the callback just recorded, whose ``events`` are in the log) waiting for COS:
    their deliveries are rows ``confirming`` (unclaimable; a cursor passes an event with a row), one per
    subscriber the event is owed to, read now: after the events' positions were taken (`log.insert_events`, which
    on PostgreSQL holds the log against subscriber changes till the commit), so they are the subscribers whose
    cursors would owe it."""
    if not jobs:
        return
    await db.executemany(
        "INSERT INTO confirmations(item_key, callback_id, job_id, state, source, family, status, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, 'waiting', ?) ON CONFLICT(item_key) DO NOTHING",
        [(job.item_key, callback_id, job.job_id, job.state, job.source, job.family, at) for job in jobs],
    )
    keys = {job.item_key for job in jobs}
    owed = fan_out([event for event in events if event.item_key in keys], await list_subscribers(db))
    await db.executemany(
        "INSERT INTO deliveries(event_id, subscriber_id, state, attempts, failures, next_attempt_at, created_at,"
        " updated_at) VALUES (?, ?, 'confirming', 0, 0, ?, ?, ?) ON CONFLICT(event_id, subscriber_id) DO NOTHING",
        [(o.event.id, subscriber_id, at, at, at) for o in owed for subscriber_id in o.subscriber_ids],
    )
    await db.execute("UPDATE callbacks SET confirmation = 'waiting' WHERE id = ?", callback_id)


async def waiting(db: Db, source: str, limit: int) -> list[ToConfirm]:
    """The source's jobs waiting for COS, oldest first."""
    rows = await db.fetch(
        "SELECT item_key, job_id, state, source, family FROM confirmations WHERE source = ? AND status = 'waiting'"
        " ORDER BY created_at LIMIT ?",
        source,
        limit,
    )
    # The family was written from a ConfirmFamily by `hold`.
    return [
        ToConfirm(row["item_key"], row["job_id"], row["state"], row["source"], cast(ConfirmFamily, row["family"]))
        for row in rows
    ]


async def settle(db: Db, verdicts: Sequence[Verdict], at: datetime) -> list[Verdict]:
    """Apply COS's verdicts to the jobs still waiting; the ones applied (a verdict another replica applied first
    is left out, so each is counted once). A handful of statements however many verdicts: the confirmed ones
    (nearly all) together, each unconfirmed one with its reason."""
    stamp = iso(at)
    confirmed = [each for each in verdicts if each.reason is None]
    applied: dict[str, int] = {}  # item key -> its callback
    if confirmed:
        among, values = db.dialect.among("item_key", [each.item_key for each in confirmed], "text")
        rows = await db.fetch(
            f"UPDATE confirmations SET status = 'confirmed', checked_at = ? WHERE {among} AND status = 'waiting'"
            " RETURNING item_key, callback_id",
            stamp,
            *values,
        )
        applied.update((row["item_key"], row["callback_id"]) for row in rows)
        released = await _move(db, list(applied), "confirming", "pending", stamp)
        if released:
            await notify(db)
    held = []
    for each in verdicts:
        if each.reason is not None:
            row = await db.fetchrow(
                "UPDATE confirmations SET status = 'unconfirmed', reason = ?, seen = ?, checked_at = ?"
                " WHERE item_key = ? AND status = 'waiting' RETURNING callback_id",
                each.reason,
                each.seen,
                stamp,
                each.item_key,
            )
            if row is not None:
                applied[each.item_key] = row["callback_id"]
                held.append(each.item_key)
    await _move(db, held, "confirming", "unconfirmed", stamp)
    await _summarise(db, set(applied.values()))
    return [each for each in verdicts if each.item_key in applied]


async def _move(db: Db, keys: Sequence[str], state: str, to: str, stamp: str) -> int:
    """The deliveries of the items ``keys``' events in ``state`` move to ``to`` (pending: due at once)."""
    if not keys:
        return 0
    among, values = db.dialect.among("event_id", [event_id(key) for key in keys], "text")
    due = ", next_attempt_at = ?" if to == "pending" else ""
    return await db.execute(
        f"UPDATE deliveries SET state = ?{due}, updated_at = ? WHERE {among} AND state = ?",
        to,
        *((stamp,) if due else ()),
        stamp,
        *values,
        state,
    )


async def _summarise(db: Db, callback_ids: set[int]) -> None:
    """Each callback's summary from its jobs': waiting while any waits, else unconfirmed if any is, else an admin's
    decision (discarded, released), else confirmed."""
    if not callback_ids:
        return
    cases = " ".join(
        f"WHEN EXISTS (SELECT 1 FROM confirmations c WHERE c.callback_id = callbacks.id AND c.status = '{status}')"
        f" THEN '{status}'"
        for status in ("waiting", "unconfirmed", "discarded", "released")
    )
    among, values = db.dialect.among("id", sorted(callback_ids))
    await db.execute(f"UPDATE callbacks SET confirmation = CASE {cases} ELSE 'confirmed' END WHERE {among}", *values)


async def decide(db: Db, callback_id: int, decision: str, at: datetime) -> int | None:
    """An admin's decision on a callback's unconfirmed jobs: ``release`` sends their events after all, ``discard``
    cancels their deliveries. How many deliveries it changed; None when the callback has no unconfirmed job."""
    stamp = iso(at)
    keys = [
        row["item_key"]
        for row in await db.fetch(
            "SELECT item_key FROM confirmations WHERE callback_id = ? AND status = 'unconfirmed'", callback_id
        )
    ]
    if not keys:
        return None
    among, values = db.dialect.among("item_key", keys, "text")
    await db.execute(
        f"UPDATE confirmations SET status = ?, checked_at = ? WHERE {among} AND status = 'unconfirmed'",
        "released" if decision == "release" else "discarded",
        stamp,
        *values,
    )
    changed = await _move(db, keys, "unconfirmed", "pending" if decision == "release" else "cancelled", stamp)
    if decision == "release":
        await notify(db)
    await _summarise(db, {callback_id})
    return changed


async def of_callback(db: Db, callback_id: int) -> list[CallbackJob]:
    """A callback's jobs read back from COS, with what came of each (for the API and the console)."""
    rows = await db.fetch(
        "SELECT callback_id, job_id, state, source, family, status, reason, seen, created_at, checked_at"
        " FROM confirmations WHERE callback_id = ? ORDER BY job_id",
        callback_id,
    )
    return [
        CallbackJob(
            **_confirmation(row),
            job_id=row["job_id"],
            state=row["state"],
            family=row["family"],
            created_at=row["created_at"],
        )
        for row in rows
    ]


async def of_job(db: Db, job_id: str, callback_id: int) -> Confirmation | None:
    """The confirmation of the job's state that ``callback_id`` brought, if it needed one."""
    row = await db.fetchrow(
        "SELECT callback_id, status, reason, seen, source, checked_at FROM confirmations"
        " WHERE job_id = ? AND callback_id = ?",
        job_id,
        callback_id,
    )
    return _confirmation(row) if row is not None else None


def _confirmation(row: Row) -> Confirmation:
    return Confirmation(
        callback_id=row["callback_id"],
        status=row["status"],
        reason=row["reason"],
        seen=row["seen"],
        source=row["source"],
        checked_at=row["checked_at"],
    )


async def waiting_stats(db: Db) -> dict[str, tuple[int, datetime]]:
    """Per source: how many jobs wait for COS, and since when the oldest (read at every scrape)."""
    rows = await db.fetch(
        "SELECT source, count(*) AS n, min(created_at) AS oldest FROM confirmations WHERE status = 'waiting'"
        " GROUP BY source"
    )
    return {row["source"]: (int(row["n"]), datetime.fromisoformat(row["oldest"])) for row in rows}
