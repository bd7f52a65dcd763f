"""Copying an SQLite database into a PostgreSQL one cos-relay set up (`cos-relay migrate-to`).

Both schemas have the same tables and columns, so rows go across as they are, table by table in the
order their references need, in one PostgreSQL transaction: a failure leaves the target as it was.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import asyncpg

from relay.store.failures import StoreConflict, UncopiableRow
from relay.store.packing import unpack
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
    "cursors",
    "filters",
    "gaps",
    "leases",
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
#: Columns the SQLite store keeps compressed, with their flag (PostgreSQL compresses large values itself).
PACKED = {"callbacks": ("body", "body_packed"), "events": ("body", "body_packed"), "jobs": ("detail", "detail_packed")}
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
            # The event log's one row (migration made it in both): where its head may never go back below.
            [(floor,)] = reader.execute("SELECT position FROM log_floor WHERE id = 1").fetchall()
            await conn.execute("UPDATE log_floor SET position = $1 WHERE id = 1", floor)
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
    packed = PACKED.get(table)
    kept = [column for column in columns if packed is None or column != packed[1]]
    total = 0
    while rows := cursor.fetchmany(CHUNK):
        records = []
        for row in rows:
            values = dict(zip(columns, row, strict=True))
            if packed is not None and values[packed[1]]:
                values[packed[0]] = unpack(values[packed[0]], 1)
            _check_copiable(table, columns[0], values)
            records.append(tuple(_as(types[column], values[column]) for column in kept))
        try:
            await conn.copy_records_to_table(table, records=records, columns=kept)
        except asyncpg.PostgresError as error:
            first, last = records[0][0], records[-1][0]
            reason = str(error).splitlines()[0]
            raise UncopiableRow(
                f"{table}: a row from {kept[0]}={first!r} to {last!r} cannot be copied: {reason}"
            ) from None
        total += len(records)
    return total


def _check_copiable(table: str, key: str, values: dict[str, object]) -> None:
    """`UncopiableRow` for a value PostgreSQL refuses that SQLite kept: a NUL in text (older releases let
    one into a subscriber's URL)."""
    for column, value in values.items():
        if isinstance(value, str) and "\x00" in value:
            raise UncopiableRow(
                f"{table} row {key}={values[key]!r}: {column} holds a NUL character, which PostgreSQL cannot store;"
                f" correct or remove that row in the SQLite file, then run migrate-to again"
            )


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
        if isinstance(value, bytes):  # a job's detail, inflated from its packed form
            return value.decode()
        return value if isinstance(value, str) else str(value)
    if kind in ("bigint", "integer"):
        return int(value)  # type: ignore[call-overload]
    if kind == "double precision":
        return float(value)  # type: ignore[arg-type]
    if kind == "bytea":
        return value if isinstance(value, bytes) else str(value).encode()
    return value
