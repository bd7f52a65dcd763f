"""The tokens in force, their rotation, and console sessions. Token values go through `connection`'s secret
functions only."""

from __future__ import annotations

import sqlite3
from datetime import datetime

from relay.store.formats import iso
from relay.store.records import TOKENS, StoredToken, previous_of
from relay.store.rows import stored_token
from relay.store.sqlite.connection import delete_secret, read_secret, write_secret


def read_tokens(conn: sqlite3.Connection, at: datetime) -> dict[str, StoredToken]:
    sources = {row["name"]: row for row in conn.execute("SELECT name, source, fingerprint FROM token_sources")}
    found = {}
    for name in TOKENS:
        current, previous = read_secret(conn, name), read_secret(conn, previous_of(name))
        found[name] = stored_token(current, previous, sources.get(name), at)
    return found


def record_token_source(conn: sqlite3.Connection, name: str, source: str, fingerprint: str, at: datetime) -> None:
    conn.execute(
        "INSERT INTO token_sources(name, source, fingerprint, recorded_at) VALUES (?, ?, ?, ?) ON CONFLICT(name)"
        " DO UPDATE SET source = excluded.source, fingerprint = excluded.fingerprint,"
        " recorded_at = excluded.recorded_at",
        (name, source, fingerprint, iso(at)),
    )


def rotate_token(
    conn: sqlite3.Connection,
    name: str,
    value: str,
    fingerprint: str,
    at: datetime,
    previous_until: datetime | None,
    end_sessions: bool,
) -> int:
    current = read_secret(conn, name)
    if current is not None and previous_until is not None and previous_until > at:
        write_secret(conn, previous_of(name), current[0], at, previous_until)
    else:
        delete_secret(conn, previous_of(name))
    write_secret(conn, name, value, at, None)
    record_token_source(conn, name, "database", fingerprint, at)
    return end_console_sessions(conn, at, None) if end_sessions else 0


def start_session(conn: sqlite3.Connection, session_id: str, expires: datetime, at: datetime) -> None:
    # Sessions are created only by signing in with the admin token: removing the expired ones here keeps the
    # table to the sessions of the last console_session seconds.
    conn.execute("DELETE FROM console_sessions WHERE expires_at <= ?", (iso(at),))
    conn.execute(
        "INSERT INTO console_sessions(id, created_at, expires_at) VALUES (?, ?, ?)", (session_id, iso(at), iso(expires))
    )


def session_live(conn: sqlite3.Connection, session_id: str, at: datetime) -> bool:
    row = conn.execute(
        "SELECT 1 FROM console_sessions WHERE id = ? AND expires_at > ?", (session_id, iso(at))
    ).fetchone()
    return row is not None


def end_console_sessions(conn: sqlite3.Connection, at: datetime, session_id: str | None) -> int:
    """End one session, or all (None): how many of them were live."""
    conn.execute("DELETE FROM console_sessions WHERE expires_at <= ?", (iso(at),))
    if session_id is None:
        return conn.execute("DELETE FROM console_sessions").rowcount
    return conn.execute("DELETE FROM console_sessions WHERE id = ?", (session_id,)).rowcount
