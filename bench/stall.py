"""Event-loop stalls: how long /healthz waits while one maximal hostile body is ingested.

Run: python -m bench.stall [--rounds 3] [--baseline 3] [--json PATH]

One ``cos-relay serve`` (1 worker, fresh database, default size cap). A probe thread sends
``GET /healthz`` back to back on one keep-alive connection the whole time. First it runs alone for
``--baseline`` seconds (the probe's own latency, no body in flight); then each shape of bench/hostile.py
is posted ``--rounds`` times, one body at a time. A shape's stall is the slowest /healthz answer that
overlapped the body's request; the table also gives the body's status and time, the server's CPU
seconds and RSS (before, peak, and after the body; the server's figures come from /proc). Finally the
RSS once the server has been idle for a second: whether the memory the bodies took comes back.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.hostile import CAP, SHAPES, Shape
from bench.ingest import gateway
from bench.load import TOKEN, sample_template
from bench.process import free_port, status_kib
from bench.report import emit

PATH = f"/cos/callback?token={TOKEN}"


@dataclass(frozen=True)
class Probe:
    started: float
    seconds: float


class Prober:
    """GET /healthz back to back from a thread; keeps each request's start and duration."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._stop = threading.Event()
        self.probes: list[Probe] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self._port, timeout=30)
        try:
            while not self._stop.is_set():
                started = time.perf_counter()
                connection.request("GET", "/healthz")
                response = connection.getresponse()
                response.read()
                self.probes.append(Probe(started, time.perf_counter() - started))
                time.sleep(0.001)  # a probe every ~1 ms: fine-grained, without hogging this 2-core machine
        finally:
            connection.close()

    def overlapping(self, start: float, end: float) -> list[Probe]:
        return [probe for probe in list(self.probes) if probe.started < end and probe.started + probe.seconds > start]


@dataclass(frozen=True)
class Latency:
    probes: int
    p50_ms: float
    p99_ms: float
    max_ms: float


def latency(probes: list[Probe]) -> Latency:
    times = sorted(probe.seconds * 1000 for probe in probes) or [float("nan")]
    return Latency(len(probes), statistics.median(times), times[min(len(times) - 1, int(0.99 * len(times)))], times[-1])


@dataclass(frozen=True)
class Round:
    status: int
    seconds: float
    stall_ms: float  # the slowest /healthz that overlapped the body's request
    server_cpu_seconds: float
    rss_before_mib: float
    rss_peak_mib: float
    rss_after_mib: float  # right after the answer


@dataclass(frozen=True)
class ShapeResult:
    shape: str
    about: str
    body_bytes: int
    worst_stall_ms: float
    rounds: list[Round]


@dataclass(frozen=True)
class StallResult:
    size_cap: int
    baseline: Latency
    shapes: list[ShapeResult]
    #: Over all shapes and rounds.
    worst_stall_ms: float
    rss_start_mib: float
    rss_end_mib: float  # after the last body
    rss_idle_mib: float  # after a further second with nothing to do


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / 100


def _rss(pid: int) -> float:
    return status_kib(pid, "VmRSS") / 1024


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _post(port: int, body: bytes, content_type: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request("POST", PATH, body=body, headers={"Content-Type": content_type})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def _round(pid: int, port: int, prober: Prober, body: bytes, shape: Shape) -> Round:
    before = _rss(pid)
    _reset_peak(pid)
    cpu = _cpu_seconds(pid)
    started = time.perf_counter()
    status = _post(port, body, shape.content_type)
    ended = time.perf_counter()
    cpu = _cpu_seconds(pid) - cpu
    peak, after = status_kib(pid, "VmHWM") / 1024, _rss(pid)
    time.sleep(0.1)  # let the probe in flight at the answer finish
    stall = max((probe.seconds for probe in prober.overlapping(started, ended)), default=float("nan"))
    return Round(status, ended - started, stall * 1000, cpu, before, peak, after)


def measure(folder: Path, *, rounds: int = 3, baseline_seconds: float = 3.0, cap: int = CAP) -> StallResult:
    port = free_port()
    bodies = {shape.name: shape.build(cap) for shape in SHAPES}
    with gateway(port, folder / "stall.db", folder / "stall.log") as process:
        pid = process.pid
        for _ in range(20):  # warm up: schema, parser, first commits
            _post(port, sample_template().read_bytes(), "application/xml")
        start_rss = _rss(pid)
        with Prober(port) as prober:
            time.sleep(baseline_seconds)
            base = latency(prober.probes)
            results = []
            for shape in SHAPES:
                done = [_round(pid, port, prober, bodies[shape.name], shape) for _ in range(rounds)]
                worst = max(one.stall_ms for one in done)
                results.append(ShapeResult(shape.name, shape.about, len(bodies[shape.name]), worst, done))
                print(
                    f"  {shape.name}: status {done[0].status}, {statistics.median(r.seconds for r in done):.2f} s,"
                    f" worst /healthz {worst:.1f} ms (baseline max {base.max_ms:.1f} ms)",
                    flush=True,
                )
        end_rss = _rss(pid)
        time.sleep(1.0)
        idle_rss = _rss(pid)
    return StallResult(
        cap,
        base,
        results,
        max(result.worst_stall_ms for result in results),
        start_rss,
        end_rss,
        idle_rss,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="bodies of each shape, one after another")
    parser.add_argument("--baseline", type=float, default=3.0, help="seconds of /healthz alone first")
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cos-relay-stall-") as folder:
        result = measure(Path(folder), rounds=options.rounds, baseline_seconds=options.baseline)
    emit(result, options.json)


if __name__ == "__main__":
    main()
