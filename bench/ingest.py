"""Ingest throughput and ack latency: ``cos-relay serve`` against a bare Starlette endpoint, same run.

Run: python -m bench.ingest [--seconds 6] [--rounds 2] [--connections 32] [--json PATH]

Each variant gets a fresh server process (and the gateway a fresh database) per round; rounds
alternate the order of the variants (A..E, E..A; the last round always runs backwards), so drift on
a shared machine cancels in the ratios. The load generator (wrk, see bench/load.py) is a separate
process on loopback. The gateway runs as shipped: the real CLI, default durability, validation,
dedup and the durable commit, info-level logs (to a file). In the last round, the 1-worker gateway
and then the bare server also take a fixed-rate load at half the gateway's measured capacity: ack
latency with no coordinated omission, the bare endpoint at the same rate alongside.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.load import TOKEN, LoadResult, closed_loop, fixed_rate, new_run_id, sample_template
from bench.process import free_port, running, serving
from bench.report import emit
from relay.deliver.signing import generate_secret
from relay.domain.filters import Filter
from relay.domain.subscribers import DEFAULT_MAX_IN_FLIGHT, SubscriberSpec
from relay.store import store_for
from relay.store.records import Target
from tests.live import db_text

ADMIN_TOKEN = "bench-admin-JCBuI0Nsq1eRbkYjHAhxqx_P2b3-NBgsY9ESF05oPPk"  # noqa: S105 - a throwaway gateway on loopback


@dataclass(frozen=True)
class Variant:
    name: str
    server: str  # bare | relay
    workers: int = 1
    subscriber: bool = False


BARE = Variant("bare, 1 worker", "bare")
RELAY = Variant("cos-relay, 1 worker", "relay")
VARIANTS = (
    BARE,
    RELAY,
    Variant("cos-relay, 1 worker, 1 subscriber", "relay", subscriber=True),
    Variant("bare, 2 workers", "bare", workers=2),
    Variant("cos-relay, 2 workers", "relay", workers=2),
)


@dataclass(frozen=True)
class Config:
    seconds: float = 6.0
    warmup: float = 2.0
    rounds: int = 2
    connections: int = 32
    fixed_seconds: float = 10.0


@dataclass
class Summary:
    variant: str
    requests_per_second: float  # median over rounds
    p50_ms: float  # median over rounds
    p99_ms: float
    max_ms: float
    accepted: int
    duplicate: int
    refused: int
    errors: int
    #: The most CPU other people's work used during one of the runs, in cores.
    other_cores: float | None = None
    runs: list[LoadResult] = field(default_factory=list)


@dataclass
class IngestReport:
    config: Config
    tool: str
    variants: list[Summary]
    #: relay / bare throughput: 1 worker, 2 workers, 1 worker with a subscriber (against bare, 1 worker).
    ratio_1_worker: float
    ratio_2_workers: float
    ratio_1_worker_subscriber: float
    #: "relay" and "bare" (1 worker) at half the gateway's measured capacity.
    fixed_rate: dict[str, LoadResult]


def add_subscriber(db: Target, url: str, name: str = "sink", max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> None:
    """Create the database (migrated) with one subscriber matching every event."""
    with store_for(db) as store:
        spec = SubscriberSpec(
            name=name, url=url, secret=generate_secret(), filter=Filter(), max_in_flight=max_in_flight
        )
        store.add_subscriber(spec, datetime.now(UTC))


@contextlib.contextmanager
def gateway(
    port: int,
    db: Target,
    log: Path,
    *,
    workers: int = 1,
    subscriber_url: str | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """``cos-relay serve`` as an operator runs it: the CLI, default durability and log level."""
    if subscriber_url is not None:
        add_subscriber(db, subscriber_url)
    args = ["-m", "relay", "serve", "--port", str(port), "--db", db_text(db)]
    args += ["--callback-token", TOKEN, "--admin-token", ADMIN_TOKEN, "--workers", str(workers)]
    args += ["--allow-networks", "127.0.0.0/8"]  # subscribers (the sink) are on loopback
    with serving(args, port, log, env=env) as process:
        yield process


@contextlib.contextmanager
def bare(port: int, log: Path, *, workers: int = 1) -> Iterator[subprocess.Popen[bytes]]:
    with serving(["-m", "bench.bare", str(port), str(workers)], port, log) as process:
        yield process


@contextlib.contextmanager
def sink(record: Path | None = None) -> Iterator[str]:
    """The subscriber (bench/sink.py) in its own process; yields its URL."""
    port = free_port()
    args = ["-m", "bench.sink", str(port)] + ([str(record)] if record is not None else [])
    with running(args, port):
        yield f"http://127.0.0.1:{port}/hook"


@contextlib.contextmanager
def server(variant: Variant, folder: Path, sink_url: str, tag: str) -> Iterator[int]:
    port = free_port()
    name = f"{variant.server}-{variant.workers}w{'-sub' if variant.subscriber else ''}-{tag}"
    log = folder / f"{name}.log"
    if variant.server == "bare":
        with bare(port, log, workers=variant.workers):
            yield port
    else:
        db = folder / f"{name}.db"
        if db.exists():
            raise RuntimeError(f"{db} exists: every gateway run gets a fresh database")
        with gateway(port, db, log, workers=variant.workers, subscriber_url=sink_url if variant.subscriber else None):
            yield port


def load(port: int, config: Config) -> LoadResult:
    template = sample_template()
    if config.warmup > 0:
        closed_loop(port, template, new_run_id(), connections=config.connections, seconds=config.warmup)
    return closed_loop(port, template, new_run_id(), connections=config.connections, seconds=config.seconds)


def summarize(name: str, runs: list[LoadResult]) -> Summary:
    return Summary(
        variant=name,
        requests_per_second=statistics.median(run.requests_per_second for run in runs),
        p50_ms=statistics.median(run.p50_ms for run in runs),
        p99_ms=statistics.median(run.p99_ms for run in runs),
        max_ms=max(run.max_ms for run in runs),
        accepted=sum(run.accepted for run in runs),
        duplicate=sum(run.duplicate for run in runs),
        refused=sum(run.refused for run in runs),
        errors=sum(run.errors for run in runs),
        other_cores=max((run.other_cores for run in runs if run.other_cores is not None), default=None),
        runs=runs,
    )


def fixed_load(
    port: int, runs: dict[str, list[LoadResult]], config: Config, variant: Variant, progress: bool
) -> LoadResult:
    """A fixed-rate load at half the gateway's mean measured capacity (1 worker, no subscriber)."""
    rate = statistics.median(run.requests_per_second for run in runs[RELAY.name]) / 2
    result = fixed_rate(port, sample_template(), new_run_id(), rate=rate, seconds=config.fixed_seconds)
    if progress:
        print(
            f"  ingest at a fixed {rate:,.0f} req/s: {variant.name}: p50 {result.p50_ms:.1f} ms,"
            f" p99 {result.p99_ms:.1f} ms",
            flush=True,
        )
    return result


def measure(config: Config, folder: Path, progress: bool = True) -> IngestReport:
    runs: dict[str, list[LoadResult]] = {variant.name: [] for variant in VARIANTS}
    fixed: dict[str, LoadResult] = {}
    with sink() as sink_url:
        for round_number in range(config.rounds):
            last = round_number == config.rounds - 1
            # The last round runs backwards (E..A), the one before forwards, and so on: the 1-worker
            # gateway then comes right before the bare server, which reuses its capacity for the fixed rate.
            backwards = (config.rounds - 1 - round_number) % 2 == 0
            order = tuple(reversed(VARIANTS)) if backwards else VARIANTS
            for variant in order:
                with server(variant, folder, sink_url, f"r{round_number}") as port:
                    result = load(port, config)
                    runs[variant.name].append(result)
                    if progress:
                        print(
                            f"  ingest round {round_number + 1}: {variant.name}: {result.requests_per_second:,.0f}"
                            f" req/s, p99 {result.p99_ms:.1f} ms",
                            flush=True,
                        )
                    if last and variant in (BARE, RELAY) and runs[RELAY.name]:
                        # The fixed-rate runs reuse this warm server when the gateway's capacity is known.
                        fixed[variant.server] = fixed_load(port, runs, config, variant, progress)
        for variant in (BARE, RELAY):
            if variant.server not in fixed:  # not reached with the order above; kept for safety
                with server(variant, folder, sink_url, "fixed") as port:
                    fixed[variant.server] = fixed_load(port, runs, config, variant, progress)
    summaries = {name: summarize(name, results) for name, results in runs.items()}
    rps = {name: summary.requests_per_second for name, summary in summaries.items()}
    return IngestReport(
        config=config,
        tool=runs[RELAY.name][0].tool,
        variants=list(summaries.values()),
        ratio_1_worker=rps[RELAY.name] / rps[BARE.name],
        ratio_2_workers=rps["cos-relay, 2 workers"] / rps["bare, 2 workers"],
        ratio_1_worker_subscriber=rps["cos-relay, 1 worker, 1 subscriber"] / rps[BARE.name],
        fixed_rate=fixed,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=Config.seconds)
    parser.add_argument("--warmup", type=float, default=Config.warmup)
    parser.add_argument("--rounds", type=int, default=Config.rounds)
    parser.add_argument("--connections", type=int, default=Config.connections)
    parser.add_argument("--fixed-seconds", type=float, default=Config.fixed_seconds)
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    config = Config(options.seconds, options.warmup, options.rounds, options.connections, options.fixed_seconds)
    with tempfile.TemporaryDirectory(prefix="cos-relay-ingest-") as folder:
        report = measure(config, Path(folder))
    emit(report, options.json)


if __name__ == "__main__":
    main()
