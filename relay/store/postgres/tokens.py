"""The tokens in force, their rotation, and console sessions (the SQLite store's `tokens`, statement for
statement). Token values go through `secrets`' functions only."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from relay.store.formats import iso
from relay.store.postgres.connection import rowcount
from relay.store.postgres.secrets import delete_secret, read_secret, write_secret
from relay.store.records import TOKENS, StoredToken, previous_of
from relay.store.rows import stored_token

#: Rotations take this lock: two at once would each keep the same token as the previous one.
TOKENS_LOCK = 0x636F7372656C6174


async def read_tokens(conn: asyncpg.Connection, at: datetime) -> dict[str, StoredToken]:
    sources = {row["name"]: row for row in await conn.fetch("SELECT name, source, fingerprint FROM token_sources")}
    found = {}
    for name in TOKENS:
        current, previous = await read_secret(conn, name), await read_secret(conn, previous_of(name))
        found[name] = stored_token(current, previous, sources.get(name), at)
    return found


async def record_token_source(conn: asyncpg.Connection, name: str, source: str, fingerprint: str, at: datetime) -> None:
    await conn.execute(
        "INSERT INTO token_sources(name, source, fingerprint, recorded_at) VALUES ($1, $2, $3, $4) ON CONFLICT(name)"
        " DO UPDATE SET source = excluded.source, fingerprint = excluded.fingerprint,"
        " recorded_at = excluded.recorded_at",
        name,
        source,
        fingerprint,
        iso(at),
    )


async def rotate_token(
    conn: asyncpg.Connection,
    name: str,
    value: str,
    fingerprint: str,
    at: datetime,
    previous_until: datetime | None,
    end_sessions: bool,
) -> int:
    await conn.execute("SELECT pg_advisory_xact_lock($1)", TOKENS_LOCK)
    current = await read_secret(conn, name)
    if current is not None and previous_until is not None and previous_until > at:
        await write_secret(conn, previous_of(name), current[0], at, previous_until)
    else:
        await delete_secret(conn, previous_of(name))
    await write_secret(conn, name, value, at, None)
    await record_token_source(conn, name, "database", fingerprint, at)
    return await end_console_sessions(conn, at, None) if end_sessions else 0


async def start_session(conn: asyncpg.Connection, session_id: str, expires: datetime, at: datetime) -> None:
    # Sessions are created only by signing in with the admin token: removing the expired ones here keeps the
    # table to the sessions of the last console_session seconds.
    await conn.execute("DELETE FROM console_sessions WHERE expires_at <= $1", iso(at))
    await conn.execute(
        "INSERT INTO console_sessions(id, created_at, expires_at) VALUES ($1, $2, $3)",
        session_id,
        iso(at),
        iso(expires),
    )


async def session_live(conn: asyncpg.Connection, session_id: str, at: datetime) -> bool:
    found = await conn.fetchval("SELECT 1 FROM console_sessions WHERE id = $1 AND expires_at > $2", session_id, iso(at))
    return found is not None


async def end_console_sessions(conn: asyncpg.Connection, at: datetime, session_id: str | None) -> int:
    """End one session, or all (None): how many of them were live."""
    await conn.execute("DELETE FROM console_sessions WHERE expires_at <= $1", iso(at))
    if session_id is None:
        return rowcount(await conn.execute("DELETE FROM console_sessions"))
    return rowcount(await conn.execute("DELETE FROM console_sessions WHERE id = $1", session_id))
