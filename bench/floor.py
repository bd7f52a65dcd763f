"""The ingest ladder: how far any design of this gateway could go, step by step, in one run.

Run: python -m bench.floor [--seconds 5] [--rounds 3] [--connections 32] [--postgres] [--json PATH]

The same wrk load as bench/ingest.py (32 connections, the 4.8 KB transcode callback with a new JobId
per request) against the bare endpoint, each rung of bench/rungs.py (the bare endpoint plus some of the
gateway's own steps: parse, validate, a group-committed insert of the raw body) and ``cos-relay serve``.
Each server is fresh per round and rounds alternate the order, so drift on a shared machine cancels.
Besides req/s, each reports the server's CPU time per request (all its threads), which a busy machine
disturbs far less: the difference between two rungs is what that step costs inside a server under load.

A rung is a floor, not a design: ``parse-commit`` is what an inbox design would cost if validation in
native code were free and jobs, events and deliveries were derived after the acknowledgement.

``--postgres``: a shorter ladder, bare, ``parse-commit`` and ``cos-relay serve`` on a fresh database of a
throwaway PostgreSQL cluster (tests/postgres.py), whose CPU per request is the gateway's plus the PostgreSQL
server's. There is no PostgreSQL rung: the floor it is held against still commits the raw body to SQLite.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.ingest import Config, bare, gateway
from bench.load import LoadResult, closed_loop, new_run_id, sample_template
from bench.postgres_cost import server_cpu
from bench.process import free_port, group_cpu, serving
from bench.report import emit, floor_table
from bench.rungs import RUNGS
from tests.postgres import Cluster, running

SERVERS = ("bare", *RUNGS, "cos-relay")
POSTGRES = "cos-relay on PostgreSQL"
#: The ladder with ``--postgres``: the floor of issue 26's ratio, and the gateway on PostgreSQL.
POSTGRES_SERVERS = ("bare", "parse-commit", POSTGRES)


@dataclass
class Step:
    server: str
    requests_per_second: float  # median over rounds
    cpu_us: float  # the server's CPU per request, median over rounds
    p99_ms: float
    ratio: float  # req/s against bare
    refused: int
    rates: list[float] = field(default_factory=list)


@dataclass
class FloorReport:
    config: Config
    steps: list[Step]


@contextlib.contextmanager
def server(name: str, folder: Path, tag: str, cluster: Cluster | None = None) -> Iterator[tuple[int, int]]:
    """The named server, fresh; yields its port and its process group."""
    port, log, db = free_port(), folder / f"{name}-{tag}.log", folder / f"{name}-{tag}.db"
    if name == "bare":
        context = bare(port, log)
    elif name == "cos-relay":
        context = gateway(port, db, log)
    elif name == POSTGRES:
        assert cluster is not None, "the PostgreSQL gateway needs a cluster"
        context = gateway(port, cluster.new_database(), log)
    else:
        context = serving(["-m", "bench.rungs", name, str(port), str(db)], port, log)
    with context as process:
        yield port, process.pid


def run(port: int, group: int, config: Config, cluster: Cluster | None = None) -> tuple[LoadResult, float]:
    """The load; its result and the CPU µs per request of the server's process group (and ``cluster``'s, if any)."""
    template = sample_template()
    if config.warmup > 0:
        closed_loop(port, template, new_run_id(), connections=config.connections, seconds=config.warmup)

    def cpu() -> float:
        return group_cpu(group) + (server_cpu(cluster) if cluster is not None else 0.0)

    before = cpu()
    result = closed_loop(port, template, new_run_id(), connections=config.connections, seconds=config.seconds)
    return result, (cpu() - before) / max(result.requests, 1) * 1e6


def measure(config: Config, folder: Path, progress: bool = True, cluster: Cluster | None = None) -> FloorReport:
    """The ladder; with a ``cluster``, the short one of ``--postgres`` (`POSTGRES_SERVERS`)."""
    servers = SERVERS if cluster is None else POSTGRES_SERVERS
    runs: dict[str, list[tuple[LoadResult, float]]] = {name: [] for name in servers}
    for number in range(config.rounds):
        for name in servers if number % 2 == 0 else tuple(reversed(servers)):
            with server(name, folder, f"r{number}", cluster) as (port, group):
                result, cpu = run(port, group, config, cluster if name == POSTGRES else None)
            runs[name].append((result, cpu))
            if progress:
                print(
                    f"  floor round {number + 1}: {name}: {result.requests_per_second:,.0f} req/s, {cpu:.0f} µs",
                    flush=True,
                )
    bare_rate = statistics.median(result.requests_per_second for result, _ in runs["bare"])
    steps = []
    for name, results in runs.items():
        rate = statistics.median(result.requests_per_second for result, _ in results)
        steps.append(
            Step(
                server=name,
                requests_per_second=rate,
                cpu_us=statistics.median(cpu for _, cpu in results),
                p99_ms=statistics.median(result.p99_ms for result, _ in results),
                ratio=rate / bare_rate,
                refused=sum(result.refused + result.errors for result, _ in results),
                rates=[result.requests_per_second for result, _ in results],
            )
        )
    return FloorReport(config, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=Config.warmup)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=Config.connections)
    parser.add_argument("--postgres", action="store_true", help="bare, parse-commit and cos-relay on PostgreSQL")
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    config = Config(options.seconds, options.warmup, options.rounds, options.connections)
    with tempfile.TemporaryDirectory(prefix="cos-relay-floor-") as folder:
        if not options.postgres:
            report = measure(config, Path(folder))
        else:
            with running() as cluster:
                report = measure(config, Path(folder), cluster=cluster)
    print("\n".join(floor_table(asdict(report))))
    emit(report, options.json)


if __name__ == "__main__":
    main()
