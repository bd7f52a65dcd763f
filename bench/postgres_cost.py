"""One PostgreSQL replica against SQLite, same run: ingest rate, and CPU per callback with PostgreSQL's own.

Run: python -m bench.postgres_cost [--seconds 5] [--rounds 3] [--connections 32] [--rate 300]

CPU: ``cos-relay serve`` over a fresh SQLite file and over a fresh database of a throwaway PostgreSQL cluster
(tests/postgres.py: fsync off, like SQLite's default durability, which survives a process crash but not a power
loss), both running at once; each gets one second of the fixed rate as a warm-up, then they take turns
(A B B A) at a fixed rate well below capacity, ``--seconds`` each; the gateway's CPU (all its threads) plus, on
PostgreSQL, the server's (the postmaster, its live backends and those that exited meanwhile), over its own
turns, divided by the callbacks it accepted. Ingest: then a closed-loop load (bench/load.py) on each, on a fresh
database again, with the same CPU counted over it (how issue 24's baseline was measured: where group commit
has callbacks to group). Rounds alternate the order; every round's figures and ratios are printed.
Issue 24's targets: PostgreSQL's rate at least 0.8x SQLite's, its CPU per callback at most 1.3x.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import statistics
import tempfile
from pathlib import Path

from bench.load import closed_loop, fixed_rate, new_run_id, sample_template
from bench.postgres_replicas import deployed, fresh
from bench.process import SERVERS, group_cpu
from tests.postgres import Cluster, running

VARIANTS = ("sqlite", "pg-1")
#: Seconds of the fixed rate each gateway gets before its CPU is counted; turns each gets in a round.
WARM_UP = 1.0
SLICES = 2
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


def measure_cpu(
    cluster: Cluster, folder: Path, order: tuple[str, ...], seconds: float, rate: float
) -> dict[str, tuple[float, float]]:
    """Each variant's gateway and server CPU milliseconds per callback at ``rate``, over ``seconds`` each.

    Both gateways run at once, each warmed up alike, and take turns in slices (A B B A ...): whatever else the
    machine runs meanwhile weighs on both alike, instead of on whichever ran in a busier minute."""
    template = sample_template()
    with contextlib.ExitStack() as stack:
        ports, groups = {}, {}
        for variant in order:
            before = set(SERVERS)
            ports[variant] = stack.enter_context(deployed(variant, fresh(cluster, folder, variant), folder))
            groups[variant] = SERVERS - before
        for variant in order:
            fixed_rate(ports[variant], template, new_run_id(), rate=rate, seconds=WARM_UP)
        used = {variant: [0.0, 0.0] for variant in order}
        accepted = dict.fromkeys(order, 0)
        for turn in range(SLICES):
            for variant in order if turn % 2 == 0 else tuple(reversed(order)):
                before_cpu = _cpu(cluster, variant, groups[variant])
                paced = fixed_rate(ports[variant], template, new_run_id(), rate=rate, seconds=seconds / SLICES)
                after_cpu = _cpu(cluster, variant, groups[variant])
                for side in (0, 1):
                    used[variant][side] += after_cpu[side] - before_cpu[side]
                accepted[variant] += paced.accepted
    return {
        variant: (
            1000 * used[variant][0] / max(accepted[variant], 1),
            1000 * used[variant][1] / max(accepted[variant], 1),
        )
        for variant in order
    }


@dataclasses.dataclass(frozen=True)
class Saturated:
    """A closed loop's rate, and the CPU milliseconds a callback cost meanwhile (gateway plus server)."""

    requests_per_second: float
    cpu_ms: float


def measure_rate(cluster: Cluster, folder: Path, variant: str, seconds: float, connections: int) -> Saturated:
    """Requests a second under a closed loop, after one second of it as a warm-up, and the CPU they cost.

    The CPU is counted as issue 24's baseline was (docs/benchmarks.md: from /proc over a closed-loop run), where
    group commit has callbacks to group; the fixed rate's figure shows the cost of a batch of one."""
    template = sample_template()
    before = set(SERVERS)
    with deployed(variant, fresh(cluster, folder, variant), folder) as port:
        group = SERVERS - before
        closed_loop(port, template, new_run_id(), connections=connections, seconds=1)
        start = sum(_cpu(cluster, variant, group))
        result = closed_loop(port, template, new_run_id(), connections=connections, seconds=seconds)
        used = sum(_cpu(cluster, variant, group)) - start
        if result.refused or result.errors:
            raise RuntimeError(f"{variant}: {result.refused} refused, {result.errors} errors")
    return Saturated(result.requests_per_second, 1000 * used / max(result.accepted, 1))


def _cpu(cluster: Cluster, variant: str, groups: set[int]) -> tuple[float, float]:
    """CPU seconds so far: the variant's gateway's and PostgreSQL's (0 on SQLite)."""
    gateway = sum(group_cpu(group) for group in groups)
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
    saturated: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    with running() as cluster, tempfile.TemporaryDirectory() as folder:
        for number in range(args.rounds):
            order = VARIANTS if number % 2 == 0 else tuple(reversed(VARIANTS))
            cpu = measure_cpu(cluster, Path(folder), order, args.seconds, args.rate)
            for variant in order:
                loop = measure_rate(cluster, Path(folder), variant, args.seconds, args.connections)
                rates[variant].append(loop.requests_per_second)
                saturated[variant].append(loop.cpu_ms)
            for variant in VARIANTS:
                gateway, server = cpu[variant]
                costs[variant].append(gateway + server)
                print(
                    f"round {number + 1} {variant:7} {rates[variant][-1]:7.0f} req/s"
                    f" ({saturated[variant][-1]:.3f} ms CPU/callback)  at {args.rate:.0f}/s: {gateway + server:.3f}"
                    f" ms CPU/callback (gateway {gateway:.3f}, server {server:.3f})",
                    flush=True,
                )
            print(
                f"round {number + 1} ratios: rate {rates['pg-1'][-1] / rates['sqlite'][-1]:.2f}x,"
                f" CPU closed loop {saturated['pg-1'][-1] / saturated['sqlite'][-1]:.2f}x,"
                f" CPU at {args.rate:.0f}/s {costs['pg-1'][-1] / costs['sqlite'][-1]:.2f}x",
                flush=True,
            )
    rate = {variant: statistics.median(values) for variant, values in rates.items()}
    cost = {variant: statistics.median(values) for variant, values in costs.items()}
    print(
        f"median: SQLite {rate['sqlite']:.0f} req/s, {cost['sqlite']:.3f} ms CPU/callback at {args.rate:.0f}/s;"
        f" PostgreSQL (1 replica) {rate['pg-1']:.0f} req/s, {cost['pg-1']:.3f} ms CPU/callback at {args.rate:.0f}/s"
        " (server included)"
    )
    for name, values in (("rate", rates), ("CPU closed loop", saturated), (f"CPU at {args.rate:.0f}/s", costs)):
        ratios = sorted(pg / sqlite for pg, sqlite in zip(values["pg-1"], values["sqlite"], strict=True))
        print(
            f"{name} ratio by round: {', '.join(f'{ratio:.2f}x' for ratio in ratios)}"
            f" (median {statistics.median(ratios):.2f}x)"
        )


if __name__ == "__main__":
    main()
