"""Load generators, always in a separate process: wrk (closed loop) and a fixed-rate generator (open loop).

Every request posts ``tests/data/samples/transcode_success.xml`` with a JobId no request used before,
so each one is a new job (validation, dedup and the commit all do their full work).

* ``closed_loop``: wrk (``bench/callback.lua``) with N connections, as fast as the server answers,
  bounded by a duration and optionally a request count. Without wrk on the PATH, the same in Python
  (``python -m bench.load closed``), slower, so its figures are labelled ``tool: python``.
* ``fixed_rate``: ``python -m bench.load fixed``, requests started on a fixed schedule whatever the
  server does; latency runs from each request's *scheduled* time, so a stalled server is not hidden
  by requests that were never sent (no coordinated omission).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from bench.process import CpuMeter

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "data" / "samples" / "transcode_success.xml"
#: The JobId in SAMPLE, replaced in every request.
MARKER = "j7c12d4be4c935a96bfe3fb23d1a491e9"
LUA = Path(__file__).resolve().parent / "callback.lua"
TOKEN = "bench-callback-6bDUfSWHvsmxEY6mNCvkVyHjsJ3a-52RYYFLpmURs1A"  # noqa: S105 - a throwaway gateway on loopback
#: Upper bound for one request (generator side); a slower answer counts as an error.
REQUEST_TIMEOUT = 30.0

T = TypeVar("T")


@dataclass(frozen=True)
class LoadResult:
    tool: str  # wrk | python | fixed-rate
    connections: int
    seconds: float
    requests: int  # answered
    accepted: int
    duplicate: int
    refused: int  # non-200
    errors: int  # connect, read, write, timeouts
    requests_per_second: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    offered_per_second: float | None = None  # fixed rate only
    #: CPU the rest of the machine (other people's work) used meanwhile, in cores (see process.CpuMeter).
    other_cores: float | None = None


def sample_template() -> Path:
    return SAMPLE


def new_run_id() -> str:
    """8 hex digits naming one load run: its JobIds never collide with another run's."""
    return secrets.token_hex(4)


def job_id(run: str, worker: int, number: int) -> str:
    """The same shape as callback.lua's: "j" + run + worker (2 hex) + counter (22 digits), 33 characters."""
    return f"j{run}{worker:02x}{number:022d}"


def callback_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/cos/callback?token={TOKEN}"


def closed_loop(port: int, template: Path, run: str, *, connections: int, seconds: float, limit: int = 0) -> LoadResult:
    """As fast as the server answers, over ``connections`` connections, for ``seconds`` or ``limit`` answers."""
    with CpuMeter() as meter:
        result = _closed_loop(port, template, run, connections=connections, seconds=seconds, limit=limit)
    return dataclasses.replace(result, other_cores=meter.others)


def _closed_loop(port: int, template: Path, run: str, *, connections: int, seconds: float, limit: int) -> LoadResult:
    wrk = shutil.which("wrk")
    if wrk is None:
        args = ["closed", str(port), str(template), run, str(connections), str(seconds), str(limit)]
        return _python_generator(args, timeout=seconds + REQUEST_TIMEOUT + 30)
    duration = max(1, math.ceil(seconds))
    with tempfile.TemporaryDirectory(prefix="cos-relay-wrk-") as folder:
        done = Path(folder) / "done"
        command = [wrk, "-t1", f"-c{connections}", f"-d{duration}s", f"--timeout={int(REQUEST_TIMEOUT)}s"]
        command += ["-s", str(LUA), callback_url(port), "--", str(template), MARKER, run, str(limit), str(done)]
        output = _run_wrk(command, done, duration)
    summary = json.loads(output.strip().splitlines()[-1])
    elapsed = summary["duration_us"] / 1e6
    return LoadResult(
        tool="wrk",
        connections=connections,
        seconds=elapsed,
        requests=summary["answered"],
        accepted=summary["accepted"],
        duplicate=summary["duplicate"],
        refused=summary["refused"],
        errors=summary["socket_errors"],
        requests_per_second=summary["requests"] / elapsed,
        p50_ms=summary["p50_us"] / 1000,
        p90_ms=summary["p90_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
        max_ms=summary["max_us"] / 1000,
    )


def _run_wrk(command: list[str], done: Path, duration: float) -> str:
    """Run wrk; once its thread reached the request limit (``done`` appears), end it early with SIGINT."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + duration + REQUEST_TIMEOUT + 30
        while process.poll() is None and time.monotonic() < deadline:
            if done.exists():
                process.send_signal(signal.SIGINT)
                break
            time.sleep(0.02)
        stdout, stderr = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"wrk failed ({process.returncode}): {stderr.strip()}")
    return stdout


def fixed_rate(
    port: int,
    template: Path,
    run: str,
    *,
    rate: float,
    seconds: float,
    connections: int = 64,
    sent_log: Path | None = None,
) -> LoadResult:
    """``rate`` requests a second for ``seconds``, on schedule; ``sent_log`` gets "job_id scheduled_unix_time" lines."""
    args = ["fixed", str(port), str(template), run, str(connections), str(seconds), str(rate)]
    if sent_log is not None:
        args.append(str(sent_log))
    with CpuMeter() as meter:
        result = _python_generator(args, timeout=seconds + REQUEST_TIMEOUT + 30)
    return dataclasses.replace(result, other_cores=meter.others)


def _python_generator(args: list[str], timeout: float) -> LoadResult:
    with tempfile.NamedTemporaryFile(suffix=".json") as output:
        subprocess.run(
            [sys.executable, "-m", "bench.load", *args, "--out", output.name],
            check=True,
            timeout=timeout,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
        )
        return LoadResult(**json.loads(Path(output.name).read_text()))


# -- the generator process -------------------------------------------------------------------------


def _percentile(ordered: list[float], share: float) -> float:
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


class _Tally:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.accepted = self.duplicate = self.refused = self.errors = 0

    def answered(self, status: int, body: bytes, latency: float) -> None:
        self.latencies.append(latency)
        if status != 200:
            self.refused += 1
        elif b"accepted" in body:
            self.accepted += 1
        else:
            self.duplicate += 1

    def result(self, tool: str, connections: int, seconds: float, offered: float | None) -> LoadResult:
        ordered = sorted(self.latencies)
        return LoadResult(
            tool=tool,
            connections=connections,
            seconds=seconds,
            requests=len(ordered),
            accepted=self.accepted,
            duplicate=self.duplicate,
            refused=self.refused,
            errors=self.errors,
            requests_per_second=len(ordered) / seconds if seconds > 0 else 0.0,
            p50_ms=_percentile(ordered, 0.50) * 1000,
            p90_ms=_percentile(ordered, 0.90) * 1000,
            p99_ms=_percentile(ordered, 0.99) * 1000,
            max_ms=(ordered[-1] if ordered else math.nan) * 1000,
            offered_per_second=offered,
        )


async def _closed(port: int, template: bytes, run: str, connections: int, seconds: float, limit: int) -> LoadResult:
    import aiohttp

    prefix, suffix = template.split(MARKER.encode(), 1)
    url, tally = callback_url(port), _Tally()
    headers = {"Content-Type": "application/xml"}
    deadline = time.perf_counter() + seconds
    counter = 0
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections), timeout=timeout) as session:

        async def connection() -> None:
            nonlocal counter
            while time.perf_counter() < deadline and not (limit and counter >= limit):
                counter += 1
                body = prefix + job_id(run, 0, counter).encode() + suffix
                started = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        answer = await response.read()
                        tally.answered(response.status, answer, time.perf_counter() - started)
                except (aiohttp.ClientError, TimeoutError):
                    tally.errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(connection() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    return tally.result("python", connections, elapsed, None)


async def _fixed(
    port: int, template: bytes, run: str, connections: int, seconds: float, rate: float
) -> tuple[LoadResult, list[tuple[str, float]]]:
    """The result, and each request's JobId with its scheduled time (unix seconds)."""
    import aiohttp

    prefix, suffix = template.split(MARKER.encode(), 1)
    url, tally = callback_url(port), _Tally()
    headers = {"Content-Type": "application/xml"}
    total = max(1, round(rate * seconds))
    schedule: list[tuple[str, float]] = []
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections), timeout=timeout) as session:

        async def one(number: int, scheduled: float) -> None:
            body = prefix + job_id(run, 0, number).encode() + suffix
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    answer = await response.read()
                    tally.answered(response.status, answer, time.perf_counter() - scheduled)
            except (aiohttp.ClientError, TimeoutError):
                tally.errors += 1

        pending: set[asyncio.Task[None]] = set()
        start = time.perf_counter() + 0.05
        wall_offset = time.time() - time.perf_counter()
        for number in range(1, total + 1):
            scheduled = start + (number - 1) / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            schedule.append((job_id(run, 0, number), scheduled + wall_offset))
            task = asyncio.create_task(one(number, scheduled))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.wait(pending, timeout=REQUEST_TIMEOUT + 5)
        elapsed = time.perf_counter() - start
    return tally.result("fixed-rate", connections, elapsed, rate), schedule


def main() -> None:
    parser = argparse.ArgumentParser(description="A load generator process (used by the benchmarks).")
    parser.add_argument("mode", choices=["closed", "fixed"])
    parser.add_argument("port", type=int)
    parser.add_argument("template", type=Path)
    parser.add_argument("run")
    parser.add_argument("connections", type=int)
    parser.add_argument("seconds", type=float)
    parser.add_argument("amount", type=float, help="closed: request limit (0: none); fixed: requests per second")
    parser.add_argument("sent_log", type=Path, nargs="?")
    parser.add_argument("--out", type=Path, required=True)
    options = parser.parse_args()
    template = options.template.read_bytes()
    if options.mode == "closed":
        closed = _closed(options.port, template, options.run, options.connections, options.seconds, int(options.amount))
        result = _run(closed)
    else:
        fixed = _fixed(options.port, template, options.run, options.connections, options.seconds, options.amount)
        result, schedule = _run(fixed)
        if options.sent_log is not None:
            options.sent_log.write_text("".join(f"{job} {at:.6f}\n" for job, at in schedule))
    options.out.write_text(json.dumps(asdict(result)))


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


if __name__ == "__main__":
    main()
