"""Generated secrets and tokens (shared by every process or replica through the database), their sealing, and
the readiness heartbeat."""

from __future__ import annotations

from datetime import datetime

from relay.store.db import Db
from relay.store.formats import iso
from relay.store.sealing import Sealer


async def get_or_create_secret(db: Db, name: str, candidate: str, at: datetime) -> str:
    """Keep the first value ever stored under ``name``: later calls, and replicas starting together, get it."""
    await db.execute(
        "INSERT INTO secrets(name, value, created_at) VALUES (?, ?, ?) ON CONFLICT(name) DO NOTHING",
        name,
        candidate,
        iso(at),
    )
    return str(await db.fetchval("SELECT value FROM secrets WHERE name = ?", name))


async def reseal_secrets(db: Db, sealer: Sealer) -> int:
    """Every stored secret sealed under the sealer's first key (`WrongSecretKey` when one does not open); how
    many changed. Replicas starting together may both seal a value: either result opens to the same secret.
    On SQLite the old values' bytes are zeroed (secure_delete), not left in free space."""
    changes: list[tuple[str, tuple[object, ...]]] = []
    for row in await db.fetch("SELECT name, value FROM secrets"):
        if (value := sealer.reseal(row["value"])) is not None:
            changes.append(("UPDATE secrets SET value = ? WHERE name = ?", (value, row["name"])))
    for row in await db.fetch("SELECT id, secret, previous_secret FROM subscribers"):
        for column in ("secret", "previous_secret"):
            if row[column] is not None and (value := sealer.reseal(row[column])) is not None:
                changes.append((f"UPDATE subscribers SET {column} = ? WHERE id = ?", (value, row["id"])))
    if changes and not db.dialect.postgres:
        await db.execute("PRAGMA secure_delete = ON")
    try:
        for statement, values in changes:
            await db.execute(statement, *values)
    finally:
        if changes and not db.dialect.postgres:
            await db.execute("PRAGMA secure_delete = OFF")
    return len(changes)


async def check_writable(db: Db, at: datetime) -> None:
    """Write one row, so that a read-only database (a standby, a read-only file, a full disk) shows up."""
    await db.execute(
        "INSERT INTO heartbeat(id, at) VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET at = excluded.at", iso(at)
    )


async def read_secret(db: Db, name: str) -> tuple[str, str | None] | None:
    """The value stored under ``name`` and until when it is good (None: no end), or None if there is none."""
    row = await db.fetchrow("SELECT value, expires_at FROM secrets WHERE name = ?", name)
    return None if row is None else (str(row["value"]), row["expires_at"])


async def write_secret(db: Db, name: str, value: str, at: datetime, expires: datetime | None) -> None:
    """Store ``value`` under ``name`` (replacing what was there), good until ``expires`` (None: no end)."""
    await db.execute(
        "INSERT INTO secrets(name, value, created_at, expires_at) VALUES (?, ?, ?, ?) ON CONFLICT(name) DO UPDATE"
        " SET value = excluded.value, created_at = excluded.created_at, expires_at = excluded.expires_at",
        name,
        value,
        iso(at),
        None if expires is None else iso(expires),
    )


async def delete_secret(db: Db, name: str) -> None:
    await db.execute("DELETE FROM secrets WHERE name = ?", name)
