"""Reads the web console makes: a job's callbacks and deliveries (the API's too), the overview's counts, a
subscriber's recent record."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from relay.store.answers import Delivery, MinuteCount, Overview, RawCallback, TagCount
from relay.store.db import Db
from relay.store.ops import implied
from relay.store.ops.histories import Histories
from relay.store.ops.queries import CALLBACK_COLUMNS, body_columns, callback_json
from relay.store.records import Page
from relay.store.rows import MAX_ID, callback_size, newest_first

#: How many of a subscriber's latest attempted deliveries its success ratio is taken over.
RECENT_DELIVERIES = 100


async def job_callbacks(
    db: Db, job_id: str, body_prefix: int, limit: int = 50, cursor: str | None = None
) -> Page[RawCallback]:
    """The raw callbacks that carried a job's states, newest first, bodies cut to ``body_prefix`` bytes."""
    rows = await db.fetch(
        f"SELECT {CALLBACK_COLUMNS}, {body_columns(db, body_prefix)} FROM callbacks"
        " WHERE id IN (SELECT callback_id FROM job_states WHERE job_id = ?) AND id < ? ORDER BY id DESC LIMIT ?",
        job_id,
        _before(cursor),
        limit + 1,
    )
    return newest_first(rows, limit, partial(callback_json, body_prefix=body_prefix), callback_size(body_prefix))


async def job_deliveries(
    db: Db, job_id: str, limit: int = 50, cursor: str | None = None, histories: Histories | None = None
) -> Page[Delivery]:
    """Every delivery of a job's events, newest first (rows and those the event log implies)."""
    return await implied.list_deliveries(
        db, subscriber=None, state=None, event_id=None, limit=limit, cursor=cursor, subject=job_id, histories=histories
    )


def _before(cursor: str | None) -> int:
    """The id a page starts below: the cursor, or past every id."""
    return MAX_ID if cursor is None else int(cursor)


async def overview(db: Db, since_minute: str, since_day: str) -> Overview:
    """Callbacks per minute by outcome since ``since_minute``; finished and failed jobs by Tag whose state a
    callback since ``since_day`` set.

    Each is a range of an index, so its cost follows the traffic in the window, not the history: callbacks by
    received_at (SQLite m006, PostgreSQL step 3); jobs by (state, callback_id) from the window's first callback id.
    """
    per_minute = await db.fetch(
        "SELECT substr(received_at, 1, 16) AS minute, outcome, count(*) AS n FROM callbacks"
        " WHERE received_at >= ? GROUP BY minute, outcome ORDER BY minute DESC, outcome",
        since_minute,
    )
    first = await db.fetchval("SELECT id FROM callbacks WHERE received_at >= ? ORDER BY received_at LIMIT 1", since_day)
    by_tag = (
        []
        if first is None
        else await db.fetch(
            "SELECT tag, state, count(*) AS n FROM jobs WHERE state IN ('Success', 'Failed') AND callback_id >= ?"
            " GROUP BY tag, state ORDER BY tag, state",
            first,
        )
    )
    return Overview(
        callbacks=[MinuteCount(minute=row["minute"], outcome=row["outcome"], n=row["n"]) for row in per_minute],
        jobs=[TagCount(tag=row["tag"], state=row["state"], n=row["n"]) for row in by_tag],
    )


async def recent_states(db: Db, subscriber_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """How each subscriber's latest attempted deliveries stand, by state (its success ratio comes from these).

    A bounded index range per subscriber: on PostgreSQL in one statement (LATERAL), one round trip for the whole
    list; SQLite, in-process, pays no round trips for one statement each."""
    found: dict[int, dict[str, int]] = {}
    if db.dialect.postgres:
        rows = await db.fetch(
            "SELECT s.id, recent.state, count(*) AS n FROM unnest(CAST(? AS bigint[])) AS s(id) CROSS JOIN LATERAL"
            " (SELECT state FROM deliveries WHERE subscriber_id = s.id AND attempts > 0 ORDER BY id DESC LIMIT ?)"
            " AS recent GROUP BY s.id, recent.state",
            list(subscriber_ids),
            RECENT_DELIVERIES,
        )
    else:
        rows = [
            row
            for subscriber_id in subscriber_ids
            for row in await db.fetch(
                "SELECT ? AS id, state, count(*) AS n FROM (SELECT state FROM deliveries WHERE subscriber_id = ?"
                " AND attempts > 0 ORDER BY id DESC LIMIT ?) GROUP BY state",
                subscriber_id,
                subscriber_id,
                RECENT_DELIVERIES,
            )
        ]
    for row in rows:
        found.setdefault(row["id"], {})[row["state"]] = int(row["n"])
    # The event log's attempted deliveries (no row), newest first, with the rows' among the latest.
    for subscriber_id in subscriber_ids:
        for owner in await implied.cursors(db, only=subscriber_id):
            for state, n in (await implied.recent_states(db, owner, RECENT_DELIVERIES)).items():
                found.setdefault(owner.id, {})[state] = found.get(owner.id, {}).get(state, 0) + n
    return found


async def event_body(db: Db, event_id: str) -> bytes | None:
    row = await db.fetchrow(f"SELECT body, {db.dialect.packed('body')} AS packed FROM events WHERE id = ?", event_id)
    return None if row is None else db.dialect.unpack(row["body"], row["packed"])
