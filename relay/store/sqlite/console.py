"""Reads the web console makes: a job's callbacks and deliveries (the API's too), the overview's counts, a
subscriber's recent record."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from functools import partial
from typing import Any

from relay.store.packing import unpack
from relay.store.records import Page
from relay.store.rows import MAX_ID, NO_TEXT, callback_size, newest_first
from relay.store.sqlite.queries import CALLBACK_COLUMNS, DELIVERY_COLUMNS, DELIVERY_JOINS, callback_json

#: How many of a subscriber's latest attempted deliveries its success ratio is taken over.
RECENT_DELIVERIES = 100


def job_callbacks(
    conn: sqlite3.Connection, job_id: str, body_prefix: int, limit: int = 50, cursor: str | None = None
) -> Page:
    """The raw callbacks that carried a job's states, newest first, bodies cut to ``body_prefix`` bytes."""
    rows = conn.execute(
        f"SELECT {CALLBACK_COLUMNS}, body, body_packed FROM callbacks"
        " WHERE id IN (SELECT callback_id FROM job_states WHERE job_id = ?) AND id < ? ORDER BY id DESC LIMIT ?",
        (job_id, _before(cursor), limit + 1),
    )
    return newest_first(rows, limit, partial(callback_json, body_prefix=body_prefix), callback_size(body_prefix))


def job_deliveries(conn: sqlite3.Connection, job_id: str, limit: int = 50, cursor: str | None = None) -> Page:
    """Every delivery of a job's events, newest first."""
    rows = conn.execute(
        f"SELECT {DELIVERY_COLUMNS}{DELIVERY_JOINS} WHERE e.subject = ? AND d.id < ? ORDER BY d.id DESC LIMIT ?",
        (job_id, _before(cursor), limit + 1),
    )
    return newest_first(rows, limit, dict, NO_TEXT)


def _before(cursor: str | None) -> int:
    """The id a page starts below: the cursor, or past every id."""
    return MAX_ID if cursor is None else int(cursor)


def overview(conn: sqlite3.Connection, since_minute: str, since_day: str) -> dict[str, list[dict[str, Any]]]:
    """Callbacks per minute by outcome since ``since_minute``; finished and failed jobs by Tag whose state a
    callback since ``since_day`` set.

    Each is a range of an index, so its cost follows the traffic in the window, not the history: callbacks by
    received_at (m006); jobs by (state, callback_id) from the window's first callback id.
    """
    per_minute = [
        dict(row)
        for row in conn.execute(
            "SELECT substr(received_at, 1, 16) AS minute, outcome, count(*) AS n FROM callbacks"
            " WHERE received_at >= ? GROUP BY minute, outcome ORDER BY minute DESC, outcome",
            (since_minute,),
        )
    ]
    first = conn.execute(
        "SELECT id FROM callbacks WHERE received_at >= ? ORDER BY received_at LIMIT 1", (since_day,)
    ).fetchone()
    by_tag = (
        []
        if first is None
        else [
            dict(row)
            for row in conn.execute(
                "SELECT tag, state, count(*) AS n FROM jobs WHERE state IN ('Success', 'Failed') AND callback_id >= ?"
                " GROUP BY tag, state ORDER BY tag, state",
                (first["id"],),
            )
        ]
    )
    return {"callbacks": per_minute, "jobs": by_tag}


def recent_states(conn: sqlite3.Connection, subscriber_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """How each subscriber's latest attempted deliveries stand, by state (its success ratio comes from these).

    One bounded index range per subscriber on one connection: in-process, that costs no round trips."""
    found: dict[int, dict[str, int]] = {}
    for subscriber_id in subscriber_ids:
        for row in conn.execute(
            "SELECT state, count(*) AS n FROM (SELECT state FROM deliveries WHERE subscriber_id = ? AND attempts > 0"
            " ORDER BY id DESC LIMIT ?) GROUP BY state",
            (subscriber_id, RECENT_DELIVERIES),
        ):
            found.setdefault(subscriber_id, {})[row["state"]] = row["n"]
    return found


def event_body(conn: sqlite3.Connection, event_id: str) -> bytes | None:
    row = conn.execute("SELECT body, body_packed FROM events WHERE id = ?", (event_id,)).fetchone()
    return None if row is None else unpack(row["body"], row["body_packed"])
