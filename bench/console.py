"""The web console on a large database: a job page and the jobs list with 1,000,000 jobs stored.

Run: python -m bench.console [--jobs 1000000] [--requests 300] [--json PATH]

The history is bench/history.py's (one bulk SQL script: per job a callback, its state, one event and one
delivered delivery with its attempt). One ``cos-relay serve`` on it; one client, signed in to the console,
sends sequential requests, alternating each console page with its same-run baseline, the JSON API answer to
the same question from the same store method:

* a job page ``/console/jobs/{id}`` (job, timeline, raw callbacks, deliveries) / ``/api/jobs/{id}``;
* the jobs list ``/console/jobs`` (50 rows) / ``/api/jobs?limit=50``; also filtered by State and Tag, and a
  page deep in the history by cursor;
* the overview ``/console/`` / ``/metrics`` (both read the outbox statistics).

Job ids are drawn at random over the whole history. Figures are medians and p99 over the requests.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.history import generate
from bench.ingest import ADMIN_TOKEN, gateway
from bench.process import free_port
from bench.report import emit


@dataclass(frozen=True)
class Pair:
    name: str
    console_p50_ms: float
    console_p99_ms: float
    baseline: str
    baseline_p50_ms: float
    baseline_p99_ms: float
    ratio_p50: float  # console / baseline


@dataclass(frozen=True)
class ConsoleResult:
    jobs: int
    requests: int
    generate_seconds: float
    file_mib: float
    pairs: list[Pair]


def _p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


def job_ids(jobs: int, count: int) -> list[str]:
    """Random JobIds of the generated history (bench/history.py spells them so)."""
    stride = 2**32 // jobs
    return [f"j{n * stride:08x}{n:024x}" for n in (random.randint(1, jobs) for _ in range(count))]


def measure_pair(http: httpx.Client, name: str, console: list[str], baseline_name: str, baseline: list[str]) -> Pair:
    times: dict[str, list[float]] = {"console": [], "baseline": []}
    for console_path, baseline_path in zip(console, baseline, strict=True):
        for kind, path in (("console", console_path), ("baseline", baseline_path)):
            started = time.perf_counter()
            answer = http.get(path)
            elapsed = time.perf_counter() - started
            if answer.status_code != 200:
                raise RuntimeError(f"{path}: {answer.status_code}")
            times[kind].append(elapsed * 1000)
    console_p50, baseline_p50 = statistics.median(times["console"]), statistics.median(times["baseline"])
    return Pair(
        name,
        console_p50,
        _p99(times["console"]),
        baseline_name,
        baseline_p50,
        _p99(times["baseline"]),
        console_p50 / baseline_p50,
    )


def measure(jobs: int, requests: int, folder: Path) -> ConsoleResult:
    db = folder / "history.db"
    generated = generate(db, jobs, "http://127.0.0.1:9/hook")
    port = free_port()
    with gateway(port, db, folder / "gateway.log"):
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=60) as http:
            signed_in = http.post("/console/login", data={"token": ADMIN_TOKEN}, headers={"origin": base})
            if signed_in.status_code != 303:
                raise RuntimeError(f"console login: {signed_in.status_code}")
            api = {"authorization": f"Bearer {ADMIN_TOKEN}"}
            http.get("/console/jobs")  # warm the connection and the templates
            ids = job_ids(jobs, requests)
            deep = f"{jobs // 2}:"
            pairs = [
                (
                    "job page",
                    [f"/console/jobs/{i}" for i in ids],
                    "GET /api/jobs/{id}",
                    [f"/api/jobs/{i}" for i in ids],
                ),
                (
                    "jobs list",
                    ["/console/jobs"] * requests,
                    "GET /api/jobs?limit=50",
                    ["/api/jobs?limit=50"] * requests,
                ),
                (
                    "jobs list, State and Tag",
                    ["/console/jobs?state=Success&tag=Transcode"] * requests,
                    "the same /api/jobs query",
                    ["/api/jobs?state=Success&tag=Transcode&limit=50"] * requests,
                ),
                (
                    "jobs list, page at the middle of the history",
                    [f"/console/jobs?cursor={deep}"] * requests,
                    "the same /api/jobs page",
                    [f"/api/jobs?cursor={deep}&limit=50"] * requests,
                ),
                ("overview", ["/console/"] * requests, "GET /metrics", ["/metrics"] * requests),
            ]
            http.headers.update(api)  # the API's bearer token; the console ignores it and reads the cookie
            results = [measure_pair(http, *pair) for pair in pairs]
    return ConsoleResult(jobs, requests, generated, db.stat().st_size / 2**20, results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-console-") as folder:
        result = measure(options.jobs, options.requests, Path(folder))
    emit(result, options.json)


if __name__ == "__main__":
    main()
