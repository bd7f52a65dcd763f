"""Saturated ingest with a subscriber, load after load on one gateway: which regime it settles in.

Run: python -m bench.regimes [--loads 6] [--seconds 4] [--connections 32] [--json PATH]

One ``cos-relay serve`` (1 worker) with one subscriber (bench/sink.py) takes ``--loads`` wrk loads in a
row, each followed by waiting until its deliveries are done. Per load: the callbacks accepted per
second, the share of their events delivered during the load itself, the gateway's CPU (all threads)
over the load and its drain per callback, and how long the drain took. A gateway whose deliveries keep up
delivers ~100% during the load at a higher CPU cost per callback; one whose deliveries fall behind
accepts more and delivers the rest after (docs/performance.md, "How steady the figures are").
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from bench.history import drain
from bench.ingest import add_subscriber, gateway, sink
from bench.load import closed_loop, new_run_id, sample_template
from bench.process import free_port, group_cpu
from bench.report import emit
from relay.store.ops import queries
from relay.store.sqlite import connection


@dataclass(frozen=True)
class Load:
    requests_per_second: float
    delivered_during: float  # share of the load's callbacks whose event arrived during the load
    cpu_us: float  # the gateway's CPU over the load and its drain, per callback accepted
    drain_seconds: float


@dataclass(frozen=True)
class RegimesReport:
    seconds: float
    connections: int
    loads: list[Load]


def delivered(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        conn.row_factory = sqlite3.Row
        return connection.run(conn, partial(queries.count_deliveries, state="delivered"))


def measure(loads: int, seconds: float, connections: int, folder: Path) -> RegimesReport:
    results = []
    with sink() as url:
        db = folder / "regimes.db"
        add_subscriber(db, url)
        port = free_port()
        with gateway(port, db, folder / "regimes.log") as process:
            for number in range(loads):
                cpu, before = group_cpu(process.pid), delivered(db)
                run = closed_loop(port, sample_template(), new_run_id(), connections=connections, seconds=seconds)
                during, started = delivered(db) - before, time.monotonic()
                drain(db)
                load = Load(
                    requests_per_second=run.requests_per_second,
                    delivered_during=during / max(run.accepted, 1),
                    cpu_us=(group_cpu(process.pid) - cpu) / max(run.accepted, 1) * 1e6,
                    drain_seconds=time.monotonic() - started,
                )
                results.append(load)
                print(
                    f"  load {number + 1}: {load.requests_per_second:,.0f} req/s, {load.delivered_during:.0%}"
                    f" delivered during, {load.cpu_us:.0f} µs CPU per callback, drained in {load.drain_seconds:.1f} s",
                    flush=True,
                )
    return RegimesReport(seconds, connections, results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--loads", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cos-relay-regimes-") as folder:
        report = measure(options.loads, options.seconds, options.connections, Path(folder))
    emit(report, options.json)


if __name__ == "__main__":
    main()
