"""Ingest and delivery on PostgreSQL, one replica and two (behind nginx), against same-run baselines.

Run: python -m bench.postgres_replicas [--seconds 5] [--rounds 2] [--connections 32] [--deliveries 2000]

Ingest: a closed-loop load (bench/load.py) on the bare endpoint, the SQLite gateway, one PostgreSQL
replica (direct, and behind deploy/nginx/cos-relay-replicas.conf) and two replicas behind it; rounds
alternate the order, every gateway run gets a fresh database. Delivery: ``--deliveries`` callbacks stored
while the one subscriber (bench/sink.py) is paused, then it is resumed and the time to deliver them all is
measured, on SQLite, one PostgreSQL replica and two. PostgreSQL is a throwaway cluster (tests/postgres.py,
fsync off, like the SQLite gateway's default durability that survives a process crash but not power loss).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench.ingest import ADMIN_TOKEN, bare, sink
from bench.load import TOKEN, closed_loop, new_run_id, sample_template
from bench.process import free_port, serving
from relay.deliver.signing import generate_secret
from relay.domain.filters import Filter
from relay.domain.subscribers import SubscriberSpec, SubscriberState
from relay.store import store_for
from relay.store.records import Target
from tests.balancer import balancing
from tests.live import db_text
from tests.postgres import Cluster, running

INGEST_VARIANTS = ("bare", "sqlite", "pg-1", "pg-1-nginx", "pg-2-nginx")
DELIVERY_VARIANTS = ("sqlite", "pg-1", "pg-2-nginx")


def fresh(cluster: Cluster, folder: Path, variant: str) -> Target:
    if variant == "sqlite":
        return folder / f"{uuid.uuid4().hex}.db"
    return cluster.new_database()


@contextlib.contextmanager
def deployed(variant: str, db: Target, folder: Path) -> Iterator[int]:
    """The variant's servers; yields the port the load goes to."""
    if variant == "bare":
        port = free_port()
        with bare(port, folder / "bare.log"):
            yield port
        return
    replicas = 2 if variant.startswith("pg-2") else 1
    ports = [free_port() for _ in range(replicas)]
    with contextlib.ExitStack() as stack:
        for port in ports:
            args = [
                "-m",
                "relay",
                "serve",
                "--port",
                str(port),
                "--db",
                db_text(db),
            ]
            args += ["--callback-token", TOKEN, "--admin-token", ADMIN_TOKEN, "--allow-networks", "127.0.0.0/8"]
            args += ["--pool-size", "16"]
            stack.enter_context(serving(args, port, folder / f"relay-{port}.log"))
        if not variant.endswith("nginx"):
            yield ports[0]
            return
        balancer = stack.enter_context(balancing(folder, ports))
        yield int(balancer.rsplit(":", 1)[1])


def ingest_rates(cluster: Cluster, folder: Path, seconds: float, rounds: int, connections: int) -> dict[str, float]:
    runs: dict[str, list[float]] = {variant: [] for variant in INGEST_VARIANTS}
    for round_number in range(rounds):
        order = INGEST_VARIANTS if round_number % 2 == 0 else tuple(reversed(INGEST_VARIANTS))
        for variant in order:
            with deployed(variant, fresh(cluster, folder, variant), folder) as port:
                template = sample_template()
                closed_loop(port, template, new_run_id(), connections=connections, seconds=1)
                result = closed_loop(port, template, new_run_id(), connections=connections, seconds=seconds)
            if result.refused or result.errors:
                raise RuntimeError(f"{variant}: {result.refused} refused, {result.errors} errors")
            runs[variant].append(result.requests_per_second)
            print(f"  ingest {variant:12} {result.requests_per_second:8.0f} req/s", flush=True)
    return {variant: statistics.median(rates) for variant, rates in runs.items()}


def drain_rate(cluster: Cluster, folder: Path, variant: str, sink_url: str, deliveries: int) -> float:
    db = fresh(cluster, folder, variant)
    spec = SubscriberSpec("sink", sink_url, generate_secret(), Filter(), max_in_flight=64)
    with store_for(db) as store:
        store.add_subscriber(spec, datetime.now(UTC))
        store.set_subscriber_state("sink", SubscriberState.PAUSED, datetime.now(UTC))
    with deployed(variant, db, folder) as port:
        closed_loop(port, sample_template(), new_run_id(), connections=16, seconds=120, limit=deliveries)
        with store_for(db, create=False) as store:
            queued = store.count_deliveries("pending")
            started = time.monotonic()
            # Through the gateway (through nginx, for two replicas), as an operator would: it wakes its worker.
            resumed = httpx.post(
                f"http://127.0.0.1:{port}/api/subscribers/sink/resume",
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            )
            resumed.raise_for_status()
            while store.count_deliveries("delivered") < queued:
                time.sleep(0.05)
            elapsed = time.monotonic() - started
    rate = queued / elapsed
    print(f"  delivery {variant:12} {queued} in {elapsed:.1f} s: {rate:8.0f}/s", flush=True)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--deliveries", type=int, default=2000)
    args = parser.parse_args()
    with running() as cluster, tempfile.TemporaryDirectory(prefix="bench-pg-") as directory:
        folder = Path(directory)
        ingest = ingest_rates(cluster, folder, args.seconds, args.rounds, args.connections)
        with sink() as sink_url:
            drains: dict[str, list[float]] = {variant: [] for variant in DELIVERY_VARIANTS}
            for round_number in range(args.rounds):
                order = DELIVERY_VARIANTS if round_number % 2 == 0 else tuple(reversed(DELIVERY_VARIANTS))
                for variant in order:
                    drains[variant].append(drain_rate(cluster, folder, variant, sink_url, args.deliveries))
    delivery = {variant: statistics.median(rates) for variant, rates in drains.items()}
    print("\ningest (median req/s, ratio to bare / to SQLite):")
    for variant, rate in ingest.items():
        print(f"  {variant:12} {rate:8.0f}  x{rate / ingest['bare']:.2f}  x{rate / ingest['sqlite']:.2f}")
    print("delivery (median deliveries/s, ratio to SQLite):")
    for variant, rate in delivery.items():
        print(f"  {variant:12} {rate:8.0f}  x{rate / delivery['sqlite']:.2f}")


if __name__ == "__main__":
    main()
