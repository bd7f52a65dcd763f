"""Recording attempts: the attempt log, the decision applied to the delivery and its subscriber, the next lease."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import timedelta

from relay.domain.delivery import Claim, Finished, Recorded
from relay.store.formats import iso
from relay.store.sqlite.deliveries import claim_due

#: Rows per multi-row statement: far below SQLite's variable limit, and few distinct statement texts.
CHUNK = 64

_LOG = "INSERT INTO attempts(delivery_id, started_at, duration, outcome, status, error, response_body, trigger) VALUES "
# The target's own columns stay unqualified in SET; the batch's are v.*, named apart from them.
_APPLY = (
    "UPDATE deliveries SET state = v.new_state, next_attempt_at = coalesce(v.next_at, next_attempt_at),"
    " lease_expires_at = NULL, failures = failures + v.failed, last_outcome = v.outcome, last_status = v.status,"
    " updated_at = v.stamp, delivered_at = CASE WHEN v.delivered THEN v.stamp ELSE delivered_at END"
    " FROM (SELECT column1 AS delivery, column2 AS new_state, column3 AS next_at, column4 AS failed,"
    " column5 AS outcome, column6 AS status, column7 AS stamp, column8 AS delivered FROM (VALUES {rows})) AS v"
    # A delivery cancelled meanwhile (subscriber removed) stays cancelled.
    " WHERE deliveries.id = v.delivery AND deliveries.state = 'in_flight'"
)


def finish(conn: sqlite3.Connection, finished: Sequence[Finished], lease_margin: timedelta) -> list[Recorded]:
    """Record a batch of attempts, apply their decisions, and lease each lane its subscriber's next delivery.

    Handing the freed slots straight to the next deliveries saves the worker a claim transaction per
    attempt; claiming once per subscriber for the whole batch saves most of the claim's queries. The
    attempt log and the deliveries are written a chunk of rows per statement: every statement hands
    the GIL back and forth with the event loop, which a statement per row made wait behind it.
    """
    _log(conn, finished)
    _apply(conn, finished)
    disabled = _judge_subscribers(conn, finished)
    lanes: dict[int, list[int]] = {}  # subscriber id -> positions whose lane wants a next delivery
    for position, (item, reason) in enumerate(zip(finished, disabled, strict=True)):
        if reason is None:
            lanes.setdefault(item.claim.subscriber_id, []).append(position)
    following: dict[int, Claim] = {}
    if lanes:
        at = max(item.finished_at for item in finished)
        for subscriber_id, positions in lanes.items():
            claims = claim_due(conn, at, lease_margin, len(positions), subscriber_id)
            following.update(zip(positions, claims, strict=False))
    return [Recorded(reason, following.get(position)) for position, reason in enumerate(disabled)]


def _log(conn: sqlite3.Connection, finished: Sequence[Finished]) -> None:
    for start in range(0, len(finished), CHUNK):
        chunk = finished[start : start + CHUNK]
        values: list[object] = []
        for item in chunk:
            claim, attempt = item.claim, item.attempt
            values += (
                claim.delivery_id,
                iso(item.started_at),
                attempt.duration,
                attempt.outcome.value,
                attempt.status,
                attempt.error,
                attempt.response_body,
                claim.trigger,
            )
        conn.execute(_LOG + ",".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * len(chunk)), values)


def _apply(conn: sqlite3.Connection, finished: Sequence[Finished]) -> None:
    """Each decision applied to its delivery (in order, one statement per row, if a delivery repeats)."""
    chunk_size = CHUNK if len({item.claim.delivery_id for item in finished}) == len(finished) else 1
    for start in range(0, len(finished), chunk_size):
        chunk = finished[start : start + chunk_size]
        values: list[object] = []
        for item in chunk:
            decision, stamp = item.decision, iso(item.finished_at)
            delivered = decision.state == "delivered"
            values += (
                item.claim.delivery_id,
                decision.state,
                iso(decision.next_attempt_at) if decision.next_attempt_at else None,
                0 if delivered else 1,
                item.attempt.outcome.value,
                item.attempt.status,
                stamp,
                delivered,
            )
        conn.execute(_APPLY.format(rows=",".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * len(chunk))), values)


def _judge_subscribers(conn: sqlite3.Connection, finished: Sequence[Finished]) -> list[str | None]:
    """Each attempt's effect on its subscriber's failure streak, in order; why it disabled it, if it did."""
    cleared: set[int] = set()  # subscribers whose streak this batch just ended, with no failure since
    return [_judge(conn, item, cleared) for item in finished]


def _judge(conn: sqlite3.Connection, finished: Finished, cleared: set[int]) -> str | None:
    claim, decision = finished.claim, finished.decision
    subscriber_id = claim.subscriber_id
    if decision.state == "delivered":
        # Ending a streak that this batch already ended changes nothing: one statement per subscriber.
        if subscriber_id not in cleared:
            conn.execute(
                "UPDATE subscribers SET failing_since = NULL WHERE id = ? AND failing_since IS NOT NULL",
                (subscriber_id,),
            )
            cleared.add(subscriber_id)
        return None
    cleared.discard(subscriber_id)
    stamp = iso(finished.finished_at)
    conn.execute(
        "UPDATE subscribers SET failing_since = coalesce(failing_since, ?) WHERE id = ?", (stamp, subscriber_id)
    )
    reason = decision.disable_reason
    if reason is None:
        return None
    # A streak verdict holds only while the streak still starts where the claim saw it start.
    streak = None if decision.streak_since is None else iso(decision.streak_since)
    disabled = conn.execute(
        "UPDATE subscribers SET state = 'disabled', disabled_reason = ?, updated_at = ?"
        " WHERE id = ? AND state = 'enabled' AND (? IS NULL OR failing_since = ?)",
        (reason, stamp, subscriber_id, streak, streak),
    ).rowcount
    return reason if disabled else None
