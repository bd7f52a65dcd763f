"""Copying an SQLite database into a PostgreSQL one cos-relay set up (`cos-relay migrate-to`).

Both schemas have the same tables and columns, so rows go across as they are, table by table in the
order their references need, in one PostgreSQL transaction: a failure leaves the target as it was.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import asyncpg

from relay.store.failures import StoreConflict
from relay.store.records import PostgresUrl

#: Every table, parents first; the ones with an identity column have their sequence moved past the rows.
TABLES = (
    "callbacks",
    "items",
    "jobs",
    "job_states",
    "workflow_runs",
    "workflow_states",
    "workflow_tasks",
    "nonexistent_job_ids",
    "secrets",
    "subscribers",
    "events",
    "deliveries",
    "attempts",
)
IDENTITIES = (
    "callbacks",
    "job_states",
    "workflow_states",
    "nonexistent_job_ids",
    "subscribers",
    "deliveries",
    "attempts",
)
#: Rows read and written at a time, so a large database never sits in memory whole.
CHUNK = 5000


def copy_from_sqlite(source: Path, target: PostgresUrl) -> dict[str, int]:
    """Rows copied per table. `StoreConflict` when the target already holds callbacks or subscribers."""
    reader = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return asyncio.run(_copy(reader, target))
    finally:
        reader.close()


async def _copy(reader: sqlite3.Connection, target: PostgresUrl) -> dict[str, int]:
    conn = await asyncpg.connect(target.url)
    copied: dict[str, int] = {}
    try:
        async with conn.transaction():
            for table in ("callbacks", "subscribers"):
                if await conn.fetchval(f"SELECT count(*) FROM {table}"):
                    raise StoreConflict(f"the database at {target} already holds {table}: copy into an empty one")
            for table in TABLES:
                copied[table] = await _copy_table(reader, conn, table)
            for table in IDENTITIES:
                await conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), coalesce(max(id), 0) + 1, false)"
                    f" FROM {table}"
                )
    finally:
        await conn.close()
    return copied


async def _copy_table(reader: sqlite3.Connection, conn: asyncpg.Connection, table: str) -> int:
    cursor = reader.execute(f"SELECT * FROM {table}")
    columns = [description[0] for description in cursor.description]
    types = await _column_types(conn, table)
    total = 0
    while rows := cursor.fetchmany(CHUNK):
        records = [tuple(_as(types[column], value) for column, value in zip(columns, row, strict=True)) for row in rows]
        await conn.copy_records_to_table(table, records=records, columns=columns)
        total += len(records)
    return total


async def _column_types(conn: asyncpg.Connection, table: str) -> dict[str, str]:
    rows = await conn.fetch(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = $1", table
    )
    return {row["column_name"]: row["data_type"] for row in rows}


def _as(kind: str, value: object) -> object:
    """SQLite keeps whatever type a value came with; PostgreSQL wants the column's."""
    if value is None:
        return None
    if kind == "text":
        return value if isinstance(value, str) else str(value)
    if kind in ("bigint", "integer"):
        return int(value)  # type: ignore[call-overload]
    if kind == "double precision":
        return float(value)  # type: ignore[arg-type]
    if kind == "bytea":
        return value if isinstance(value, bytes) else str(value).encode()
    return value
