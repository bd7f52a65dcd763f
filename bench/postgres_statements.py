"""Where a callback's time goes on PostgreSQL, without HTTP: each statement's planning and execution on the server.

Run: python -m bench.postgres_statements [--callbacks 3000] [--concurrency 32]

Records ``--callbacks`` distinct callbacks through `relay.ingest.Ingest` and the PostgreSQL store in this
process, ``--concurrency`` at a time (so group commit batches them as under load), on a fresh database of a
throwaway cluster (tests/postgres.py, fsync off) started with ``pg_stat_statements``. Prints this process's
CPU and the server's per callback, and the statements by server time (``pg_stat_statements``: calls, planning
and execution in ms).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from datetime import UTC, datetime

from bench.postgres_cost import server_cpu
from relay.domain.callback import Received
from relay.ingest import Ingest, Reader
from relay.store import store_for
from relay.store.records import PostgresUrl
from relay.validate.schema import CallbackSchema
from tests.conftest import job_body
from tests.postgres import Cluster

WARM_UP = 64
STATEMENTS = (
    "SELECT calls, round(total_plan_time::numeric, 1), round(total_exec_time::numeric, 1),"
    " left(regexp_replace(query, '\\s+', ' ', 'g'), 100) FROM pg_stat_statements"
    " WHERE query NOT LIKE '%pg_stat_statements%' ORDER BY total_plan_time + total_exec_time DESC LIMIT 12"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callbacks", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    cluster = Cluster()
    with (cluster.data / "postgresql.conf").open("a") as conf:
        conf.write("\nshared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.track_planning = on\n")
    cluster.start()
    try:
        name = f"b_{uuid.uuid4().hex}"
        cluster.psql(f"CREATE DATABASE {name}")
        cluster.psql("CREATE EXTENSION pg_stat_statements", name)
        own, server, seconds = asyncio.run(_flood(cluster, name, args.callbacks, args.concurrency))
        print(
            f"{args.callbacks} callbacks, {args.callbacks / seconds:.0f}/s; CPU per callback: this process"
            f" {1000 * own / args.callbacks:.3f} ms, server {1000 * server / args.callbacks:.3f} ms"
        )
        print("calls | planning ms | execution ms | statement")
        print(cluster.psql(STATEMENTS, name), end="")
    finally:
        cluster.stop()
        cluster.remove()


async def _flood(cluster: Cluster, name: str, callbacks: int, concurrency: int) -> tuple[float, float, float]:
    """This process's and the server's CPU seconds, and the wall seconds, for ``callbacks`` after a warm-up."""
    store = store_for(PostgresUrl(cluster.url(name)))
    store.open()
    try:
        ingest = Ingest(store, Reader(CallbackSchema.load()))
        slots = asyncio.Semaphore(concurrency)

        async def one(number: int) -> None:
            async with slots:
                body = job_body(number)
                await ingest.ingest(Received(datetime.now(UTC), "127.0.0.1", "application/xml", body, "xml"))

        await asyncio.gather(*(one(number) for number in range(WARM_UP)))
        cluster.psql("SELECT pg_stat_statements_reset()", name)
        own, server, wall = _process_cpu(), server_cpu(cluster), time.perf_counter()
        await asyncio.gather(*(one(number) for number in range(WARM_UP, WARM_UP + callbacks)))
        return _process_cpu() - own, server_cpu(cluster) - server, time.perf_counter() - wall
    finally:
        store.close()


def _process_cpu() -> float:
    times = os.times()
    return times.user + times.system


if __name__ == "__main__":
    main()
