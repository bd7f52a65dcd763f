"""The tokens in force, their rotation, and console sessions. Token values go through `secrets`' functions
only."""

from __future__ import annotations

from datetime import datetime

from relay.store.db import Db
from relay.store.formats import iso
from relay.store.ops.secrets import delete_secret, read_secret, write_secret
from relay.store.records import TOKENS, StoredToken, previous_of
from relay.store.rows import stored_token

#: PostgreSQL's rotations take this lock: two at once would each keep the same token as the previous one.
TOKENS_LOCK = 0x636F7372656C6174


async def read_tokens(db: Db, at: datetime) -> dict[str, StoredToken]:
    sources = {row["name"]: row for row in await db.fetch("SELECT name, source, fingerprint FROM token_sources")}
    found = {}
    for name in TOKENS:
        current, previous = await read_secret(db, name), await read_secret(db, previous_of(name))
        found[name] = stored_token(current, previous, sources.get(name), at)
    return found


async def record_token_source(db: Db, name: str, source: str, fingerprint: str, at: datetime) -> None:
    await db.execute(
        "INSERT INTO token_sources(name, source, fingerprint, recorded_at) VALUES (?, ?, ?, ?) ON CONFLICT(name)"
        " DO UPDATE SET source = excluded.source, fingerprint = excluded.fingerprint,"
        " recorded_at = excluded.recorded_at",
        name,
        source,
        fingerprint,
        iso(at),
    )


async def rotate_token(
    db: Db,
    name: str,
    value: str,
    fingerprint: str,
    at: datetime,
    previous_until: datetime | None,
    end_sessions: bool,
) -> int:
    if db.dialect.postgres:
        await db.execute("SELECT pg_advisory_xact_lock(?)", TOKENS_LOCK)
    current = await read_secret(db, name)
    if current is not None and previous_until is not None and previous_until > at:
        await write_secret(db, previous_of(name), current[0], at, previous_until)
    else:
        await delete_secret(db, previous_of(name))
    await write_secret(db, name, value, at, None)
    await record_token_source(db, name, "database", fingerprint, at)
    return await end_console_sessions(db, at, None) if end_sessions else 0


async def start_session(db: Db, session_id: str, expires: datetime, at: datetime) -> None:
    # Sessions are created only by signing in with the admin token: removing the expired ones here keeps the
    # table to the sessions of the last console_session seconds.
    await db.execute("DELETE FROM console_sessions WHERE expires_at <= ?", iso(at))
    await db.execute(
        "INSERT INTO console_sessions(id, created_at, expires_at) VALUES (?, ?, ?)", session_id, iso(at), iso(expires)
    )


async def session_live(db: Db, session_id: str, at: datetime) -> bool:
    found = await db.fetchval("SELECT 1 FROM console_sessions WHERE id = ? AND expires_at > ?", session_id, iso(at))
    return found is not None


async def end_console_sessions(db: Db, at: datetime, session_id: str | None) -> int:
    """End one session, or all (None): how many of them were live."""
    await db.execute("DELETE FROM console_sessions WHERE expires_at <= ?", iso(at))
    if session_id is None:
        return await db.execute("DELETE FROM console_sessions")
    return await db.execute("DELETE FROM console_sessions WHERE id = ?", session_id)
