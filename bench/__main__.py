"""The benchmark suite in one command: python -m bench [--smoke] [--only SECTIONS].

Runs validation, ingest, floor, delivery, fairness, e2e, history, then issue 26's rows that those leave out
(fanout: the ack at 1,000 subscribers; disk: bytes stored with 100), then the PostgreSQL sections (floor_pg,
delivery_pg, fairness_pg, fanout_pg, disk_pg: the same rows on a throwaway PostgreSQL cluster, tests/postgres.py,
started by the first of them) and memory last (in that order), prints progress, writes the results as JSON
(bench/results/latest.json) and the Markdown report (docs/benchmarks.md). The full suite fits in about 25
minutes on a 2-core machine (`BUDGET`; it was 10 before issue 26's rows: the acks at 1,000 subscribers keeping
up wait for every callback's 1,000 deliveries, on both backends); ``--smoke`` runs every section at tiny sizes
(about 2 minutes) so CI keeps the code working. A section that fails is reported, the others still run, and
the exit status is 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import delivery, disk, e2e, fairness, fanout, floor, history, ingest, machine, memory, report, validation
from relay.store.records import PostgresUrl, Target
from relay.validate.schema import CallbackSchema
from tests.postgres import Cluster, running

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SECTIONS = (
    "validation",
    "ingest",
    "floor",
    "delivery",
    "fairness",
    "e2e",
    "history",
    "fanout",
    "disk",
    "floor_pg",
    "delivery_pg",
    "fairness_pg",
    "fanout_pg",
    "disk_pg",
    "memory",
)
#: The whole suite must finish within this (seconds); the memory section takes what is left.
BUDGET = 1500.0
#: What the memory section needs besides ingesting: start-up, warm-up, stopping.
MEMORY_OVERHEAD = 20.0


@dataclass(frozen=True)
class Sizes:
    validation_bodies: tuple[str, ...]
    validation_repeat: int
    ingest_config: ingest.Config
    floor_config: ingest.Config
    delivery_events: int
    delivery_events_pg: int
    delivery_concurrency: int
    #: Rounds of the drain, the median reported (one round's ratio is too noisy to judge a target by).
    delivery_rounds: int
    fairness_seconds: float
    fairness_connections: int
    e2e_rate: float
    e2e_seconds: float
    e2e_warmup: float
    history_jobs: int
    history_ingest: ingest.Config
    history_claim_repeat: int
    memory_callbacks: int | None  # None: as many as fit in the budget, up to memory_max
    memory_max: int
    memory_warmup: int
    memory_connections: int
    fanout_subscribers: int  # issue 26's ack rows: this many subscribers match every callback
    fanout_requests: int  # callbacks timed, kept up and again paused
    disk_subscribers: int  # issue 26's bytes row: this many paused subscribers match every callback
    disk_callbacks: int


FULL = Sizes(
    validation_bodies=(
        "/transcode_success.xml",
        "/multiple_jobs_detail.xml",
        "/workflow_finish_success.xml",
        "/nonexist_job_ids_only.xml",
        "json/transcode_task_finish.json",
    ),
    validation_repeat=3,
    ingest_config=ingest.Config(seconds=6, warmup=2, rounds=3, connections=32, fixed_seconds=10),
    floor_config=ingest.Config(seconds=4, warmup=1, rounds=2, connections=32),
    delivery_events=20_000,
    delivery_events_pg=10_000,
    delivery_concurrency=32,
    delivery_rounds=3,
    fairness_seconds=6,
    fairness_connections=32,
    e2e_rate=200,
    e2e_seconds=30,
    e2e_warmup=2,
    history_jobs=1_000_000,
    history_ingest=ingest.Config(seconds=4, warmup=2, rounds=6, connections=32),
    history_claim_repeat=300,
    memory_callbacks=None,
    memory_max=200_000,
    memory_warmup=1000,
    memory_connections=64,
    fanout_subscribers=1000,
    fanout_requests=100,
    disk_subscribers=100,
    disk_callbacks=100,
)
SMOKE = Sizes(
    validation_bodies=("/nonexist_job_ids_only.xml",),
    validation_repeat=1,
    ingest_config=ingest.Config(seconds=1, warmup=0, rounds=1, connections=8, fixed_seconds=1),
    floor_config=ingest.Config(seconds=1, warmup=0, rounds=1, connections=8),
    delivery_events=200,
    delivery_events_pg=200,
    delivery_concurrency=8,
    delivery_rounds=1,
    fairness_seconds=1,
    fairness_connections=8,
    e2e_rate=50,
    e2e_seconds=1,
    e2e_warmup=0,
    history_jobs=2000,
    history_ingest=ingest.Config(seconds=1, warmup=0, rounds=1, connections=8),
    history_claim_repeat=20,
    memory_callbacks=600,
    memory_max=600,
    memory_warmup=100,
    memory_connections=8,
    fanout_subscribers=10,
    fanout_requests=10,
    disk_subscribers=10,
    disk_callbacks=10,
)


class Suite:
    def __init__(
        self, sizes: Sizes, folder: Path, started: float, memory_callbacks: int | None, stack: contextlib.ExitStack
    ) -> None:
        self.sizes = sizes
        self.folder = folder
        self.started = started
        self.memory_callbacks = memory_callbacks
        self.sections: dict[str, Any] = {}
        self._stack = stack
        self._cluster: Cluster | None = None

    def postgres(self) -> Cluster:
        """The PostgreSQL sections' throwaway cluster, started by the first of them, stopped with the suite."""
        if self._cluster is None:
            self._cluster = self._stack.enter_context(running())
        return self._cluster

    def workdir(self, name: str) -> Path:
        path = self.folder / name
        path.mkdir()
        return path

    def validation(self) -> dict[str, Any]:
        schema = CallbackSchema.load()
        paths = sorted(validation.SAMPLES.rglob("*.xml")) + sorted(validation.SAMPLES.rglob("*.json"))
        chosen = [path for path in paths if any(str(path).endswith(name) for name in self.sizes.validation_bodies)]
        rows = [validation.measure(path, schema, self.sizes.validation_repeat) for path in chosen]
        for row in rows:
            print(f"  validation: {row.body}: convert {row.convert.median_us:.0f} µs, {row.speedup:.0f}x", flush=True)
        return {"rows": [asdict(row) for row in rows], "table": validation.table(rows)}

    def ingest(self) -> dict[str, Any]:
        return asdict(ingest.measure(self.sizes.ingest_config, self.workdir("ingest")))

    def floor(self) -> dict[str, Any]:
        return asdict(floor.measure(self.sizes.floor_config, self.workdir("floor")))

    def floor_pg(self) -> dict[str, Any]:
        return asdict(floor.measure(self.sizes.floor_config, self.workdir("floor_pg"), cluster=self.postgres()))

    def delivery(self) -> dict[str, Any]:
        return self._delivery(self.sizes.delivery_events, None)

    def delivery_pg(self) -> dict[str, Any]:
        return self._delivery(self.sizes.delivery_events_pg, self.postgres().new_database)

    def _delivery(self, events: int, new_database: Callable[[], PostgresUrl] | None) -> dict[str, Any]:
        sizes = self.sizes
        result = delivery.measure(events, sizes.delivery_concurrency, new_database, sizes.delivery_rounds)
        print(
            f"  delivery: raw {result.raw_per_second:,.0f}/s, cos-relay {result.relay_per_second:,.0f}/s,"
            f" ratio {result.ratio:.2f} (rounds: {', '.join(f'{ratio:.2f}' for ratio in result.ratios)})",
            flush=True,
        )
        return {**asdict(result), "ratio": result.ratio}

    def fairness(self) -> dict[str, Any]:
        return self._fairness("fairness", None)

    def fairness_pg(self) -> dict[str, Any]:
        return self._fairness("fairness_pg", self.postgres().new_database())

    def _fairness(self, name: str, database: PostgresUrl | None) -> dict[str, Any]:
        sizes = self.sizes
        warmup = 0.0 if sizes is SMOKE else 2.0
        result = fairness.measure(
            sizes.fairness_seconds, sizes.fairness_connections, self.workdir(name), warmup=warmup, database=database
        )
        print(
            f"  fairness: {result.share:.0%} delivered during the load, drained in {result.drain_seconds} s", flush=True
        )
        return asdict(result)

    def fanout(self) -> dict[str, Any]:
        return self._fanout("fanout", None)

    def fanout_pg(self) -> dict[str, Any]:
        return self._fanout("fanout_pg", self.postgres().new_database)

    def _fanout(self, name: str, new_database: Callable[[], Target] | None) -> dict[str, Any]:
        sizes = self.sizes
        levels = (sizes.fanout_subscribers,)
        # No scrapes: no row of issue 26 is theirs, and they double the callbacks posted at 1,000 subscribers.
        result = fanout.measure(levels, sizes.fanout_requests, 0, self.workdir(name), new_database=new_database)
        return asdict(result)

    def disk(self) -> dict[str, Any]:
        return self._disk(self.workdir("disk") / "stored.db")

    def disk_pg(self) -> dict[str, Any]:
        return self._disk(self.postgres().new_database().url)

    def _disk(self, db: Path | str) -> dict[str, Any]:
        sizes = self.sizes
        result = disk.measure(db, disk.samples(sizes.disk_callbacks, 20_000), sizes.disk_subscribers)
        print(
            f"  disk: {result.bytes_per_callback:,.0f} bytes per callback ({result.ratio:.2f}x the body),"
            f" {result.subscribers} paused subscribers",
            flush=True,
        )
        return {**asdict(result), "ratio": result.ratio}

    def e2e(self) -> dict[str, Any]:
        sizes = self.sizes
        return asdict(e2e.measure(sizes.e2e_rate, sizes.e2e_seconds, self.workdir("e2e"), warmup=sizes.e2e_warmup))

    def history(self) -> dict[str, Any]:
        sizes = self.sizes
        folder = self.workdir("history")
        try:
            result = history.measure(
                sizes.history_jobs, sizes.history_ingest, folder, claim_repeat=sizes.history_claim_repeat
            )
        finally:
            shutil.rmtree(folder, ignore_errors=True)  # a few GB
        return asdict(result)

    def memory(self) -> dict[str, Any]:
        sizes = self.sizes
        rate = self._ingest_rate_with_subscriber()
        note = None
        if self.memory_callbacks is not None:
            callbacks = self.memory_callbacks
        elif sizes.memory_callbacks is not None:
            callbacks = sizes.memory_callbacks
        else:
            left = BUDGET - (time.monotonic() - self.started) - MEMORY_OVERHEAD
            fits = int(0.9 * rate * left // 10_000 * 10_000)
            callbacks = max(20_000, min(sizes.memory_max, fits))
            if callbacks < sizes.memory_max:
                note = (
                    f"{callbacks:,} callbacks, not {sizes.memory_max:,}: at the measured {rate:,.0f} req/s (1 worker,"
                    f" 1 subscriber), {sizes.memory_max:,} do not fit in the suite's {BUDGET / 60:.0f} minutes."
                    " Checkpoints at"
                    f" {callbacks // 2:,} and {callbacks:,}; `python -m bench.memory --callbacks {sizes.memory_max}`"
                    " measures the full size."
                )
                print(f"  memory: {note}", flush=True)
        result = memory.measure(
            callbacks,
            sizes.memory_connections,
            self.workdir("memory"),
            expected_rate=rate,
            warmup=sizes.memory_warmup,
        )
        return {**asdict(result), "note": note}

    def _ingest_rate_with_subscriber(self) -> float:
        for row in self.sections.get("ingest", {}).get("variants", []):
            if row["variant"] == "cos-relay, 1 worker, 1 subscriber":
                return float(row["requests_per_second"])
        return 300.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="every section at tiny sizes (~2 min), for CI")
    parser.add_argument("--only", help=f"comma-separated sections out of {','.join(SECTIONS)}")
    parser.add_argument("--json", type=Path, help="results file (default bench/results/latest.json)")
    parser.add_argument("--markdown", type=Path, help="report file (default docs/benchmarks.md)")
    parser.add_argument("--memory-callbacks", type=int, help="callbacks for the memory section (default: what fits)")
    options = parser.parse_args(argv)
    chosen = SECTIONS if not options.only else tuple(name.strip() for name in options.only.split(","))
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    complete = set(chosen) == set(SECTIONS)
    stem = "smoke" if options.smoke else ("latest" if complete else "partial")
    json_path = options.json or RESULTS / f"{stem}.json"
    markdown_path = options.markdown
    if markdown_path is None:
        markdown_path = ROOT / "docs" / "benchmarks.md" if complete and not options.smoke else RESULTS / f"{stem}.md"

    command = "python -m bench" + " ".join(["", *(argv if argv is not None else sys.argv[1:])]).rstrip()
    started, started_at = time.monotonic(), datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    errors: dict[str, str] = {}
    timings: dict[str, float] = {}
    print(f"{command}: {', '.join(chosen)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="cos-relay-bench-") as folder, contextlib.ExitStack() as stack:
        suite = Suite(SMOKE if options.smoke else FULL, Path(folder), started, options.memory_callbacks, stack)
        for name in SECTIONS:
            if name not in chosen:
                continue
            print(f"[{time.monotonic() - started:5.0f} s] {name}", flush=True)
            section_started = time.monotonic()
            run: Callable[[], dict[str, Any]] = getattr(suite, name)
            try:
                suite.sections[name] = run()
            except Exception as failure:
                errors[name] = f"{type(failure).__name__}: {failure}"
                traceback.print_exc()
            timings[name] = time.monotonic() - section_started
    results = {
        "command": command,
        "smoke": options.smoke,
        "started_at": started_at,
        "seconds": time.monotonic() - started,
        "section_seconds": timings,
        "machine": machine.describe(),
        "sections": suite.sections,
        "errors": errors,
    }
    results["verdicts"] = [asdict(verdict) for verdict in report.verdicts(suite.sections)]
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(_clean(results), indent=2) + "\n")
    markdown_path.parent.mkdir(parents=True, exist_ok=True)
    kept = report.standalone(markdown_path.read_text()) if markdown_path.exists() else ""
    markdown_path.write_text(report.markdown(results) + kept)
    print(f"[{results['seconds']:5.0f} s] done: {json_path}, {markdown_path}", flush=True)
    for verdict in report.verdicts(suite.sections):
        mark = {True: "ok  ", False: "MISS", None: "  - "}[verdict.met]
        print(f"  {mark} {verdict.measure}: {verdict.measured} (target {verdict.target})")
    for name, error in errors.items():
        print(f"  FAILED {name}: {error}", file=sys.stderr)
    return 1 if errors else 0


def _clean(value: Any) -> Any:
    """Strict JSON: NaN (a percentile of no samples) becomes null, paths become strings."""
    if isinstance(value, dict):
        return {str(key): _clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
