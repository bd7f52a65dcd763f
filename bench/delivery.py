"""Delivery throughput: drain N pending events to a local sink, against a raw aiohttp loop to the same sink.

Run: python -m bench.delivery [--events 20000] [--concurrency 32] [--rounds 3] [--postgres] [--json PATH]

``--postgres``: the drain's store on a throwaway PostgreSQL cluster (tests/postgres.py) instead of SQLite.

Three sides run in this process, one after the other, on uvloop (as the gateway's worker does under
uvicorn), against the same sink process, posting the same bodies with the same concurrency. The
relay side includes what a real drain does: claiming leases in SQLite, Standard Webhooks signing,
the HTTP POST through the SSRF-guarded sender, and recording every attempt and state change
(batched by the worker, group-committed by the single writer). Besides rates, each side reports
its CPU time per request (this process, all threads), which a busy machine disturbs far less.

The third side, *signed sends*, is the drain's floor: the gateway's own Sender and Standard Webhooks
signing over the same bodies and concurrency, with no store at all (no claims, no attempt records).
No design that signs and sends through this HTTP client can drain faster; what separates it from the
drain is the bookkeeping that makes delivery durable.

``--rounds N`` runs the three sides N times over, each round on a fresh store, and reports the round whose
ratio is the median, with every round's ratio beside it: on this shared two-core machine one round's
ratio of the same code ranged from 0.41 to 0.67 (2026-12-08), wider than most levers move it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import aiohttp
import anyio
import anyio.to_thread
import uvloop

from bench.process import free_port, running
from bench.report import delivery_table
from relay.app.serving import freeze_startup_heap
from relay.deliver.client import Sender
from relay.deliver.destinations import Destinations
from relay.deliver.signing import Signer, generate_secret
from relay.deliver.ssrf import AddressPolicy
from relay.deliver.worker import DeliveryWorker
from relay.domain.callback import Received
from relay.domain.destinations import Kind
from relay.domain.filters import Filter
from relay.domain.retry import RetryPolicy
from relay.domain.subscribers import SubscriberSpec
from relay.ingest import Ingest, Reader
from relay.store import Store, store_for
from relay.store.records import PostgresUrl
from relay.validate.schema import CallbackSchema

SAMPLE = Path(__file__).resolve().parent.parent / "tests" / "data" / "samples" / "transcode_success.xml"
JOB_ID = b"j7c12d4be4c935a96bfe3fb23d1a491e9"


@dataclass(frozen=True)
class Result:
    events: int
    concurrency: int
    raw_per_second: float
    relay_per_second: float
    #: CPU time of this process (every thread) per request: steadier than rates on a shared machine.
    raw_cpu_us: float
    relay_cpu_us: float
    signed_per_second: float
    signed_cpu_us: float
    #: Every round's drain ÷ raw loop, in the order run (this result is the median one's).
    ratios: tuple[float, ...] = ()

    @property
    def ratio(self) -> float:
        return self.relay_per_second / self.raw_per_second


def utc_now() -> datetime:
    return datetime.now(UTC)


def fill(store: Store, events: int, url: str, concurrency: int, kind: Kind = Kind.WEBHOOK) -> list[bytes]:
    """Ingest ``events`` distinct callbacks for one subscriber; return the event bodies they made."""
    spec = SubscriberSpec(
        name="sink", url=url, secret=generate_secret(), filter=Filter(), max_in_flight=concurrency, kind=kind
    )
    store.add_subscriber(spec, utc_now())
    service, template = Ingest(store, Reader(CallbackSchema.load())), SAMPLE.read_bytes()

    async def ingest() -> None:
        for start in range(0, events, 500):
            batch = []
            for number in range(start, min(start + 500, events)):
                body = template.replace(JOB_ID, f"j{number:032x}".encode())
                batch.append(service.ingest(Received(utc_now(), "127.0.0.1", "application/xml", body, "xml")))
            await asyncio.gather(*batch)

    asyncio.run(ingest())
    return store.event_bodies(limit=events)


@dataclass(frozen=True)
class Rate:
    per_second: float
    cpu_us: float  # per request


class Meter:
    """Wall and process CPU time over a block, per request."""

    def __enter__(self) -> Meter:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu

    def rate(self, requests: int) -> Rate:
        return Rate(requests / self.wall, self.cpu / requests * 1e6)


async def raw_loop(url: str, bodies: list[bytes], concurrency: int) -> Rate:
    """The baseline: the same POSTs from a plain aiohttp session, no signing, no bookkeeping."""
    queue = iter(bodies)
    async with aiohttp.ClientSession() as session:

        async def post_all() -> None:
            for body in queue:
                async with session.post(url, data=body, headers={"Content-Type": "application/cloudevents+json"}) as r:
                    await r.read()
                    assert r.status == 204

        with Meter() as meter:
            await asyncio.gather(*(post_all() for _ in range(concurrency)))
        return meter.rate(len(bodies))


async def signed_sends(url: str, bodies: list[bytes], concurrency: int) -> Rate:
    """The floor: the gateway's Sender and signing, as the worker calls them, and nothing stored."""
    queue, signer = iter(enumerate(bodies)), Signer([generate_secret()])
    async with Sender(AddressPolicy.from_setting("127.0.0.0/8")) as sender:

        async def post_all() -> None:
            for number, body in queue:
                headers = signer.headers(f"msg_{number:026d}", int(time.time()), body)
                attempt = await sender.send(url, body, headers, timeout=30.0)
                assert attempt.status == 204

        with Meter() as meter:
            await asyncio.gather(*(post_all() for _ in range(concurrency)))
        return meter.rate(len(bodies))


async def drain(store: Store, events: int) -> Rate:
    """The worker delivering every pending event, to whatever kind of subscriber the store holds."""
    loopback = AddressPolicy.from_setting("127.0.0.0/8")
    sender = Sender(loopback)
    destinations = Destinations.of(sender, policy=loopback)
    await destinations.start()
    worker = DeliveryWorker(store, destinations, RetryPolicy(), utc_now, capacity=256, poll_interval=0.05)
    try:
        async with anyio.create_task_group() as tasks:
            with Meter() as meter:
                tasks.start_soon(worker.run)
                delivered = partial(store.count_deliveries, "delivered")
                while await anyio.to_thread.run_sync(delivered) < events:  # noqa: ASYNC110 - no event in SQLite
                    await anyio.sleep(0.1)
            await worker.stop(grace=5)
            tasks.cancel_scope.cancel()
    finally:
        await destinations.close()
    return meter.rate(events)


def measure(
    events: int, concurrency: int, new_database: Callable[[], PostgresUrl] | None = None, rounds: int = 1
) -> Result:
    """The median of ``rounds`` rounds by ratio, each on a new store (``new_database``: a PostgreSQL database's
    URL per round; default: a fresh SQLite file), against one sink."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    results = []
    with running(["-m", "bench.sink", str(port)], port):
        for _ in range(rounds):
            with tempfile.TemporaryDirectory() as folder:
                database = new_database() if new_database else Path(folder) / "bench.db"
                results.append(one_round(events, concurrency, url, database))
    median = sorted(results, key=lambda result: result.ratio)[len(results) // 2]
    return replace(median, ratios=tuple(round(result.ratio, 3) for result in results))


def one_round(events: int, concurrency: int, url: str, database: Path | PostgresUrl) -> Result:
    with store_for(database) as store:
        bodies = fill(store, events, url, concurrency)
        # As `cos-relay serve` does once the app is built (the schema is loaded by now): for both sides.
        freeze_startup_heap()
        # uvloop on both sides: the loop uvicorn gives the gateway's delivery worker.
        raw = uvloop.run(raw_loop(url, bodies, concurrency))
        signed = uvloop.run(signed_sends(url, bodies, concurrency))
        relay = uvloop.run(drain(store, events))
    return Result(
        events,
        concurrency,
        raw.per_second,
        relay.per_second,
        raw.cpu_us,
        relay.cpu_us,
        signed.per_second,
        signed.cpu_us,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1, help="report the median of this many rounds")
    parser.add_argument("--postgres", action="store_true", help="the drain on PostgreSQL instead of SQLite")
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    if not options.postgres:
        result = measure(options.events, options.concurrency, rounds=options.rounds)
    else:
        from tests.postgres import running as postgres

        with postgres() as cluster:
            result = measure(options.events, options.concurrency, cluster.new_database, options.rounds)
    print("\n".join(delivery_table(asdict(result) | {"ratio": result.ratio})))
    if options.json:
        options.json.write_text(json.dumps({**asdict(result), "ratio": result.ratio}, indent=2))


if __name__ == "__main__":
    main()
