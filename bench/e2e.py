"""End-to-end latency: from sending a callback to the subscriber receiving its event, at a fixed load.

Run: python -m bench.e2e [--rate 200] [--seconds 30] [--json PATH]

The fixed-rate generator (bench/load.py) logs each JobId with its scheduled send time; the sink
(bench/sink.py) logs each event's subject (the JobId) with the time its body arrived. Both are
processes on this machine, so they share one clock (time.time()). The gateway is ``cos-relay
serve`` (1 worker, fresh database, one subscriber: the sink); the callbacks' ack latency comes from
the same run.

Baseline, same run: ``bench.bare --forward``, which answers 200 and posts the JobId on to the same
sink from a background task (the same two hops, none of the work). It takes the same load for a
third of the time before and after the gateway (A B A), so drift on a shared machine shows.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.ingest import gateway, sink
from bench.load import LoadResult, fixed_rate, new_run_id, sample_template
from bench.process import free_port, serving
from bench.report import emit

#: After the load, how long to wait for the last events to arrive.
DRAIN_TIMEOUT = 30.0


@dataclass(frozen=True)
class Baseline:
    seconds: float  # before and after the gateway, each
    sent: int
    received: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    ack: list[LoadResult]  # before, after


@dataclass(frozen=True)
class E2EResult:
    rate: float
    seconds: float
    sent: int
    received: int  # distinct events the sink got for the callbacks sent
    duplicates: int  # events the sink got more than once
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    ack: LoadResult  # the callbacks' own 200s, same run
    baseline: Baseline


def _percentile(ordered: list[float], share: float) -> float:
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


def _read_pairs(path: Path) -> list[tuple[str, float]]:
    if not path.exists():
        return []
    pairs = []
    for line in path.read_text().splitlines():
        key, _, at = line.rpartition(" ")
        if key:
            pairs.append((key, float(at)))
    return pairs


def correlate(sent_logs: list[Path], received_log: Path) -> tuple[int, int, int, list[float]]:
    """Sent, received, duplicates and the sorted latencies (seconds) of the first arrival of each event."""
    sent = dict(pair for log in sent_logs for pair in _read_pairs(log))
    first: dict[str, float] = {}
    duplicates = 0
    for subject, at in _read_pairs(received_log):
        if subject not in sent:
            continue
        if subject in first:
            duplicates += 1
            first[subject] = min(first[subject], at)
        else:
            first[subject] = at
    latencies = sorted(first[subject] - sent[subject] for subject in first)
    return len(sent), len(first), duplicates, latencies


def _wait_for(received_log: Path, count: int) -> None:
    """Until the sink has logged ``count`` more events than it had, or DRAIN_TIMEOUT passes."""
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while time.monotonic() < deadline and len(_read_pairs(received_log)) < count:
        time.sleep(0.1)


def _stats(latencies: list[float]) -> dict[str, float]:
    return {
        "p50_ms": _percentile(latencies, 0.50) * 1000,
        "p90_ms": _percentile(latencies, 0.90) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
        "max_ms": (latencies[-1] if latencies else math.nan) * 1000,
    }


def measure(rate: float, seconds: float, folder: Path, *, warmup: float = 2.0, progress: bool = True) -> E2EResult:
    received_log, relay_log = folder / "e2e-received.txt", folder / "e2e-sent.txt"
    baseline_logs = [folder / "e2e-baseline-before.txt", folder / "e2e-baseline-after.txt"]
    template, side = sample_template(), seconds / 3
    baseline_acks: list[LoadResult] = []
    with sink(received_log) as sink_url:
        bare_port, relay_port = free_port(), free_port()
        with (
            serving(["-m", "bench.bare", str(bare_port), "--forward", sink_url], bare_port, folder / "forward.log"),
            gateway(relay_port, folder / "e2e.db", folder / "e2e.log", subscriber_url=sink_url),
        ):

            def load(port: int, seconds: float, sent_log: Path) -> LoadResult:
                """The fixed-rate load, then until its events have all arrived (or DRAIN_TIMEOUT)."""
                before = len(_read_pairs(received_log))
                result = fixed_rate(port, template, new_run_id(), rate=rate, seconds=seconds, sent_log=sent_log)
                _wait_for(received_log, before + result.accepted)
                return result

            if warmup > 0:  # their JobIds are in no sent log that is read, so their events are left out
                load(bare_port, warmup, folder / "warmup-bare.txt")
                load(relay_port, warmup, folder / "warmup-relay.txt")
            baseline_acks.append(load(bare_port, side, baseline_logs[0]))
            ack = load(relay_port, seconds, relay_log)
            baseline_acks.append(load(bare_port, side, baseline_logs[1]))
    sent, received, duplicates, latencies = correlate([relay_log], received_log)
    base_sent, base_received, _, base_latencies = correlate(baseline_logs, received_log)
    result = E2EResult(
        rate=rate,
        seconds=seconds,
        sent=sent,
        received=received,
        duplicates=duplicates,
        **_stats(latencies),
        ack=ack,
        baseline=Baseline(side, base_sent, base_received, **_stats(base_latencies), ack=baseline_acks),
    )
    if progress:
        mean = statistics.fmean(latencies) * 1000 if latencies else math.nan
        print(
            f"  e2e at {rate:,.0f}/s: {received}/{sent} events, p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms,"
            f" max {result.max_ms:.1f} ms (mean {mean:.1f}); baseline p50 {result.baseline.p50_ms:.1f} ms,"
            f" p99 {result.baseline.p99_ms:.1f} ms",
            flush=True,
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cos-relay-e2e-") as folder:
        result = measure(options.rate, options.seconds, Path(folder))
    emit(result, options.json)


if __name__ == "__main__":
    main()
