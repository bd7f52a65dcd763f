"""Recording attempts: the attempt log, the decision applied to the delivery and its subscriber, the next lease."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from relay.domain.delivery import Claim, Finished, Recorded, runs
from relay.store.db import Db
from relay.store.formats import iso
from relay.store.ops import log
from relay.store.ops.deliveries import claim_due
from relay.store.ops.histories import Histories

#: An attempt's record, as `_apply` builds it (bench/attempts_index.py times this statement).
INSERT = (
    "INSERT INTO attempts(delivery_id, subscriber_id, event_id, started_at, duration, outcome, status, error,"
    " response_body, trigger, position) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


async def finish(
    db: Db,
    finished: Sequence[Finished],
    lease_margin: timedelta,
    histories: Histories | None = None,
    run: int = 1,
) -> list[Recorded]:
    """Record a batch of attempts, apply their decisions, and lease each lane whose run ended its subscriber's next
    run (of up to ``run`` events).

    Handing the freed lanes straight to the next deliveries saves the worker a claim transaction per
    run; one claim for every subscriber of the batch (`claim_due` with its lanes) saves most of the claim's
    queries. The attempts go in one statement, the leases of the log they finish in one write per lease and one
    per subscriber (`log.finished`). On PostgreSQL, attempts are applied in (subscriber, delivery) order: two
    replicas finishing batches that touch the same subscribers then take their row locks in the same order, and
    never deadlock.
    """
    order: Sequence[int] = range(len(finished))
    if db.dialect.postgres:
        order = sorted(order, key=lambda i: (finished[i].claim.subscriber_id, finished[i].claim.delivery_id or 0))
    streaks = _Streaks()
    disabled: list[str | None] = [None] * len(finished)
    records: list[tuple[object, ...]] = []
    for position in order:
        disabled[position] = await _apply(db, finished[position], streaks, records)
    await streaks.write(db)
    await db.executemany(INSERT, records)
    at = max(item.finished_at for item in finished)
    # The events of the log this batch finished: one write per lease, however many of its events.
    leases: dict[tuple[int, str], log.Progress] = {}
    for item in finished:
        claim = item.claim
        if claim.lease is not None and claim.position is not None:
            key = (claim.subscriber_id, claim.lease)
            done = leases.get(key, log.Progress(0, claim.position, False))
            leases[key] = log.Progress(
                done.count + 1, max(done.position, claim.position), done.given_back or item.gives_back
            )
    # The batch's cursors, locked once in id order for the leases it finishes and the next ones it takes: two
    # replicas' batches then lock them in one order (a lock per call, the finish's then the claim's, could cross).
    subscriber_ids = sorted({item.claim.subscriber_id for item in finished})
    await log.hold_cursors(db, subscriber_ids)
    await log.finished(db, dict(sorted(leases.items())), iso(at))
    lanes: dict[int, list[int]] = {}  # subscriber id -> positions whose lane wants a next run
    for position, (item, reason) in enumerate(zip(finished, disabled, strict=True)):
        if reason is None and item.last:
            lanes.setdefault(item.claim.subscriber_id, []).append(position)
    following: dict[int, tuple[Claim, ...]] = {}
    if lanes:
        wants = {subscriber_id: len(positions) for subscriber_id, positions in lanes.items()}
        claims: dict[int, list[tuple[Claim, ...]]] = {}
        claimed = await claim_due(db, at, lease_margin, sum(wants.values()), wants, histories, subscriber_ids, run)
        for lane in runs(claimed):
            claims.setdefault(lane[0].subscriber_id, []).append(lane)
        for subscriber_id, positions in lanes.items():
            following.update(zip(positions, claims.get(subscriber_id, []), strict=False))
    return [Recorded(reason, following.get(position, ())) for position, reason in enumerate(disabled)]


class _Streaks:
    """The failure streaks a batch ends, written in one statement: when the batch ends, or before it records a
    failure (so a success and a failure of one subscriber keep their order, and PostgreSQL's row locks theirs)."""

    def __init__(self) -> None:
        self._ended: set[int] = set()

    def end(self, subscriber_id: int) -> None:
        self._ended.add(subscriber_id)

    async def write(self, db: Db) -> None:
        if self._ended:
            await db.executemany(
                "UPDATE subscribers SET failing_since = NULL WHERE id = ? AND failing_since IS NOT NULL",
                [(subscriber_id,) for subscriber_id in sorted(self._ended)],
            )
            self._ended.clear()


async def _apply(db: Db, finished: Finished, streaks: _Streaks, records: list[tuple[object, ...]]) -> str | None:
    """Apply an attempt's decision; its record goes to ``records`` (the attempts are inserted together)."""
    claim, attempt, decision = finished.claim, finished.attempt, finished.decision
    stamp = iso(finished.finished_at)
    delivered = decision.state == "delivered"
    delivery_id = claim.delivery_id
    if not delivered:
        await streaks.write(db)
    if claim.lease is not None and not delivered:
        # A first attempt of an event of the log: a success costs no row; a failure becomes the delivery's row
        # (retrying or dead) in the same transaction as its lease counts it finished (`finish`), so no event is
        # passed without it.
        delivery_id = await db.fetchval(
            "INSERT INTO deliveries(event_id, subscriber_id, state, attempts, failures, next_attempt_at,"
            " last_outcome, last_status, created_at, updated_at) VALUES (?, ?, ?, 1, 1, ?, ?, ?, ?, ?)"
            " ON CONFLICT(event_id, subscriber_id) DO NOTHING RETURNING id",
            claim.event_id,
            claim.subscriber_id,
            decision.state,
            iso(decision.next_attempt_at or finished.finished_at),
            attempt.outcome.value,
            attempt.status,
            iso(claim.created_at),
            stamp,
        )
    records.append(
        (
            delivery_id,
            claim.subscriber_id,
            claim.event_id,
            iso(finished.started_at),
            attempt.duration,
            attempt.outcome.value,
            attempt.status,
            attempt.error,
            attempt.response_body,
            claim.trigger,
            claim.position,
        )
    )
    if claim.lease is None:
        # A delivery cancelled meanwhile (subscriber removed) stays cancelled.
        await db.execute(
            "UPDATE deliveries SET state = ?, next_attempt_at = coalesce(?, next_attempt_at), lease_expires_at = NULL,"
            " failures = failures + ?, last_outcome = ?, last_status = ?, updated_at = ?, delivered_at ="
            " CASE WHEN CAST(? AS boolean) THEN ? ELSE delivered_at END WHERE id = ? AND state = 'in_flight'",
            decision.state,
            iso(decision.next_attempt_at) if decision.next_attempt_at else None,
            0 if delivered else 1,
            attempt.outcome.value,
            attempt.status,
            stamp,
            delivered,
            stamp,
            claim.delivery_id,
        )
    if delivered:
        streaks.end(claim.subscriber_id)
        return None
    await db.execute(
        "UPDATE subscribers SET failing_since = coalesce(failing_since, ?) WHERE id = ?", stamp, claim.subscriber_id
    )
    reason = decision.disable_reason
    if reason is None:
        return None
    # A streak verdict holds only while the streak still starts where the claim saw it start.
    streak = None if decision.streak_since is None else iso(decision.streak_since)
    disabled = await db.execute(
        "UPDATE subscribers SET state = 'disabled', disabled_reason = ?, updated_at = ?"
        " WHERE id = ? AND state = 'enabled' AND (CAST(? AS text) IS NULL OR failing_since = ?)",
        reason,
        stamp,
        claim.subscriber_id,
        streak,
        streak,
    )
    return reason if disabled else None
