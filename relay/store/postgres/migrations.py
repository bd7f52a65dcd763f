"""Applying the schema steps: versioned, each recorded, all under one advisory lock.

Replicas starting at the same moment on an empty database queue on the lock; the first applies every
step, the others find them applied. DDL is transactional in PostgreSQL, so a failed step leaves nothing.
"""

from __future__ import annotations

import asyncpg

from relay.store.postgres.schema import STEPS

#: The advisory lock key migrations take (any fixed number; this one spells "cosrelay" in a way).
LOCK_KEY = 0x636F7372656C6179

LATEST = STEPS[-1][0]


async def migrate(conn: asyncpg.Connection) -> list[int]:
    """Apply the steps not yet applied; the versions applied now."""
    applied: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS relay_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row["version"] for row in await conn.fetch("SELECT version FROM relay_migrations")}
        for version, name, statements in STEPS:
            if version in done:
                continue
            await conn.execute(statements)
            await conn.execute("INSERT INTO relay_migrations(version, name) VALUES ($1, $2)", version, name)
            applied.append(version)
    return applied


async def version(conn: asyncpg.Connection) -> int | None:
    """The newest step applied, or None when cos-relay never set this database up."""
    if await conn.fetchval("SELECT to_regclass('relay_migrations')") is None:
        return None
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM relay_migrations"))
