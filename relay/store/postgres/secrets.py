"""Generated tokens (shared by every replica through the database) and the readiness heartbeat."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from relay.store.formats import iso
from relay.store.sealing import Sealer


async def get_or_create_secret(conn: asyncpg.Connection, name: str, candidate: str, at: datetime) -> str:
    """Keep the first value ever stored under ``name``: replicas starting together all get the same one."""
    await conn.execute(
        "INSERT INTO secrets(name, value, created_at) VALUES ($1, $2, $3) ON CONFLICT(name) DO NOTHING",
        name,
        candidate,
        iso(at),
    )
    return str(await conn.fetchval("SELECT value FROM secrets WHERE name = $1", name))


async def reseal_secrets(conn: asyncpg.Connection, sealer: Sealer) -> int:
    """Every stored secret sealed under the sealer's first key (`WrongSecretKey` when one does not open); how
    many changed. Replicas starting together may both seal a value: either result opens to the same secret."""
    changed = 0
    for row in await conn.fetch("SELECT name, value FROM secrets"):
        if (value := sealer.reseal(row["value"])) is not None:
            await conn.execute("UPDATE secrets SET value = $1 WHERE name = $2", value, row["name"])
            changed += 1
    for row in await conn.fetch("SELECT id, secret, previous_secret FROM subscribers"):
        for column in ("secret", "previous_secret"):
            if row[column] is not None and (value := sealer.reseal(row[column])) is not None:
                await conn.execute(f"UPDATE subscribers SET {column} = $1 WHERE id = $2", value, row["id"])
                changed += 1
    return changed


async def check_writable(conn: asyncpg.Connection, at: datetime) -> None:
    """Write one row, so that a read-only database (a standby, a full disk) shows up."""
    await conn.execute(
        "INSERT INTO heartbeat(id, at) VALUES (1, $1) ON CONFLICT(id) DO UPDATE SET at = excluded.at", iso(at)
    )


async def read_secret(conn: asyncpg.Connection, name: str) -> tuple[str, str | None] | None:
    """The value stored under ``name`` and until when it is good (None: no end), or None if there is none."""
    row = await conn.fetchrow("SELECT value, expires_at FROM secrets WHERE name = $1", name)
    return None if row is None else (str(row["value"]), row["expires_at"])


async def write_secret(conn: asyncpg.Connection, name: str, value: str, at: datetime, expires: datetime | None) -> None:
    """Store ``value`` under ``name`` (replacing what was there), good until ``expires`` (None: no end)."""
    await conn.execute(
        "INSERT INTO secrets(name, value, created_at, expires_at) VALUES ($1, $2, $3, $4) ON CONFLICT(name) DO UPDATE"
        " SET value = excluded.value, created_at = excluded.created_at, expires_at = excluded.expires_at",
        name,
        value,
        iso(at),
        None if expires is None else iso(expires),
    )


async def delete_secret(conn: asyncpg.Connection, name: str) -> None:
    await conn.execute("DELETE FROM secrets WHERE name = $1", name)
