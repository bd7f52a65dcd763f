"""Where a PostgreSQL drain's time goes: each statement the store sends while the delivery worker drains a backlog.

Run: python -m bench.drain_statements [--events 5000]

Fills a fresh database of a throwaway cluster (tests/postgres.py) with ``--events`` events for one subscriber, then
drains them to a local sink as `bench.delivery` does, with every call of the store's PostgreSQL driver timed from
the moment it is sent to its answer (round trip and server time together). Prints the drain's rate, how much of its
wall time the statements took (they run one after the other on the store's connection: a lane waits for them), and
the statements by total time. The timing wraps `PostgresDb`'s methods for this process only.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable, Coroutine
from typing import Any

import uvloop

from bench.delivery import drain, fill
from bench.process import free_port, running
from relay.app.serving import freeze_startup_heap
from relay.store import store_for
from relay.store.postgres.connection import PostgresDb

#: (driver method, statement) -> [calls, seconds]
Timings = dict[tuple[str, str], list[float]]
Call = Callable[..., Coroutine[Any, Any, Any]]


def timed(timings: Timings, name: str, call: Call) -> Call:
    @functools.wraps(call)
    async def wrapper(self: PostgresDb, sql: str, *args: object) -> Any:
        started = time.perf_counter()
        try:
            return await call(self, sql, *args)
        finally:
            entry = timings.setdefault((name, " ".join(sql.split())[:100]), [0, 0.0])
            entry[0] += 1
            entry[1] += time.perf_counter() - started

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=5000)
    options = parser.parse_args()
    from tests.postgres import running as postgres

    timings: Timings = {}
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    with (
        postgres() as cluster,
        running(["-m", "bench.sink", str(port)], port),
        store_for(cluster.new_database()) as store,
    ):
        fill(store, options.events, url, 32)
        freeze_startup_heap()
        methods = ("execute", "executemany", "fetch", "fetchrow", "fetchval")
        plain = {name: getattr(PostgresDb, name) for name in methods}
        for name, call in plain.items():
            setattr(PostgresDb, name, timed(timings, name, call))
        try:
            started = time.monotonic()
            rate = uvloop.run(drain(store, options.events))
            wall = time.monotonic() - started
        finally:
            for name, call in plain.items():
                setattr(PostgresDb, name, call)
    total = sum(seconds for _, seconds in timings.values())
    print(f"drain: {rate.per_second:,.0f}/s, {rate.cpu_us:.0f} µs CPU a delivery (this process)")
    print(f"statements: {total:.2f} s of the drain's {wall:.2f} s")
    print("| ms in all | calls | ms a call | driver call | statement |\n| ---: | ---: | ---: | --- | --- |")
    for (name, sql), (calls, seconds) in sorted(timings.items(), key=lambda item: -item[1][1])[:20]:
        print(f"| {seconds * 1000:,.0f} | {calls:,.0f} | {seconds * 1000 / calls:.2f} | {name} | `{sql}` |")


if __name__ == "__main__":
    main()
