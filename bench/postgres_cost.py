"""One PostgreSQL replica against SQLite, same run: ingest rate, and CPU per callback with PostgreSQL's own.

Run: python -m bench.postgres_cost [--seconds 5] [--rounds 3] [--connections 32] [--rate 300]

Ingest: a closed-loop load (bench/load.py) on ``cos-relay serve`` over a fresh SQLite file and over a fresh
database of a throwaway PostgreSQL cluster (tests/postgres.py: fsync off, like SQLite's default durability,
which survives a process crash but not a power loss). CPU: the same callbacks at a fixed rate well below
capacity; the gateway's CPU (all its threads) plus, on PostgreSQL, the server's (the postmaster, its live
backends and those that exited meanwhile), divided by the callbacks accepted. Rounds alternate the order.
Issue 24's targets: PostgreSQL's rate at least 0.8x SQLite's, its CPU per callback at most 1.3x.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from bench.load import closed_loop, fixed_rate, new_run_id, sample_template
from bench.postgres_replicas import deployed, fresh
from bench.process import SERVERS, group_cpu
from tests.postgres import Cluster, running

VARIANTS = ("sqlite", "pg-1")
_TICKS = os.sysconf("SC_CLK_TCK")


def server_cpu(cluster: Cluster) -> float:
    """CPU seconds used so far by the cluster's processes, exited backends included."""
    postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        pid, parent = int(stat.parent.name), int(fields[1])
        if pid == postmaster:  # its own time and its waited-for (exited) children's
            total += sum(int(value) for value in fields[11:15]) / _TICKS
        elif parent == postmaster:
            total += (int(fields[11]) + int(fields[12])) / _TICKS
    return total


def measure(
    cluster: Cluster, folder: Path, variant: str, seconds: float, connections: int, rate: float
) -> tuple[float, float]:
    """Requests a second under a closed loop, and CPU milliseconds per callback at ``rate``."""
    template = sample_template()
    with deployed(variant, fresh(cluster, folder, variant), folder) as port:
        closed_loop(port, template, new_run_id(), connections=connections, seconds=1)
        result = closed_loop(port, template, new_run_id(), connections=connections, seconds=seconds)
        if result.refused or result.errors:
            raise RuntimeError(f"{variant}: {result.refused} refused, {result.errors} errors")
    with deployed(variant, fresh(cluster, folder, variant), folder) as port:
        before = _cpu(cluster, variant)
        paced = fixed_rate(port, template, new_run_id(), rate=rate, seconds=seconds)
        after = _cpu(cluster, variant)
        used = sum(after) - sum(before)
        print(
            f"  {variant}: gateway {1000 * (after[0] - before[0]) / max(paced.accepted, 1):.3f} ms,"
            f" server {1000 * (after[1] - before[1]) / max(paced.accepted, 1):.3f} ms per callback",
            flush=True,
        )
    return result.requests_per_second, 1000 * used / max(paced.accepted, 1)


def _cpu(cluster: Cluster, variant: str) -> tuple[float, float]:
    """CPU seconds so far: the gateway's (the one server running) and PostgreSQL's (0 on SQLite)."""
    gateway = sum(group_cpu(group) for group in list(SERVERS))
    return gateway, (server_cpu(cluster) if variant != "sqlite" else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=float, default=300)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    costs: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    with running() as cluster, tempfile.TemporaryDirectory() as folder:
        for number in range(args.rounds):
            for variant in VARIANTS if number % 2 == 0 else tuple(reversed(VARIANTS)):
                per_second, cpu_ms = measure(cluster, Path(folder), variant, args.seconds, args.connections, args.rate)
                rates[variant].append(per_second)
                costs[variant].append(cpu_ms)
                print(
                    f"round {number + 1} {variant:7} {per_second:7.0f} req/s  {cpu_ms:.3f} ms CPU/callback", flush=True
                )
    rate = {variant: statistics.median(values) for variant, values in rates.items()}
    cost = {variant: statistics.median(values) for variant, values in costs.items()}
    print(
        f"median: SQLite {rate['sqlite']:.0f} req/s, {cost['sqlite']:.3f} ms CPU/callback;"
        f" PostgreSQL (1 replica) {rate['pg-1']:.0f} req/s, {cost['pg-1']:.3f} ms CPU/callback (server included);"
        f" ratios: rate {rate['pg-1'] / rate['sqlite']:.2f}x, CPU {cost['pg-1'] / cost['sqlite']:.2f}x"
    )


if __name__ == "__main__":
    main()
