"""CPU per callback: what one callback costs the gateway, its delivery included, in CPU milliseconds.

Run: python -m bench.cost [--rate 300] [--seconds 10] [--rounds 3]

Posts callbacks at a fixed rate (well below capacity, so nothing queues) to ``cos-relay serve`` (1 worker,
one subscriber: bench/sink.py), waits until the subscriber has every event, and divides the gateway
process's CPU time (user + system, all threads) by the callbacks accepted. The bare Starlette endpoint
under the same load is the baseline. CPU time, unlike throughput, hardly moves when other work shares the
machine, so this is the figure to compare two versions of the code with on a busy machine.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.ingest import bare, gateway, sink
from bench.load import fixed_rate, new_run_id, sample_template
from bench.process import free_port, group_cpu

#: How long the subscriber may take to receive the last event after the load stops.
DRAIN_TIMEOUT = 60.0


@dataclass(frozen=True)
class Cost:
    server: str
    accepted: int
    cpu_ms_per_callback: float


def _wait_for_lines(record: Path, count: int) -> None:
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while time.monotonic() < deadline:
        if record.exists() and record.read_bytes().count(b"\n") >= count:
            return
        time.sleep(0.05)
    raise TimeoutError(f"the subscriber received fewer than {count} events in {DRAIN_TIMEOUT:.0f} s")


def measure_gateway(folder: Path, tag: str, rate: float, seconds: float) -> Cost:
    record = folder / f"sink-{tag}.log"
    port = free_port()
    with (
        sink(record) as sink_url,
        gateway(port, folder / f"{tag}.db", folder / f"{tag}.log", subscriber_url=sink_url) as process,
    ):
        before = group_cpu(process.pid)
        result = fixed_rate(port, sample_template(), new_run_id(), rate=rate, seconds=seconds)
        _wait_for_lines(record, result.accepted)
        used = group_cpu(process.pid) - before
    return Cost("cos-relay + 1 subscriber", result.accepted, 1000 * used / max(result.accepted, 1))


def measure_bare(folder: Path, tag: str, rate: float, seconds: float) -> Cost:
    port = free_port()
    with bare(port, folder / f"bare-{tag}.log") as process:
        before = group_cpu(process.pid)
        result = fixed_rate(port, sample_template(), new_run_id(), rate=rate, seconds=seconds)
        used = group_cpu(process.pid) - before
    return Cost("bare Starlette endpoint", result.requests, 1000 * used / max(result.requests, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=300)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    relay: list[float] = []
    baseline: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        for number in range(args.rounds):
            cost = measure_gateway(Path(folder), f"r{number}", args.rate, args.seconds)
            bare_cost = measure_bare(Path(folder), f"r{number}", args.rate, args.seconds)
            relay.append(cost.cpu_ms_per_callback)
            baseline.append(bare_cost.cpu_ms_per_callback)
            print(
                f"round {number + 1}: cos-relay {cost.cpu_ms_per_callback:.3f} ms/callback ({cost.accepted} accepted),"
                f" bare {bare_cost.cpu_ms_per_callback:.3f} ms/request",
                flush=True,
            )
    gateway_ms, bare_ms = statistics.median(relay), statistics.median(baseline)
    # CPU time comes in clock ticks (10 ms): a short, slow run of the bare endpoint can use less than one.
    ratio = f"{gateway_ms / bare_ms:.1f}x" if bare_ms > 0 else "none (the bare endpoint used less than one clock tick)"
    print(
        f"median: cos-relay {gateway_ms:.3f} ms CPU per callback with its delivery;"
        f" bare {bare_ms:.3f} ms per request; ratio {ratio}"
    )


if __name__ == "__main__":
    main()
