"""Reconciling a COS source of many jobs: one run's time, CPU and requests to COS, and callbacks' ack latency
while a gateway reconciles, against the same load on the same gateway without a source, same run.

Run: python -m bench.reconcile [--jobs 10000] [--rate 100] [--seconds 10] [--json PATH]

COS is the tests' stand-in (tests/cos/standin.py: a real HTTP server checking every signature, 100 jobs a page)
in a process of its own, seeded with ``--jobs`` finished jobs created in the last hour. One run: a
`Reconciler` in this process records them into a fresh SQLite file through the ingest path; CPU is this
process's (the reconciler, the parser, the writer thread), requests are the pages asked for. Ack latency: a
``cos-relay serve`` whose config names the source (it reconciles at its start) takes callbacks at ``--rate``
for ``--seconds`` from its start; the baseline is the same gateway without the ``[[cos]]`` table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.ingest import ADMIN_TOKEN
from bench.load import TOKEN, fixed_rate, new_run_id, sample_template
from bench.process import free_port, running, serving
from relay.cos.client import CosApi
from relay.cos.reconcile import Reconciler, Tally, recorder
from relay.cos.signing import Credentials
from relay.cos.sources import CosSource
from relay.ingest import Ingest, Reader
from relay.store import store_for
from relay.validate.schema import CallbackSchema

CREDENTIALS = Credentials("AKIDbench00000000000000000000000000", "benchSecretKey0000000000000000000")


def standin_main(port: int, jobs: int) -> None:
    """The stand-in, seeded, until killed (run as ``python -m bench.reconcile --standin PORT JOBS``)."""
    from tests.cos.standin import CosStandIn, Job

    server = CosStandIn(CREDENTIALS, port=port).start()
    now = datetime.now(UTC)
    server.add(*(Job(f"j{number:032x}", now - timedelta(seconds=1 + number % 3000)) for number in range(jobs)))
    while True:
        time.sleep(3600)


def source(url: str) -> CosSource:
    return CosSource("media", "examplebucket-1250000000", "ap-guangzhou", CREDENTIALS, url, tags=("Transcode",))


def one_run(url: str, folder: Path) -> dict[str, float]:
    pages: list[int] = []

    async def run() -> Tally:
        with store_for(folder / "reconcile.db") as store:
            ingest = Ingest(store, Reader(CallbackSchema.load()))

            record = recorder(ingest, "media", lambda: datetime.now(UTC))
            api = CosApi(url, CREDENTIALS, clock=time.time, timeout=30)
            try:
                reconciler = Reconciler(source(url), api, record, lambda: datetime.now(UTC))
                return await reconciler.run(progress=lambda tally: pages.append(tally.listed))
            finally:
                await api.aclose()

    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    tally = asyncio.run(run())
    after, took = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - started
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {
        "jobs": tally.listed,
        "recorded": tally.recorded,
        "seconds": took,
        "cpu_seconds": cpu,
        "requests": len(pages),
    }


def ack_latency(url: str | None, folder: Path, rate: float, seconds: float, tag: str) -> dict[str, float]:
    config = folder / f"{tag}.toml"
    config.write_text(
        ""
        if url is None
        else f'[[cos]]\nname = "media"\nbucket = "examplebucket-1250000000"\nregion = "ap-guangzhou"\n'
        f'secret_id = "{CREDENTIALS.secret_id}"\nsecret_key = "{CREDENTIALS.secret_key}"\nendpoint = "{url}"\n'
        'tags = ["Transcode"]\nlookback = "2h"\n'
    )
    port = free_port()
    args = ["-m", "relay", "serve", "--port", str(port), "--db", str(folder / f"{tag}.db"), "--config", str(config)]
    args += ["--callback-token", TOKEN, "--admin-token", ADMIN_TOKEN]
    with serving(args, port, folder / f"{tag}.log"):
        result = fixed_rate(port, sample_template(), new_run_id(), rate=rate, seconds=seconds)
    return {"p50_ms": result.p50_ms, "p99_ms": result.p99_ms, "accepted": result.accepted, "refused": result.refused}


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--standin":
        standin_main(int(sys.argv[2]), int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    port = free_port()
    standin = ["-m", "bench.reconcile", "--standin", str(port), str(args.jobs)]
    with running(standin, port), tempfile.TemporaryDirectory() as tmp:
        url, folder = f"http://127.0.0.1:{port}", Path(tmp)
        run = one_run(url, folder)
        print(
            f"one reconcile: {run['jobs']:.0f} jobs listed, {run['recorded']:.0f} recorded, {run['seconds']:.1f} s,"
            f" {run['cpu_seconds']:.1f} s CPU ({1000 * run['cpu_seconds'] / max(run['jobs'], 1):.2f} ms a job),"
            f" {run['requests']:.0f} requests to COS",
            flush=True,
        )
        baseline = ack_latency(None, folder, args.rate, args.seconds, "baseline")
        during = ack_latency(url, folder, args.rate, args.seconds, "reconciling")
    print(
        f"ack latency at {args.rate:g}/s for {args.seconds:g} s from the start: without a source p50"
        f" {baseline['p50_ms']:.1f} ms p99 {baseline['p99_ms']:.1f} ms; while reconciling {args.jobs} jobs p50"
        f" {during['p50_ms']:.1f} ms p99 {during['p99_ms']:.1f} ms"
        f" (p99 ratio {during['p99_ms'] / max(baseline['p99_ms'], 0.001):.2f}x)"
    )
    if args.json is not None:
        args.json.write_text(json.dumps({"run": run, "baseline": baseline, "during": during}, indent=2) + "\n")


if __name__ == "__main__":
    main()
