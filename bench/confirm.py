"""What confirming callbacks against COS costs: requests to COS per callback, callbacks' ack latency with a source's
``confirm = true`` against the same gateway with it off (same run), and how long after the last ack every job has
been read back.

Run: python -m bench.confirm [--rate 100] [--seconds 10] [--rounds 2] [--json PATH]

COS is the tests' stand-in (tests/cos/standin.py, every signature checked) in a thread of this process, told to
know every job it is asked about, in the state the load's callbacks carry (Success), so every job is confirmed.
Each gateway is a ``cos-relay serve`` on a fresh SQLite file whose config names the source (created jobs are not
listed: the reconciler finds nothing), taking the transcode sample at ``--rate`` for ``--seconds``; ``--rounds``
alternates the two (off, on, off, on, ...) and reports each one's median, so a busy moment of the machine does not
land on one side only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.ingest import ADMIN_TOKEN
from bench.load import TOKEN, fixed_rate, new_run_id, sample_template
from bench.process import free_port, serving
from bench.reconcile import CREDENTIALS

#: How long every job may take to be read back once the load stops.
DRAIN_LIMIT = 120.0


def standin() -> Any:
    """The stand-in, knowing every job it is asked about as a finished (Success) media job."""
    from starlette.responses import Response

    from tests.cos.standin import CosStandIn, Job, _xml

    class KnowsEvery(CosStandIn):
        def _jobs_by_id(self, family: str | None, ids: list[str]) -> Response:
            from lxml import etree

            response = etree.Element("Response")
            for job_id in ids:
                response.append(Job(job_id, datetime.now(UTC)).detail())
            return _xml(response)

    return KnowsEvery(CREDENTIALS).start()


def waiting(port: int) -> bool:
    """Whether any job waits for COS (the gauge is absent once none does)."""
    return "relay_cos_confirm_waiting{" in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text


def one_gateway(url: str, cos: Any, folder: Path, confirm: bool, rate: float, seconds: float) -> dict[str, float]:
    tag = "on" if confirm else "off"
    config = folder / f"{tag}.toml"
    config.write_text(
        f'[[cos]]\nname = "media"\nbucket = "examplebucket-1250000000"\nregion = "ap-guangzhou"\n'
        f'secret_id = "{CREDENTIALS.secret_id}"\nsecret_key = "{CREDENTIALS.secret_key}"\nendpoint = "{url}"\n'
        f'tags = ["Transcode"]\nlookback = "1h"\nreconcile_every = "1h"\nconfirm = {str(confirm).lower()}\n'
    )
    port = free_port()
    args = ["-m", "relay", "serve", "--port", str(port), "--db", str(folder / f"{tag}.db"), "--config", str(config)]
    args += ["--callback-token", TOKEN, "--admin-token", ADMIN_TOKEN]
    asked = cos.count("/jobs/")
    with serving(args, port, folder / f"{tag}.log"):
        result = fixed_rate(port, sample_template(), new_run_id(), rate=rate, seconds=seconds)
        stopped = time.perf_counter()
        while confirm and waiting(port):
            if time.perf_counter() - stopped > DRAIN_LIMIT:
                raise SystemExit(f"jobs still waiting for COS {DRAIN_LIMIT:.0f} s after the load")
            time.sleep(0.05)
        drained = time.perf_counter() - stopped
    reads = cos.count("/jobs/") - asked
    return {
        "accepted": result.accepted,
        "refused": result.refused,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "reads": reads,
        "drain_seconds": drained if confirm else 0.0,
    }


def median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cos = standin()
    runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for number in range(args.rounds):
                for confirm in (False, True):
                    folder = Path(tmp) / str(number)
                    folder.mkdir(exist_ok=True)
                    runs[confirm].append(one_gateway(cos.url, cos, folder, confirm, args.rate, args.seconds))
    finally:
        cos.stop()
    off, on = median(runs[False]), median(runs[True])
    if on["refused"] or off["refused"]:
        print(f"refused callbacks: {off['refused']:.0f} without confirm, {on['refused']:.0f} with", file=sys.stderr)
    print(
        f"{on['accepted']:.0f} callbacks at {args.rate:g}/s for {args.seconds:g} s, median of {args.rounds} rounds:"
        f" confirm off p50 {off['p50_ms']:.1f} ms p99 {off['p99_ms']:.1f} ms; confirm on p50 {on['p50_ms']:.1f} ms"
        f" p99 {on['p99_ms']:.1f} ms; {on['reads']:.0f} reads of COS"
        f" ({100 * on['reads'] / max(on['accepted'], 1):.1f} per 100 callbacks), every job read back"
        f" {on['drain_seconds']:.2f} s after the last ack"
    )
    if args.json is not None:
        args.json.write_text(json.dumps({"off": runs[False], "on": runs[True]}, indent=2) + "\n")


if __name__ == "__main__":
    main()
