"""Drain to each broker kind against the HTTP drain, in one run: the same events, the same worker.

Run: python -m bench.brokers [--events 5000] [--concurrency 32] [--json PATH]

For each side, N callbacks are ingested into a fresh SQLite store for one subscriber, then the gateway's delivery
worker drains them (claims, Standard Webhooks signing, the destination, every attempt recorded), on uvloop as
under uvicorn: to `bench.sink` over HTTP, then to RabbitMQ (a confirmed, persistent, mandatory publish to a durable
queue), NATS JetStream (an acknowledged publish to a file-backed stream) and Redis Streams (XADD; the server's
append-only file synced every second, Redis's default when it is on). Each broker runs from Debian's packages on
loopback (tests/brokers/servers.py), started before the side is measured. Besides rates, each side reports this
process's CPU time per event (the brokers and the sink are other processes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import uvloop

from bench.delivery import drain, fill
from bench.process import free_port, running
from relay.app.serving import freeze_startup_heap
from relay.domain.destinations import Kind
from relay.store import store_for
from tests.brokers import consume
from tests.brokers.servers import BrokerServer, Nats, RabbitMQ, Redis

SIDES = (Kind.WEBHOOK, Kind.RABBITMQ, Kind.NATS, Kind.REDIS)


@dataclass(frozen=True)
class Side:
    kind: str
    per_second: float
    cpu_us: float


@dataclass(frozen=True)
class Result:
    events: int
    concurrency: int
    sides: list[Side]


@contextlib.contextmanager
def destination(kind: Kind) -> Iterator[str]:
    """The side's receiver, running and ready to take every event; yields the subscriber's URL."""
    if kind is Kind.WEBHOOK:
        port = free_port()
        with running(["-m", "bench.sink", str(port)], port):
            yield f"http://127.0.0.1:{port}/hook"
        return
    server: BrokerServer = {Kind.RABBITMQ: RabbitMQ, Kind.NATS: Nats}.get(kind, partial(Redis, "everysec"))()
    try:
        server.start()
        if kind is Kind.RABBITMQ:
            asyncio.run(consume.bind_queue(server.url, "bench"))
            yield server.url
        elif kind is Kind.NATS:
            asyncio.run(consume.add_stream(server.url, "BENCH", ["cos.>"]))
            yield server.url
        else:
            yield f"{server.url}?stream=bench"
    finally:
        server.remove()


def measure(events: int, concurrency: int, kinds: tuple[Kind, ...] = SIDES) -> Result:
    sides = []
    for kind in kinds:
        with (
            destination(kind) as url,
            tempfile.TemporaryDirectory() as folder,
            store_for(Path(folder) / "bench.db") as store,
        ):
            fill(store, events, url, concurrency, kind)
            freeze_startup_heap()
            rate = uvloop.run(drain(store, events))
            sides.append(Side(str(kind), rate.per_second, rate.cpu_us))
    return Result(events, concurrency, sides)


def table(result: Result) -> list[str]:
    http = next((side.per_second for side in result.sides if side.kind == Kind.WEBHOOK), None)
    lines = ["| drain to | events/s | / HTTP drain | CPU µs per event |", "| --- | ---: | ---: | ---: |"]
    for side in result.sides:
        ratio = f"{side.per_second / http:.2f}" if http else "-"
        lines.append(f"| {side.kind} | {side.per_second:,.0f} | {ratio} | {side.cpu_us:.0f} |")
    return [*lines, "", f"{result.events:,} events per side, {result.concurrency} in flight."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=5_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--kind", action="append", choices=[str(kind) for kind in SIDES], help="only these sides")
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    kinds = tuple(Kind(kind) for kind in options.kind) if options.kind else SIDES
    result = measure(options.events, options.concurrency, kinds)
    print("\n".join(table(result)))
    if options.json:
        options.json.write_text(json.dumps(asdict(result), indent=2))


if __name__ == "__main__":
    main()
