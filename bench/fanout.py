"""Fan-out cost: callback ack latency at 0, 100 and 1,000 matching subscribers, and what /metrics costs.

Run: python -m bench.fanout [--requests 200] [--scrapes 20] [--levels 0,100,1000] [--postgres] [--json PATH]

``--postgres``: each level's gateway on a fresh database of a throwaway PostgreSQL cluster (tests/postgres.py)
instead of a fresh SQLite file.

Each level gets a fresh ``cos-relay serve`` (1 worker, fresh database) with that many subscribers
matching every event, pointing at a sink (bench/sink.py, ``--allow-networks 127.0.0.0/8``).
Callbacks are posted one at a time over one keep-alive connection, each with a new JobId, and the
time to its 200 is the ack latency, measured twice:

* **kept up**: every callback's deliveries all reach the sink before the next callback is posted
  (untimed), as when subscribers keep up: the ack pays for the fan-out, no delivery load competes.
* **backlog**: every subscriber is then **paused**, so each callback adds one more held delivery to
  every subscriber's growing backlog: the worst case for the delivery indexes.

The bare Starlette endpoint (bench/bare.py) takes the same requests in the same run.

At the largest level it then measures sequential scrapes of /metrics (time and bytes), and the ack
latency again while 4 scrape loops (a separate process) hit /metrics as fast as it answers,
right after the same measurement with no scrape loops. ``--scrapes 0`` leaves that part out (`python -m bench`
does: issue 26's rows are the acks).
"""

from __future__ import annotations

import argparse
import functools
import gzip
import http.client
import math
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.ingest import ADMIN_TOKEN, bare, gateway, sink
from bench.load import MARKER, TOKEN, job_id, new_run_id, sample_template
from bench.process import free_port
from bench.report import emit
from relay.deliver.signing import generate_secret
from relay.domain.filters import Filter
from relay.domain.subscribers import SubscriberSpec
from relay.store import store_for
from relay.store.records import Target

METRICS_TOKEN = "bench-metrics-token"  # noqa: S105 - a throwaway gateway on loopback
#: Callbacks each subscriber takes (and delivers to the sink) before it is paused.
SEED_CALLBACKS = 2
SCRAPE_LOOPS = 4
#: Bound on waiting for the seed deliveries to reach the sink.
SEED_TIMEOUT = 120.0


@dataclass(frozen=True)
class Ack:
    subscribers: int  # matching every callback; 0 for the bare endpoint
    requests: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    refused: int  # answers other than 200


@dataclass(frozen=True)
class Scrapes:
    subscribers: int
    scrapes: int
    first_ms: float  # the first scrape, which renders (later ones may reuse its rendering)
    p50_ms: float
    max_ms: float
    wire_bytes: int  # what the last scrape sent (gzipped when the server does)
    exposition_bytes: int  # the same, uncompressed


@dataclass(frozen=True)
class FanoutResult:
    bare: Ack
    #: Each callback's deliveries delivered before the next one is posted.
    kept_up: list[Ack]
    #: Subscribers paused: every callback adds to a held backlog per subscriber.
    backlog: list[Ack]
    #: The scrape part, at the largest level; None with no scrapes asked for.
    scrape: Scrapes | None = None
    #: At the largest level: no scrape loops, then SCRAPE_LOOPS of them, same server, back to back.
    without_scrape_loops: Ack | None = None
    with_scrape_loops: Ack | None = None
    scrape_loops: int = SCRAPE_LOOPS
    scrapes_during_loops: int = 0
    #: How long the scrape loops ran (as long as the callbacks took): scrapes per second compare across versions
    #: whose acks take different times.
    loops_seconds: float = 0.0


def _percentile(ordered: list[float], share: float) -> float:
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


def post_callbacks(port: int, count: int, subscribers: int, settle: Callable[[], None] = lambda: None) -> Ack:
    """``count`` callbacks one after another on one keep-alive connection; each one a new job.

    ``settle`` runs after each answer, untimed (waiting for its deliveries, say).
    """
    prefix, suffix = sample_template().read_bytes().split(MARKER.encode(), 1)
    run, latencies, refused = new_run_id(), [], 0
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        for number in range(count):
            body = prefix + job_id(run, 0, number).encode() + suffix
            started = time.perf_counter()
            connection.request(
                "POST", f"/cos/callback?token={TOKEN}", body=body, headers={"Content-Type": "application/xml"}
            )
            response = connection.getresponse()
            response.read()
            latencies.append(time.perf_counter() - started)
            refused += response.status != 200
            settle()
    finally:
        connection.close()
    latencies.sort()
    return Ack(
        subscribers=subscribers,
        requests=count,
        p50_ms=statistics.median(latencies) * 1000,
        p99_ms=_percentile(latencies, 0.99) * 1000,
        max_ms=latencies[-1] * 1000,
        refused=refused,
    )


def scrape(connection: http.client.HTTPConnection) -> tuple[bytes, bytes]:
    """One scrape as Prometheus makes it (gzip accepted): the bytes that came over the wire, and unzipped."""
    headers = {"Authorization": f"Bearer {METRICS_TOKEN}", "Accept-Encoding": "gzip"}
    connection.request("GET", "/metrics", headers=headers)
    response = connection.getresponse()
    body = response.read()
    if response.status != 200:
        raise RuntimeError(f"/metrics answered {response.status}")
    return body, gzip.decompress(body) if response.getheader("Content-Encoding") == "gzip" else body


def measure_scrapes(port: int, count: int, subscribers: int) -> Scrapes:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    times, wire, plain = [], b"", b""
    try:
        for _ in range(count):
            started = time.perf_counter()
            wire, plain = scrape(connection)
            times.append(time.perf_counter() - started)
    finally:
        connection.close()
    return Scrapes(
        subscribers,
        count,
        first_ms=times[0] * 1000,
        p50_ms=statistics.median(times) * 1000,
        max_ms=max(times) * 1000,
        wire_bytes=len(wire),
        exposition_bytes=len(plain),
    )


def _admin(port: int, method: str, path: str, body: bytes | None = None) -> bytes:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        answer = response.read()
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {answer[:200]!r}")
        return answer
    finally:
        connection.close()


def _pending(port: int) -> bool:
    """Whether any delivery is still pending or in flight."""
    for state in ("pending", "in_flight"):
        if b'"items":[]' not in _admin(port, "GET", f"/api/deliveries?state={state}&limit=1").replace(b" ", b""):
            return True
    return False


def add_subscribers(db: Target, url: str, count: int) -> None:
    """Create the database with ``count`` subscribers matching every event, all enabled."""
    with store_for(db) as store:
        at = datetime.now(UTC)
        for number in range(count):
            store.add_subscriber(
                SubscriberSpec(name=f"subscriber-{number:04d}", url=url, secret=generate_secret(), filter=Filter()), at
            )


def wait_delivered(port: int) -> None:
    """Until no delivery is pending or in flight."""
    deadline = time.monotonic() + SEED_TIMEOUT
    while _pending(port):
        if time.monotonic() > deadline:
            raise RuntimeError("the deliveries did not all arrive")
        time.sleep(0.01)


def pause_all(port: int, subscribers: int) -> None:
    for number in range(subscribers):
        _admin(port, "POST", f"/api/subscribers/subscriber-{number:04d}/pause")


class ScrapeLoops:
    """``loops`` threads in a child process scraping /metrics back to back until stopped."""

    def __init__(self, port: int, loops: int, seconds: float) -> None:
        args = ["-m", "bench.fanout", "--scrape-loops", str(port), str(loops), str(seconds)]
        self._process = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, text=True)
        # Its imports take a second or more on a busy machine: longer than the callbacks take once acks are fast,
        # and the loops would have scraped only at the end of them.
        assert self._process.stdout is not None
        if self._process.stdout.readline().strip() != "scraping":
            raise RuntimeError("the scrape loops did not start")

    def stop(self) -> int:
        """Stop the loops; returns how many scrapes they completed."""
        self._process.terminate()
        output, _ = self._process.communicate(timeout=60)
        lines = output.strip().splitlines()
        return int(lines[-1]) if lines else 0


def run_scrape_loops(port: int, loops: int, seconds: float) -> None:
    """The child process of ScrapeLoops: prints the number of scrapes done when stopped (or after ``seconds``)."""
    import signal

    done = [0]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("scraping", flush=True)

    def loop() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while not stop.is_set():
            scrape(connection)
            done[0] += 1
        connection.close()

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(loops)]
    for thread in threads:
        thread.start()
    stop.wait(seconds)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    print(done[0], flush=True)


def measure(
    levels: tuple[int, ...],
    requests: int,
    scrapes: int,
    folder: Path,
    progress: bool = True,
    new_database: Callable[[], Target] | None = None,
) -> FanoutResult:
    """``new_database``: a fresh store for each level's gateway (default: a fresh SQLite file)."""
    warmup = max(5, requests // 10)
    port = free_port()
    with bare(port, folder / "bare.log"):
        post_callbacks(port, warmup, 0)
        bare_ack = post_callbacks(port, requests, 0)
    if progress:
        print(f"  bare: p50 {bare_ack.p50_ms:.1f} ms, p99 {bare_ack.p99_ms:.1f} ms", flush=True)
    kept_up: list[Ack] = []
    backlog: list[Ack] = []
    scraped: dict[str, Any] = {}
    with sink() as sink_url:
        for count in levels:
            port = free_port()
            db = new_database() if new_database is not None else folder / f"fanout-{count}.db"
            add_subscribers(db, sink_url, count)
            # The callbacks' connection waits idle while each one's deliveries settle (untimed): with 1,000
            # subscribers that can take longer than the default 5 s keep-alive, and the gateway closed it under us.
            env = {"RELAY_METRICS_TOKEN": METRICS_TOKEN, "RELAY_KEEPALIVE_TIMEOUT": str(SEED_TIMEOUT)}
            with gateway(port, db, folder / f"fanout-{count}.log", env=env):
                settle = functools.partial(wait_delivered, port)
                post_callbacks(port, SEED_CALLBACKS, count, settle)  # every subscriber has delivery series
                ack = post_callbacks(port, requests, count, settle)
                kept_up.append(ack)
                pause_all(port, count)
                post_callbacks(port, warmup, count)
                held = post_callbacks(port, requests, count)
                backlog.append(held)
                if progress:
                    print(
                        f"  {count} subscribers: kept up p50 {ack.p50_ms:.1f} ms, p99 {ack.p99_ms:.1f} ms;"
                        f" backlog p50 {held.p50_ms:.1f} ms, p99 {held.p99_ms:.1f} ms",
                        flush=True,
                    )
                if count == max(levels) and scrapes > 0:
                    scraped = measure_scrape_part(port, scrapes, requests, count, progress)
    return FanoutResult(bare=bare_ack, kept_up=kept_up, backlog=backlog, **scraped)


def measure_scrape_part(port: int, scrapes: int, requests: int, count: int, progress: bool) -> dict[str, Any]:
    """Scrapes back to back, then the acks without and with scrape loops: `FanoutResult`'s scrape fields."""
    cost = measure_scrapes(port, scrapes, count)
    if progress:
        print(
            f"  scrape at {count}: first {cost.first_ms:.1f} ms, p50 {cost.p50_ms:.1f} ms,"
            f" {cost.wire_bytes:,} bytes sent ({cost.exposition_bytes:,} unzipped)",
            flush=True,
        )
    quiet = post_callbacks(port, requests, count)
    loops = ScrapeLoops(port, SCRAPE_LOOPS, seconds=600)
    started = time.monotonic()
    try:
        loaded = post_callbacks(port, requests, count)
        took = time.monotonic() - started
    finally:
        done = loops.stop()
    if progress:
        print(
            f"  {SCRAPE_LOOPS} scrape loops ({done} scrapes in {took:.1f} s): p50 {loaded.p50_ms:.1f} ms,"
            f" p99 {loaded.p99_ms:.1f} ms (none: p50 {quiet.p50_ms:.1f} ms, p99 {quiet.p99_ms:.1f} ms)",
            flush=True,
        )
    return {
        "scrape": cost,
        "without_scrape_loops": quiet,
        "with_scrape_loops": loaded,
        "scrapes_during_loops": done,
        "loops_seconds": took,
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--scrape-loops":
        run_scrape_loops(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--scrapes", type=int, default=20)
    parser.add_argument("--levels", default="0,100,1000")
    parser.add_argument("--postgres", action="store_true", help="each level on PostgreSQL instead of SQLite")
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    levels = tuple(int(level) for level in options.levels.split(","))
    with tempfile.TemporaryDirectory(prefix="cos-relay-fanout-") as folder:
        if not options.postgres:
            result = measure(levels, options.requests, options.scrapes, Path(folder))
        else:
            from tests.postgres import running

            with running() as cluster:
                result = measure(
                    levels, options.requests, options.scrapes, Path(folder), new_database=cluster.new_database
                )
    emit(result, options.json)


if __name__ == "__main__":
    main()
