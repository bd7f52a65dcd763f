"""Retention: what a large prune does to the acknowledgement time, and the file's size under a steady load.

Run: python -m bench.retention [--jobs 200000] [--rate 100] [--seconds 10] [--window 20] [--steady 120] [--json PATH]

1. Ack while pruning. A database with ``--jobs`` old jobs (bench.history's generator: per job a callback,
   dedup key, job and state, event, delivered delivery and attempt, all older than the window), copied twice.
   A B A, each a fixed-rate load of ``--rate`` callbacks a second for ``--seconds`` on ``cos-relay serve``
   (1 worker, one subscriber: the sink): A with retention ``forever`` (the pruner finds nothing), B with a
   30-minute window, so the background pruner removes the whole history while the load runs, A' on the
   same gateway once it has finished. The figure is B's p99 over the mean of A's and A''s.
2. Size over time. A fresh database, one subscriber, retention ``--window`` seconds for both windows and a
   pruner every 2 s; ``--rate`` callbacks a second for ``--steady`` seconds. The file (and its WAL) is
   sampled every 5 s: it grows for one window, then levels off.
3. Compaction, for databases made before incremental auto-vacuum: how fast ``VACUUM INTO`` (what
   ``cos-relay backup`` runs) and an in-place ``VACUUM`` copy the history database.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sqlite3
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.history import generate
from bench.ingest import gateway, sink
from bench.load import LoadResult, fixed_rate, new_run_id, sample_template
from bench.process import free_port
from bench.report import emit

MIB = 1024 * 1024


@dataclass(frozen=True)
class PruneLoad:
    jobs: int
    file_mib: float
    baseline_before: LoadResult
    during_prune: LoadResult
    baseline_after: LoadResult
    pruned_during_load: int  # callbacks removed while B's load ran
    prune_seconds: float  # from the gateway's start to the history gone
    p99_ratio: float  # during / mean(before, after)
    p50_ratio: float


@dataclass(frozen=True)
class Sample:
    second: float
    file_mib: float  # database file and WAL
    callbacks: int  # rows kept


@dataclass(frozen=True)
class Steady:
    rate: float
    window: float
    seconds: float
    samples: list[Sample]
    accepted: int
    level_ratio: float  # largest size in the last third over the largest in the middle third


@dataclass(frozen=True)
class Compaction:
    file_mib: float
    vacuum_into_seconds: float
    vacuum_seconds: float


@dataclass(frozen=True)
class RetentionResult:
    prune: PruneLoad
    steady: Steady
    compaction: Compaction


def _pruned(port: int) -> int:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
    match = re.search(r'^relay_pruned_rows_total\{kind="callbacks"\} (\S+)$', text, re.MULTILINE)
    return int(float(match[1])) if match else 0


def _load(port: int, rate: float, seconds: float) -> LoadResult:
    return fixed_rate(port, sample_template(), new_run_id(), rate=rate, seconds=seconds)


def _size(db: Path) -> float:
    wal = db.with_name(db.name + "-wal")
    return (db.stat().st_size + (wal.stat().st_size if wal.exists() else 0)) / MIB


def _count(db: Path, sql: str) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        return int(conn.execute(sql).fetchone()[0])


def prune_under_load(folder: Path, jobs: int, rate: float, seconds: float, sink_url: str) -> PruneLoad:
    history = folder / "history.db"
    generate(history, jobs, sink_url)
    quiet, pruning = folder / "quiet.db", folder / "pruning.db"
    shutil.copy(history, quiet)
    shutil.copy(history, pruning)
    forever = {"RELAY_RETENTION": "forever", "RELAY_JOB_RETENTION": "forever"}
    with gateway(port := free_port(), quiet, folder / "quiet.log", env=forever):
        _load(port, rate, 2)  # warm-up
        before = _load(port, rate, seconds)
    print(f"  A, no prune: p50 {before.p50_ms:.1f} ms, p99 {before.p99_ms:.1f} ms", flush=True)
    window = {"RELAY_RETENTION": "30m", "RELAY_JOB_RETENTION": "30m", "RELAY_PRUNE_INTERVAL": "1d"}
    started = time.monotonic()
    with gateway(port := free_port(), pruning, folder / "pruning.log", env=window):
        at_start = _pruned(port)
        during = _load(port, rate, seconds)
        pruned = _pruned(port) - at_start
        print(f"  B, pruning: p50 {during.p50_ms:.1f} ms, p99 {during.p99_ms:.1f} ms, {pruned} pruned", flush=True)
        deadline = time.monotonic() + 600
        while _pruned(port) < jobs and time.monotonic() < deadline:
            time.sleep(0.2)
        prune_seconds = time.monotonic() - started
        after = _load(port, rate, seconds)
    print(f"  A', after it: p50 {after.p50_ms:.1f} ms, p99 {after.p99_ms:.1f} ms", flush=True)
    if pruned + at_start >= jobs:
        print("  warning: the prune ended before B's load did; raise --jobs", flush=True)
    return PruneLoad(
        jobs=jobs,
        file_mib=history.stat().st_size / MIB,
        baseline_before=before,
        during_prune=during,
        baseline_after=after,
        pruned_during_load=pruned,
        prune_seconds=prune_seconds,
        p99_ratio=during.p99_ms / statistics.fmean((before.p99_ms, after.p99_ms)),
        p50_ratio=during.p50_ms / statistics.fmean((before.p50_ms, after.p50_ms)),
    )


def steady_size(folder: Path, rate: float, window: float, seconds: float, sink_url: str) -> Steady:
    db = folder / "steady.db"
    env = {"RELAY_RETENTION": f"{window:g}s", "RELAY_JOB_RETENTION": f"{window:g}s", "RELAY_PRUNE_INTERVAL": "2s"}
    samples: list[Sample] = []
    with gateway(port := free_port(), db, folder / "steady.log", subscriber_url=sink_url, env=env):
        results: list[LoadResult] = []
        loader = threading.Thread(target=lambda: results.append(_load(port, rate, seconds)))
        started = time.monotonic()
        loader.start()
        while loader.is_alive():
            samples.append(Sample(time.monotonic() - started, _size(db), _count(db, "SELECT count(*) FROM callbacks")))
            print(f"  {samples[-1].second:5.0f} s  {samples[-1].file_mib:6.2f} MiB  {samples[-1].callbacks} callbacks")
            loader.join(timeout=5)
    third = seconds / 3
    middle = max(s.file_mib for s in samples if third <= s.second < 2 * third)
    last = max(s.file_mib for s in samples if s.second >= 2 * third)
    return Steady(rate, window, seconds, samples, results[0].accepted, last / middle)


def compaction(folder: Path) -> Compaction:
    source = folder / "history.db"
    conn = sqlite3.connect(source, isolation_level=None)
    try:
        started = time.perf_counter()
        conn.execute("VACUUM INTO ?", (str(folder / "compact.db"),))
        vacuum_into = time.perf_counter() - started
        started = time.perf_counter()
        conn.execute("VACUUM")
        vacuum = time.perf_counter() - started
    finally:
        conn.close()
    return Compaction(source.stat().st_size / MIB, vacuum_into, vacuum)


def measure(jobs: int, rate: float, seconds: float, window: float, steady: float, folder: Path) -> RetentionResult:
    with sink() as sink_url:
        print("prune under load", flush=True)
        prune = prune_under_load(folder, jobs, rate, seconds, sink_url)
        print("size over time", flush=True)
        size = steady_size(folder, rate, window, steady, sink_url)
    print("compaction", flush=True)
    return RetentionResult(prune, size, compaction(folder))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=200_000)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--window", type=float, default=20)
    parser.add_argument("--steady", type=float, default=120)
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cos-relay-retention-") as folder:
        result = measure(options.jobs, options.rate, options.seconds, options.window, options.steady, Path(folder))
    emit(result, options.json)


if __name__ == "__main__":
    main()
