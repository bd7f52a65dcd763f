"""The CloudEvents handshake's verdicts: one row per subscriber, shared by every worker and replica."""

from __future__ import annotations

from relay.domain.destinations import Handshake, parse_rate
from relay.store.db import Db
from relay.store.formats import iso, when


async def handshake_of(db: Db, subscriber_id: int) -> Handshake | None:
    row = await db.fetchrow(
        "SELECT subscriber_id, url, granted, allowed_rate, detail, checked_at, expires_at FROM handshakes"
        " WHERE subscriber_id = ?",
        subscriber_id,
    )
    if row is None:
        return None
    checked_at, expires_at = when(row["checked_at"]), when(row["expires_at"])
    assert checked_at is not None
    assert expires_at is not None
    return Handshake(
        row["subscriber_id"],
        row["url"],
        bool(row["granted"]),
        None if row["allowed_rate"] is None else parse_rate(row["allowed_rate"]),
        row["detail"],
        checked_at,
        expires_at,
    )


async def record_handshake(db: Db, handshake: Handshake) -> None:
    await db.execute(
        "INSERT INTO handshakes(subscriber_id, url, granted, allowed_rate, detail, checked_at, expires_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(subscriber_id) DO UPDATE SET url = excluded.url,"
        " granted = excluded.granted, allowed_rate = excluded.allowed_rate, detail = excluded.detail,"
        " checked_at = excluded.checked_at, expires_at = excluded.expires_at",
        handshake.subscriber_id,
        handshake.url,
        int(handshake.granted),
        None if handshake.allowed_rate is None else str(handshake.allowed_rate),
        handshake.detail,
        iso(handshake.checked_at),
        iso(handshake.expires_at),
    )
    if handshake.granted and handshake.allowed_rate is not None:
        # The delivery that asked starts now, under the rate just allowed: the next one waits its turn.
        free_at = iso(handshake.allowed_rate.pace(handshake.checked_at, None, 1).free_at)
        await db.execute(
            "INSERT INTO rate_pacing(subscriber_id, free_at) VALUES (?, ?) ON CONFLICT(subscriber_id) DO UPDATE"
            " SET free_at = CASE WHEN excluded.free_at > rate_pacing.free_at THEN excluded.free_at"
            " ELSE rate_pacing.free_at END",
            handshake.subscriber_id,
            free_at,
        )
