"""Fair delivery under saturated ingest: how many events reach a fast subscriber while callbacks pour in.

Run: python -m bench.fairness [--seconds 6] [--connections 32] [--max-in-flight 8] [--postgres] [--json PATH]

``--max-in-flight``: the subscriber's limit of deliveries in flight (its lanes; default a subscriber's default).
``--postgres``: the gateway on a throwaway PostgreSQL cluster (tests/postgres.py) instead of SQLite.

``cos-relay serve`` (1 worker, one subscriber: the recording sink) takes a closed-loop load (wrk,
``--connections``) for ``--seconds``. Measured in the same run: the callbacks accepted, the events the
sink received during those seconds (their share is the figure: at least half), the outbox lag (the
``relay_outbox_oldest_age_seconds`` gauge, the age of the oldest unfinished delivery, sampled from
/metrics each second), and how long after the load stops the last event arrives (at most 2 s).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.ingest import add_subscriber, gateway, sink
from bench.load import closed_loop, new_run_id, sample_template
from bench.process import free_port
from bench.report import fairness_table
from relay.domain.subscribers import DEFAULT_MAX_IN_FLIGHT
from relay.store.records import PostgresUrl

METRICS_TOKEN = "bench-metrics-token"  # noqa: S105 - a throwaway gateway on loopback
#: The backlog must be gone this long after the load stops; waiting ends a while later.
DRAIN_LIMIT = 30.0


@dataclass(frozen=True)
class FairnessResult:
    connections: int
    seconds: float
    requests_per_second: float
    accepted: int
    delivered_during: int
    share: float  # delivered during the load / accepted
    lag_seconds: list[float]  # oldest unfinished delivery's age, each second of the load
    drain_seconds: float | None  # from the load's end to the last event arriving (None: not within the limit)


def _delivered(record: Path) -> int:
    return record.read_bytes().count(b"\n") if record.exists() else 0


def _lag(port: int) -> float:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        text = response.read().decode()
    ages = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("relay_outbox_oldest_age")]
    return max(ages, default=0.0)


def _settle(record: Path, expected: int, limit: float) -> float | None:
    """Seconds until ``expected`` events have arrived (polled every 20 ms), or None past ``limit``."""
    started = time.monotonic()
    while _delivered(record) < expected:
        if time.monotonic() - started > limit:
            return None
        time.sleep(0.02)
    return time.monotonic() - started


def measure(
    seconds: float,
    connections: int,
    folder: Path,
    *,
    warmup: float = 2.0,
    database: PostgresUrl | None = None,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
) -> FairnessResult:
    """``database``: the gateway's store URL (default: a fresh SQLite file in ``folder``)."""
    record, port = folder / "received", free_port()
    env = {"RELAY_METRICS_TOKEN": METRICS_TOKEN}
    db = database or folder / "g.db"
    with sink(record) as url:
        add_subscriber(db, url, max_in_flight=max_in_flight)
        with gateway(port, db, folder / "g.log", env=env):
            template = sample_template()
            if warmup:
                warm = closed_loop(port, template, new_run_id(), connections=connections, seconds=warmup)
                _settle(record, warm.accepted, DRAIN_LIMIT)
            before = _delivered(record)
            lags: list[float] = []
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                running = pool.submit(
                    closed_loop, port, template, new_run_id(), connections=connections, seconds=seconds
                )
                while not running.done():
                    with contextlib.suppress(OSError):  # a scrape that timed out under load: no sample that second
                        lags.append(_lag(port))
                    concurrent.futures.wait([running], timeout=1.0)
                load = running.result()
            during = _delivered(record) - before
            drain = _settle(record, before + load.accepted, DRAIN_LIMIT)
    return FairnessResult(
        connections=connections,
        seconds=load.seconds,
        requests_per_second=load.requests_per_second,
        accepted=load.accepted,
        delivered_during=during,
        share=during / max(load.accepted, 1),
        lag_seconds=[round(lag, 2) for lag in lags],
        drain_seconds=drain,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--max-in-flight", type=int, default=DEFAULT_MAX_IN_FLIGHT, help="the subscriber's lanes")
    parser.add_argument("--postgres", action="store_true", help="the gateway on PostgreSQL instead of SQLite")
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    lanes = options.max_in_flight
    with tempfile.TemporaryDirectory(prefix="cos-relay-fairness-") as folder:
        if not options.postgres:
            result = measure(options.seconds, options.connections, Path(folder), max_in_flight=lanes)
        else:
            from tests.postgres import running

            with running() as cluster:
                url = cluster.new_database()
                result = measure(options.seconds, options.connections, Path(folder), database=url, max_in_flight=lanes)
    text = json.dumps(asdict(result), indent=2)
    print(text)
    print("\n".join(fairness_table(asdict(result))))
    if options.json is not None:
        options.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
