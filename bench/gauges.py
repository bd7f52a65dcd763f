"""What the outbox gauges cost a /metrics scrape: the store's read of them (``Store.outbox_stats``) alone, no HTTP.

Run: python bench/gauges.py [--subscribers 1000] [--filtered 0] [--callbacks 400] [--reads 20] [--postgres]

A fresh database (SQLite file, or with ``--postgres`` a throwaway PostgreSQL cluster, tests/postgres.py) with
``--subscribers`` paused subscribers, ``--filtered`` of them with a filter (the sample's type only, so every event
is read and matched), and ``--callbacks`` callbacks of the sample, so that each subscriber holds that many pending
deliveries; then ``--reads`` reads of the gauges one after another: the first (which counts the filtered
subscribers' backlogs) and the median of the others.

To compare with another tree's relay, run this file with ``PYTHONPATH=/that/tree``: it imports only ``relay`` and
``tests.postgres``, which every tree has.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from relay.deliver.signing import generate_secret
from relay.domain.callback import Received
from relay.domain.filters import Filter
from relay.domain.subscribers import SubscriberSpec, SubscriberState
from relay.ingest import Ingest, Reader
from relay.store import Store, store_for
from relay.store.records import Target
from relay.validate.schema import CallbackSchema

SAMPLE = Path(__file__).parent.parent / "tests" / "data" / "samples" / "transcode_success.xml"
MARKER = "j7c12d4be4c935a96bfe3fb23d1a491e9"


def fill(store: Store, subscribers: int, filtered: int, callbacks: int) -> None:
    at = datetime.now(UTC)
    for number in range(subscribers):
        kept = Filter(("cos.job.succeeded",), {"tag": "Transcode"}) if number < filtered else Filter()
        spec = SubscriberSpec(f"hook-{number:04d}", "http://127.0.0.1:9/hook", generate_secret(), kept)
        store.add_subscriber(spec, at)
        store.set_subscriber_state(spec.name, SubscriberState.PAUSED, at)
    prefix, suffix = SAMPLE.read_bytes().split(MARKER.encode(), 1)
    service = Ingest(store, Reader(CallbackSchema.load()))

    async def post() -> None:
        for number in range(callbacks):
            body = prefix + f"j{number:032d}".encode() + suffix
            await service.ingest(Received(at, "127.0.0.1", "application/xml", body, "xml"))

    asyncio.run(post())


def measure(db: Target, subscribers: int, filtered: int, callbacks: int, reads: int) -> tuple[float, float, int]:
    """The first read's milliseconds, the median of the others, and the pending deliveries the gauges said."""
    with store_for(db) as store:
        fill(store, subscribers, filtered, callbacks)
        times = []
        for _ in range(reads):
            started = time.perf_counter()
            stats = store.outbox_stats()
            times.append(time.perf_counter() - started)
    return times[0] * 1000, statistics.median(times[1:]) * 1000, stats["outbox"]["pending"][0]


@contextlib.contextmanager
def database(postgres: bool) -> Iterator[Target]:
    if not postgres:
        with tempfile.TemporaryDirectory(prefix="cos-relay-gauges-") as folder:
            yield Path(folder) / "relay.db"
        return
    from tests.postgres import running

    with running() as cluster:
        yield cluster.new_database()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--filtered", type=int, default=0)
    parser.add_argument("--callbacks", type=int, default=400)
    parser.add_argument("--reads", type=int, default=20)
    parser.add_argument("--postgres", action="store_true")
    options = parser.parse_args()
    with database(options.postgres) as db:
        first, median, pending = measure(db, options.subscribers, options.filtered, options.callbacks, options.reads)
    print(
        f"{'PostgreSQL' if options.postgres else 'SQLite'}, {options.subscribers} subscribers"
        f" ({options.filtered} filtered), {options.callbacks} callbacks: {pending:,} pending;"
        f" outbox_stats first {first:.1f} ms, median of the next {options.reads - 1} {median:.1f} ms",
        flush=True,
    )


if __name__ == "__main__":
    main()
