"""Memory: the gateway's RSS while ingesting N callbacks with one subscriber, at N/2 and at N.

Run: python -m bench.memory [--callbacks 200000] [--connections 64] [--json PATH]

``cos-relay serve`` (1 worker, fresh database) relays every event to the sink while wrk posts
distinct callbacks over many connections. RSS (VmRSS) and peak RSS (VmHWM) come from
/proc/<pid>/status of the gateway process: after a warm-up of 1,000 callbacks (the reference), after
N/2 and after N callbacks. Growth is (RSS at N - RSS at N/2) / RSS at N/2: a leak per callback
shows up there, a one-off warm-up cost does not.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.ingest import gateway, sink
from bench.load import closed_loop, new_run_id, sample_template
from bench.process import free_port, status_kib
from bench.report import emit

WARMUP = 1000


@dataclass(frozen=True)
class Checkpoint:
    callbacks: int  # accepted callbacks in the database at this point
    delivered: int  # deliveries done by then
    rss_mib: float
    peak_rss_mib: float
    seconds: float  # since the load started
    database_bytes: int  # the database's pages as a reader sees them (WAL frames included, free pages not)


@dataclass(frozen=True)
class MemoryResult:
    target: int
    connections: int
    reference: Checkpoint  # after the warm-up
    half: Checkpoint
    full: Checkpoint
    peak_rss_mib: float
    growth: float  # (full - half) / half, RSS
    requests_per_second: float
    #: Database growth per callback between N/2 and N (callback, job, event, delivery, attempt, indexes).
    bytes_per_callback: float
    body_bytes: int  # the size of each callback body posted


def _counts(db: Path) -> tuple[int, int, int]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        callbacks = conn.execute("SELECT count(*) FROM callbacks WHERE outcome = 'accepted'").fetchone()[0]
        delivered = conn.execute("SELECT count(*) FROM deliveries WHERE state = 'delivered'").fetchone()[0]
        pages, free, size = (
            conn.execute(f"PRAGMA {pragma}").fetchone()[0] for pragma in ("page_count", "freelist_count", "page_size")
        )
    return int(callbacks), int(delivered), (int(pages) - int(free)) * int(size)


def _checkpoint(pid: int, db: Path, since: float) -> Checkpoint:
    rss, peak = status_kib(pid, "VmRSS"), status_kib(pid, "VmHWM")
    callbacks, delivered, stored = _counts(db)
    return Checkpoint(callbacks, delivered, rss / 1024, peak / 1024, time.monotonic() - since, stored)


def measure(
    callbacks: int,
    connections: int,
    folder: Path,
    *,
    expected_rate: float = 300.0,
    warmup: int = WARMUP,
    progress: bool = True,
) -> MemoryResult:
    db = folder / "memory.db"
    port = free_port()
    half = callbacks // 2
    # wrk stops at the count; the duration is only a safety bound, generous against the expected rate.
    bound = max(60.0, 4 * half / max(expected_rate, 1.0))
    with sink() as sink_url, gateway(port, db, folder / "memory.log", subscriber_url=sink_url) as server:
        template = sample_template()
        closed_loop(port, template, new_run_id(), connections=connections, seconds=60, limit=warmup)
        started = time.monotonic()
        reference = _checkpoint(server.pid, db, started)
        closed_loop(port, template, new_run_id(), connections=connections, seconds=bound, limit=half)
        middle = _checkpoint(server.pid, db, started)
        if progress:
            print(f"  memory: {middle.callbacks:,} callbacks, RSS {middle.rss_mib:.1f} MiB", flush=True)
        closed_loop(port, template, new_run_id(), connections=connections, seconds=bound, limit=callbacks - half)
        end = _checkpoint(server.pid, db, started)
    result = MemoryResult(
        target=callbacks,
        connections=connections,
        reference=reference,
        half=middle,
        full=end,
        peak_rss_mib=end.peak_rss_mib,
        growth=(end.rss_mib - middle.rss_mib) / middle.rss_mib,
        requests_per_second=(end.callbacks - reference.callbacks) / end.seconds,
        bytes_per_callback=(end.database_bytes - middle.database_bytes) / max(end.callbacks - middle.callbacks, 1),
        body_bytes=template.stat().st_size,
    )
    if progress:
        print(
            f"  memory: {end.callbacks:,} callbacks, RSS {end.rss_mib:.1f} MiB, peak {end.peak_rss_mib:.1f} MiB,"
            f" growth {result.growth:+.1%} ({result.requests_per_second:,.0f} req/s),"
            f" {result.bytes_per_callback / 1000:.1f} KB stored per {result.body_bytes / 1000:.1f} KB callback",
            flush=True,
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--callbacks", type=int, default=200_000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cos-relay-memory-") as folder:
        result = measure(options.callbacks, options.connections, Path(folder))
    emit(result, options.json)


if __name__ == "__main__":
    main()
