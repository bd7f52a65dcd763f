"""Recording attempts: the attempt log, the decision applied to the delivery and its subscriber, the next lease."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import asyncpg

from relay.domain.delivery import Claim, Finished, Recorded
from relay.store.formats import iso
from relay.store.postgres.connection import rowcount
from relay.store.postgres.deliveries import claim_due


async def finish(conn: asyncpg.Connection, finished: Sequence[Finished], lease_margin: timedelta) -> list[Recorded]:
    """Record a batch of attempts, apply their decisions, and lease each lane its subscriber's next delivery.

    Attempts are applied in (subscriber, delivery) order: two replicas finishing batches that touch the
    same subscribers then take their row locks in the same order, and never deadlock.
    """
    order = sorted(range(len(finished)), key=lambda i: (finished[i].claim.subscriber_id, finished[i].claim.delivery_id))
    disabled: list[str | None] = [None] * len(finished)
    for position in order:
        disabled[position] = await _apply(conn, finished[position])
    lanes: dict[int, list[int]] = {}  # subscriber id -> positions whose lane wants a next delivery
    for position, (item, reason) in enumerate(zip(finished, disabled, strict=True)):
        if reason is None:
            lanes.setdefault(item.claim.subscriber_id, []).append(position)
    following: dict[int, Claim] = {}
    if lanes:
        at = max(item.finished_at for item in finished)
        for subscriber_id, positions in sorted(lanes.items()):
            claims = await claim_due(conn, at, lease_margin, len(positions), subscriber_id)
            following.update(zip(positions, claims, strict=False))
    return [Recorded(reason, following.get(position)) for position, reason in enumerate(disabled)]


async def _apply(conn: asyncpg.Connection, finished: Finished) -> str | None:
    claim, attempt, decision = finished.claim, finished.attempt, finished.decision
    stamp = iso(finished.finished_at)
    await conn.execute(
        "INSERT INTO attempts(delivery_id, started_at, duration, outcome, status, error, response_body, trigger)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        claim.delivery_id,
        iso(finished.started_at),
        attempt.duration,
        attempt.outcome.value,
        attempt.status,
        attempt.error,
        attempt.response_body,
        claim.trigger,
    )
    delivered = decision.state == "delivered"
    # A delivery cancelled meanwhile (subscriber removed) stays cancelled.
    await conn.execute(
        "UPDATE deliveries SET state = $1, next_attempt_at = coalesce($2, next_attempt_at), lease_expires_at = NULL,"
        " failures = failures + $3, last_outcome = $4, last_status = $5, updated_at = $6,"
        " delivered_at = CASE WHEN $7::boolean THEN $6 ELSE delivered_at END WHERE id = $8 AND state = 'in_flight'",
        decision.state,
        iso(decision.next_attempt_at) if decision.next_attempt_at else None,
        0 if delivered else 1,
        attempt.outcome.value,
        attempt.status,
        stamp,
        delivered,
        claim.delivery_id,
    )
    if delivered:
        await conn.execute(
            "UPDATE subscribers SET failing_since = NULL WHERE id = $1 AND failing_since IS NOT NULL",
            claim.subscriber_id,
        )
        return None
    await conn.execute(
        "UPDATE subscribers SET failing_since = coalesce(failing_since, $1) WHERE id = $2",
        stamp,
        claim.subscriber_id,
    )
    reason = decision.disable_reason
    if reason is None:
        return None
    # A streak verdict holds only while the streak still starts where the claim saw it start.
    streak = None if decision.streak_since is None else iso(decision.streak_since)
    disabled = rowcount(
        await conn.execute(
            "UPDATE subscribers SET state = 'disabled', disabled_reason = $1, updated_at = $2"
            " WHERE id = $3 AND state = 'enabled' AND ($4::text IS NULL OR failing_since = $4)",
            reason,
            stamp,
            claim.subscriber_id,
            streak,
        )
    )
    return reason if disabled else None
