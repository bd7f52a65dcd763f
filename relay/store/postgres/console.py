"""Reads the web console makes: a job's callbacks and deliveries (the API's too), the overview's counts, a
subscriber's recent record.

The same queries as the SQLite store's (relay/store/sqlite/console.py), through the indexes of schema step 3.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from relay.store.postgres.queries import CALLBACK_COLUMNS, DELIVERY_COLUMNS, DELIVERY_JOINS, callback_json
from relay.store.records import Page
from relay.store.rows import MAX_ID, NO_TEXT, callback_size, newest_first

#: How many of a subscriber's latest attempted deliveries its success ratio is taken over.
RECENT_DELIVERIES = 100


async def job_callbacks(
    conn: asyncpg.Connection, job_id: str, body_prefix: int, limit: int = 50, cursor: str | None = None
) -> Page:
    """The raw callbacks that carried a job's states, newest first, bodies cut to ``body_prefix`` bytes."""
    rows = await conn.fetch(
        f"SELECT {CALLBACK_COLUMNS}, substring(body from 1 for $1) AS body_prefix FROM callbacks"
        " WHERE id IN (SELECT callback_id FROM job_states WHERE job_id = $2) AND id < $3 ORDER BY id DESC LIMIT $4",
        body_prefix,
        job_id,
        MAX_ID if cursor is None else int(cursor),
        limit + 1,
    )
    return newest_first(rows, limit, callback_json, callback_size(body_prefix))


async def job_deliveries(conn: asyncpg.Connection, job_id: str, limit: int = 50, cursor: str | None = None) -> Page:
    """Every delivery of a job's events, newest first."""
    rows = await conn.fetch(
        f"SELECT {DELIVERY_COLUMNS}{DELIVERY_JOINS} WHERE e.subject = $1 AND d.id < $2 ORDER BY d.id DESC LIMIT $3",
        job_id,
        MAX_ID if cursor is None else int(cursor),
        limit + 1,
    )
    return newest_first(rows, limit, dict, NO_TEXT)


async def overview(conn: asyncpg.Connection, since_minute: str, since_day: str) -> dict[str, list[dict[str, Any]]]:
    """Callbacks per minute by outcome since ``since_minute``; finished and failed jobs by Tag whose state a
    callback since ``since_day`` set. Each a range of an index: callbacks by received_at, then jobs by
    (state, callback_id) from the window's first callback id."""
    per_minute = [
        dict(row)
        for row in await conn.fetch(
            "SELECT substr(received_at, 1, 16) AS minute, outcome, count(*) AS n FROM callbacks"
            " WHERE received_at >= $1 GROUP BY minute, outcome ORDER BY minute DESC, outcome",
            since_minute,
        )
    ]
    first = await conn.fetchval(
        "SELECT id FROM callbacks WHERE received_at >= $1 ORDER BY received_at LIMIT 1", since_day
    )
    by_tag = (
        []
        if first is None
        else [
            dict(row)
            for row in await conn.fetch(
                "SELECT tag, state, count(*) AS n FROM jobs WHERE state IN ('Success', 'Failed') AND callback_id >= $1"
                " GROUP BY tag, state ORDER BY tag, state",
                first,
            )
        ]
    )
    return {"callbacks": per_minute, "jobs": by_tag}


async def recent_states(conn: asyncpg.Connection, subscriber_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """How each subscriber's latest attempted deliveries stand, by state (its success ratio comes from these):
    one statement, a bounded index range per subscriber (LATERAL), so one round trip for the whole list."""
    found: dict[int, dict[str, int]] = {}
    for row in await conn.fetch(
        "SELECT s.id, recent.state, count(*) AS n FROM unnest($1::bigint[]) AS s(id) CROSS JOIN LATERAL"
        " (SELECT state FROM deliveries WHERE subscriber_id = s.id AND attempts > 0 ORDER BY id DESC LIMIT $2)"
        " AS recent GROUP BY s.id, recent.state",
        list(subscriber_ids),
        RECENT_DELIVERIES,
    ):
        found.setdefault(row["id"], {})[row["state"]] = int(row["n"])
    return found


async def event_body(conn: asyncpg.Connection, event_id: str) -> bytes | None:
    body = await conn.fetchval("SELECT body FROM events WHERE id = $1", event_id)
    return None if body is None else bytes(body)
