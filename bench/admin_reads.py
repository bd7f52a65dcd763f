"""Admin reads of the largest data the gateway accepts: how long /healthz waits while they are answered.

Run: python -m bench.admin_reads [--rounds 5] [--baseline 3] [--json PATH]

One ``cos-relay serve`` (1 worker, fresh SQLite database, default size cap) is loaded through its callback
endpoint with the largest data the bounds allow, every free-text field at its bound in a 4-byte UTF-8
character: `WIDEST_JOBS` jobs, one job with a full history (`MAX_JOB_STATES` states, one callback each),
and one job whose detail fills a whole body (just under the 10 MiB cap). A probe thread sends
``GET /healthz`` back to back the whole time (bench/stall.py's); first alone for ``--baseline`` seconds,
then while each of `READS` is answered ``--rounds`` times, one request at a time. A read's stall is the
slowest /healthz answer that overlapped it; the table also gives the read's size and time.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.ingest import ADMIN_TOKEN, gateway
from bench.load import TOKEN
from bench.process import free_port
from bench.report import emit
from bench.stall import Latency, Prober, latency
from relay.domain.callback import MAX_JOB_STATES
from relay.validate.limits import MAX_ITEMS

#: A character that takes 4 bytes in UTF-8 (U+1D11E): the most bytes a bounded field can hold.
WIDE = "\U0001d11e"
#: The default size cap (RELAY_MAX_BODY), less room for the envelope.
BODY_ROOM = 10 * 2**20 - 4096
#: Jobs with every field at its bound: more than one page of /api/jobs?limit=500 can hold.
WIDEST_JOBS = 500
HISTORY_JOB = "jffff0000000000000000000000000001"
DETAIL_JOB = "jffff0000000000000000000000000002"
#: libxml2 refuses a text node over 10,000,000 bytes (no huge_tree): the big detail is cut in parts.
PART_BYTES = 1_000_000


def _text(chars: int, char: str = WIDE) -> str:
    return char * chars


def widest_job(job_id: str, second: int = 0) -> str:
    """A JobsDetail with every free-text field the gateway keeps at its bound; ``second`` varies EndTime."""
    end = f"2024-11-05T11:{second // 60 % 60:02d}:{second % 60:02d}+0800"
    return (
        f"<JobsDetail><Code>{_text(1024)}</Code><Message>{_text(4096)}</Message><JobId>{job_id}</JobId>"
        f"<Tag>Transcode</Tag><SubTag>{_text(1024)}</SubTag><State>Failed</State>"
        f"<CreationTime>2024-11-05T11:00:00+0800</CreationTime><EndTime>{end}</EndTime>"
        "<QueueId>pe820cf648126910f305549c39b7b7183</QueueId>"
        f"<Input><BucketId>{_text(1024)}</BucketId><Region>{_text(1024)}</Region><Object>{_text(4096)}</Object></Input>"
        f"<Operation><UserData>{_text(4096)}</UserData><TemplateName>{_text(1024)}</TemplateName></Operation>"
        "</JobsDetail>"
    )


def bodies(details: list[str]) -> Iterator[bytes]:
    """``details`` in as few callbacks as the size cap and the item limit allow."""
    batch: list[bytes] = []
    size = 0
    for detail in (text.encode() for text in details):
        if batch and (size + len(detail) > BODY_ROOM or len(batch) == MAX_ITEMS):
            yield b"<Response><EventName>TaskFinish</EventName>" + b"".join(batch) + b"</Response>"
            batch, size = [], 0
        batch.append(detail)
        size += len(detail)
    if batch:
        yield b"<Response><EventName>TaskFinish</EventName>" + b"".join(batch) + b"</Response>"


def largest_detail(job_id: str) -> bytes:
    """One job whose detail is as large as one body can carry: unknown elements full of text."""
    head = widest_job(job_id).removesuffix("</JobsDetail>").encode()
    parts = (BODY_ROOM - len(head) - 1024) // PART_BYTES
    part = b"<Part>" + _text(PART_BYTES // 4).encode() + b"</Part>"
    return (
        b"<Response><JobsDetail>"
        + head[len(b"<JobsDetail>") :]
        + b"<Extra>"
        + part * parts
        + (b"</Extra></JobsDetail></Response>")
    )


def load(http: httpx.Client, *, jobs: int = WIDEST_JOBS, token: str = TOKEN) -> None:
    """Post the largest data (with the callback ``token``): ``jobs`` widest jobs, a full history, the largest
    detail."""
    post = f"/cos/callback?token={token}"
    widest = [widest_job(f"jeeee{number:028x}") for number in range(jobs)]
    history = [body for second in range(MAX_JOB_STATES) for body in bodies([widest_job(HISTORY_JOB, second)])]
    for body in (*bodies(widest), *history, largest_detail(DETAIL_JOB)):
        answer = http.post(post, content=body, headers={"content-type": "application/xml"})
        if answer.status_code != 200:
            raise RuntimeError(f"loading: {answer.status_code} {answer.text[:200]}")


#: The largest admin reads: (name, path), the console's with a session, the API's with the token.
READS = (
    ("jobs list, limit=500", "/api/jobs?limit=500"),
    ("callbacks list, limit=500", "/api/callbacks?limit=500"),
    ("the largest job", f"/api/jobs/{DETAIL_JOB}"),
    ("a full history, limit=500", f"/api/jobs/{HISTORY_JOB}/history?limit=500"),
    ("its callbacks, limit=500", f"/api/jobs/{HISTORY_JOB}/callbacks?limit=500"),
    ("its deliveries, limit=500", f"/api/jobs/{HISTORY_JOB}/deliveries?limit=500"),
    ("console: the largest job", f"/console/jobs/{DETAIL_JOB}"),
    ("console: the full history's job", f"/console/jobs/{HISTORY_JOB}"),
    ("console: jobs list", "/console/jobs"),
    ("console: callbacks", "/console/callbacks"),
)


@contextlib.contextmanager
def admin_client(base: str, token: str = ADMIN_TOKEN) -> Iterator[httpx.Client]:
    """A client with the admin ``token`` (the API) and a console session (the console reads the cookie)."""
    with httpx.Client(base_url=base, timeout=120, headers={"authorization": f"Bearer {token}"}) as http:
        signed_in = http.post("/console/login", data={"token": token}, headers={"origin": base})
        if signed_in.status_code != 303:
            raise RuntimeError(f"console login: {signed_in.status_code}")
        yield http


@dataclass(frozen=True)
class Read:
    name: str
    path: str
    bytes: int
    seconds_p50: float
    worst_stall_ms: float


@dataclass(frozen=True)
class AdminReadsResult:
    load_seconds: float
    baseline: Latency
    reads: list[Read]
    #: Over all reads and rounds.
    worst_stall_ms: float


def measure(folder: Path, *, rounds: int = 5, baseline_seconds: float = 3.0) -> AdminReadsResult:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # A subscriber on a closed port: every job state owes a delivery (failing, retried later), so a job has some.
    db, log = folder / "reads.db", folder / "reads.log"
    with gateway(port, db, log, subscriber_url="http://127.0.0.1:9/hook"), admin_client(base) as http:
        started = time.perf_counter()
        load(http)
        loaded = time.perf_counter() - started
        with Prober(port) as prober:
            time.sleep(baseline_seconds)
            base_latency = latency(prober.probes)
            reads = []
            for name, path in READS:
                times, stalls, size = [], [], 0
                for _ in range(rounds):
                    begun = time.perf_counter()
                    answer = http.get(path)
                    ended = time.perf_counter()
                    if answer.status_code != 200:
                        raise RuntimeError(f"{path}: {answer.status_code}")
                    size = len(answer.content)
                    time.sleep(0.05)  # let the probe in flight at the answer finish
                    overlapping = prober.overlapping(begun, ended)
                    times.append(ended - begun)
                    stalls.append(max((probe.seconds for probe in overlapping), default=float("nan")) * 1000)
                reads.append(Read(name, path, size, statistics.median(times), max(stalls)))
                print(
                    f"  {name}: {size / 2**20:.2f} MiB, {statistics.median(times) * 1000:.0f} ms,"
                    f" worst /healthz {max(stalls):.1f} ms (baseline max {base_latency.max_ms:.1f} ms)",
                    flush=True,
                )
    return AdminReadsResult(loaded, base_latency, reads, max(read.worst_stall_ms for read in reads))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="requests of each read, one after another")
    parser.add_argument("--baseline", type=float, default=3.0, help="seconds of /healthz alone first")
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cos-relay-reads-") as folder:
        result = measure(Path(folder), rounds=options.rounds, baseline_seconds=options.baseline)
    emit(result, options.json)


if __name__ == "__main__":
    main()
