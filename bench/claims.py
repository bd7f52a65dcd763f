"""What a claim costs a delivery, and what a page of deliveries costs, as subscribers grow: the same number of
deliveries, owed by 1, 10, 100 and 1,000 subscribers.

Run: python -m bench.claims [--subscribers 1,10,100,1000] [--deliveries 1000] [--repeat 5] [--json PATH]

Each level is a fresh SQLite file with that many subscribers taking every event (up to 256 lanes each), then
``--deliveries`` ÷ subscribers callbacks ingested (one event each), so every level owes the same deliveries
(1,000 at most: `SCAN`, what one claim reads of a cursor's log). `deliveries.claim_due` then takes everything owed
in one claim (runs of `RUN`), on the writer's kind of connection, inside a transaction rolled back after it, so
every repetition claims the same work with the subscribers' filters kept from the one before (as the gateway keeps
them). The figure is the fastest repetition's CPU per claim. The baseline is the first level, in the same run: a
claim whose cost does not grow with subscribers stays near 1.0 of it. Then, through the store as the API reads it,
the first page of pending deliveries (50), the fastest of ``--repeat`` after one untimed page: every subscriber's
cursor is read to find what it owes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from bench.delivery import JOB_ID, SAMPLE
from relay.deliver.signing import generate_secret
from relay.deliver.worker import LEASE_MARGIN, RUN
from relay.domain.callback import Received
from relay.domain.filters import Filter
from relay.domain.subscribers import MAX_IN_FLIGHT, SubscriberSpec
from relay.ingest import Ingest, Reader
from relay.store import Store, store_for
from relay.store.ops import deliveries
from relay.store.ops.histories import Histories
from relay.store.sqlite import connection
from relay.validate.schema import CallbackSchema

#: The most lanes a subscriber may have (`MAX_IN_FLIGHT`): one subscriber takes all the deliveries in one claim.
LANES = MAX_IN_FLIGHT[1]


@dataclass(frozen=True)
class Level:
    subscribers: int
    claims: int
    cpu_us: float  # a claim (one event for one subscriber), the fastest repetition
    ratio: float  # cpu_us ÷ the first level's
    page_ms: float  # the first page of pending deliveries, the fastest repetition


def fill(store: Store, subscribers: int, events: int) -> None:
    now = datetime.now(UTC)
    for number in range(subscribers):
        spec = SubscriberSpec(f"s{number}", "http://127.0.0.1:9/hook", generate_secret(), Filter(), max_in_flight=LANES)
        store.add_subscriber(spec, now)
    service, template = Ingest(store, Reader(CallbackSchema.load())), SAMPLE.read_bytes()

    async def ingest() -> None:
        for number in range(events):
            body = template.replace(JOB_ID, f"j{number:032x}".encode())
            await service.ingest(Received(now, "127.0.0.1", "application/xml", body, "xml"))

    asyncio.run(ingest())


def claim_cpu_us(path: Path, repeat: int) -> tuple[int, float]:
    """How many claims one claim of everything owed makes, and the fastest repetition's CPU per claim."""
    conn = connection.connect(path)
    try:
        fastest, claimed = float("inf"), 0
        kept = Histories()  # the filters as the gateway keeps them between claims: read once
        for _ in range(repeat + 1):  # the first fills `kept`, untimed
            now = datetime.now(UTC)
            claim = partial(
                deliveries.claim_due, now=now, lease_margin=LEASE_MARGIN, capacity=1_000_000, histories=kept, run=RUN
            )
            connection.begin(conn)
            try:
                started = time.thread_time()
                claims = connection.run(conn, claim)
                if claimed:
                    fastest = min(fastest, time.thread_time() - started)
            finally:
                connection.rollback(conn)
            claimed = len(claims)
        return claimed, fastest / claimed * 1e6
    finally:
        conn.close()


def page_ms(store: Store, repeat: int) -> float:
    """The fastest of ``repeat`` first pages of pending deliveries, after one untimed (the filters read)."""
    fastest = float("inf")
    for attempt in range(repeat + 1):
        started = time.perf_counter()
        store.list_deliveries(state="pending", limit=50)
        if attempt:
            fastest = min(fastest, time.perf_counter() - started)
    return fastest * 1e3


def measure(levels: list[int], deliveries_owed: int, repeat: int) -> list[Level]:
    results: list[Level] = []
    with tempfile.TemporaryDirectory() as folder:
        for subscribers in levels:
            path = Path(folder) / f"claims-{subscribers}.db"
            with store_for(path) as store:
                fill(store, subscribers, deliveries_owed // subscribers)
            claims, cpu_us = claim_cpu_us(path, repeat)
            if claims != subscribers * (deliveries_owed // subscribers):
                raise SystemExit(f"{subscribers} subscribers: claimed {claims} of {deliveries_owed}")
            with store_for(path) as store:
                page = page_ms(store, repeat)
            base = results[0].cpu_us if results else cpu_us
            results.append(Level(subscribers, claims, cpu_us, cpu_us / base, page))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", default="1,10,100,1000", help="levels, comma-separated")
    parser.add_argument("--deliveries", type=int, default=1000, help="owed at every level, over its subscribers")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    levels = [int(level) for level in options.subscribers.split(",")]
    results = measure(levels, options.deliveries, options.repeat)
    print("| subscribers | claims | µs CPU a claim | ÷ the first level | ms a page of pending deliveries |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for level in results:
        cells = (f"{level.subscribers:,}", f"{level.claims:,}", f"{level.cpu_us:.1f}", f"{level.ratio:.2f}")
        print(f"| {' | '.join(cells)} | {level.page_ms:.2f} |")
    if options.json:
        options.json.write_text(json.dumps([asdict(level) for level in results], indent=2))


if __name__ == "__main__":
    main()
