"""asyncpg against psycopg 3 on the two transactions that matter: the ingest transaction and the delivery claim.

    .venv/bin/python -m bench.postgres_driver [--transactions 2000] [--concurrency 8]

Starts a throwaway PostgreSQL 15 (tests/postgres.py), creates the store's schema, then for each driver runs
the same statements: an ingest transaction (callback, item, job state, job upsert, event, delivery) and a
claim (lock the oldest due delivery with FOR UPDATE SKIP LOCKED, lease it), ``--concurrency`` at a time
through a pool. Drivers alternate over rounds (the machine is noisy) and the median round is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import psycopg
import psycopg_pool

from relay.store.postgres.schema import STEPS
from tests.postgres import running

BODY = b"<Response>" + b"x" * 2000 + b"</Response>"

INGEST = (
    (
        "INSERT INTO callbacks(received_at, source_addr, content_type, format, size, event_name, outcome, dedup_key,"
        " body, body_truncated) VALUES ($1, '127.0.0.1', 'application/xml', 'xml', $2, 'TaskFinish', 'accepted', $3,"
        " $4, 0) RETURNING id"
    ),
    (
        "INSERT INTO items(dedup_key, kind, subject, state, callback_id, received_at) VALUES ($1, 'job', $1, 'Success',"
        " $2, $3) ON CONFLICT(dedup_key) DO NOTHING"
    ),
    ("INSERT INTO job_states(job_id, state, received_at, callback_id) VALUES ($1, 'Success', $2, $3)"),
    (
        "INSERT INTO jobs(job_id, state, first_seen_at, updated_at, callback_id) VALUES ($1, 'Success', $2, $2, $3)"
        " ON CONFLICT(job_id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at"
    ),
    (
        "INSERT INTO events(id, item_key, type, subject, callback_id, created_at, body) VALUES ($1, $1, 't', $1, $2,"
        " $3, $4) ON CONFLICT(id) DO NOTHING"
    ),
    (
        "INSERT INTO deliveries(event_id, subscriber_id, state, attempts, failures, next_attempt_at, created_at,"
        " updated_at) VALUES ($1, 1, 'pending', 0, 0, $2, $2, $2)"
    ),
)
CLAIM_LOCK = (
    "SELECT id FROM deliveries WHERE subscriber_id = 1 AND state = 'pending' AND next_attempt_at <= $1"
    " ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED"
)
CLAIM_LEASE = (
    "UPDATE deliveries d SET state = 'in_flight', lease_expires_at = $2, attempts = attempts + 1 FROM events e"
    " WHERE d.id = $1 AND e.id = d.event_id RETURNING d.id, e.body"
)


def _psycopg(sql: str) -> str:
    """The same statement with psycopg's placeholders ($n -> %(pn)s keeps repeated parameters)."""
    for number in range(9, 0, -1):
        sql = sql.replace(f"${number}", f"%(p{number})s")
    return sql


def _named(args: tuple[Any, ...]) -> dict[str, Any]:
    return {f"p{index}": value for index, value in enumerate(args, 1)}


STAMP = "2026-01-01T00:00:00.000000Z"


async def _asyncpg_round(url: str, count: int, concurrency: int, base: int) -> tuple[float, float]:
    pool = await asyncpg.create_pool(url, min_size=concurrency, max_size=concurrency)

    async def ingest(n: int) -> None:
        key = f"asyncpg-{base + n}"
        async with pool.acquire() as conn, conn.transaction():
            callback_id = await conn.fetchval(INGEST[0], STAMP, len(BODY), key, BODY)
            await conn.execute(INGEST[1], key, callback_id, STAMP)
            await conn.execute(INGEST[2], key, STAMP, callback_id)
            await conn.execute(INGEST[3], key, STAMP, callback_id)
            await conn.execute(INGEST[4], key, callback_id, STAMP, BODY)
            await conn.execute(INGEST[5], key, STAMP)

    async def claim(n: int) -> None:
        async with pool.acquire() as conn, conn.transaction():
            found = await conn.fetchval(CLAIM_LOCK, STAMP)
            if found is not None:
                await conn.fetchrow(CLAIM_LEASE, found, STAMP)

    try:
        return await _timed(ingest, count, concurrency), await _timed(claim, count, concurrency)
    finally:
        await pool.close()


async def _psycopg_round(url: str, count: int, concurrency: int, base: int) -> tuple[float, float]:
    pool = psycopg_pool.AsyncConnectionPool(url, min_size=concurrency, max_size=concurrency, open=False)
    await pool.open(wait=True)
    ingest_sql = [_psycopg(sql) for sql in INGEST]
    lock_sql, lease_sql = _psycopg(CLAIM_LOCK), _psycopg(CLAIM_LEASE)

    async def ingest(n: int) -> None:
        key = f"psycopg-{base + n}"
        async with pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(ingest_sql[0], _named((STAMP, len(BODY), key, BODY)))
            row = await cursor.fetchone()
            assert row is not None
            callback_id = row[0]
            await conn.execute(ingest_sql[1], _named((key, callback_id, STAMP)))
            await conn.execute(ingest_sql[2], _named((key, STAMP, callback_id)))
            await conn.execute(ingest_sql[3], _named((key, STAMP, callback_id)))
            await conn.execute(ingest_sql[4], _named((key, callback_id, STAMP, BODY)))
            await conn.execute(ingest_sql[5], _named((key, STAMP)))

    async def claim(n: int) -> None:
        async with pool.connection() as conn, conn.transaction():
            found = await (await conn.execute(lock_sql, _named((STAMP,)))).fetchone()
            if found is not None:
                await (await conn.execute(lease_sql, _named((found[0], STAMP)))).fetchone()

    try:
        return await _timed(ingest, count, concurrency), await _timed(claim, count, concurrency)
    finally:
        await pool.close()


async def _timed(work: Callable[[int], Awaitable[None]], count: int, concurrency: int) -> float:
    """Transactions per second, ``concurrency`` at a time."""
    queue = iter(range(count))

    async def lane() -> None:
        for n in queue:
            await work(n)

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with running() as cluster:
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            for _, _, statements in STEPS:
                conn.execute(statements.encode())
            conn.execute(
                "INSERT INTO subscribers(name, url, secret, types, filters, state, max_in_flight, timeout)"
                " VALUES ('s', 'http://x', 's', '[]', '{}', 'enabled', 100, 5)"
            )
        results: dict[str, list[tuple[float, float]]] = {"asyncpg": [], "psycopg": []}
        for round_ in range(args.rounds):
            base = round_ * args.transactions
            for name, run in (("asyncpg", _asyncpg_round), ("psycopg", _psycopg_round)):
                results[name].append(asyncio.run(run(cluster.url(), args.transactions, args.concurrency, base)))
    print(f"{args.transactions} transactions x {args.rounds} rounds, {args.concurrency} at a time (median round)")
    medians = {name: [statistics.median(r[i] for r in rounds) for i in (0, 1)] for name, rounds in results.items()}
    for name, (ingest, claim) in medians.items():
        print(f"  {name:8} ingest {ingest:8.0f}/s   claim {claim:8.0f}/s")
    ratio = [medians["asyncpg"][i] / medians["psycopg"][i] for i in (0, 1)]
    print(f"  asyncpg / psycopg: ingest x{ratio[0]:.2f}, claim x{ratio[1]:.2f}")


if __name__ == "__main__":
    main()
