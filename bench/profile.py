"""Profile the gateway's ingest path under load with py-spy and list where the time goes.

Run: python -m bench.profile [--seconds 15] [--connections 32] [--gil] [--json PATH] [--raw PATH]

Starts ``cos-relay serve`` (1 worker, fresh database, no subscribers), loads it with wrk, records
``py-spy record --pid <gateway> -f raw --threads`` and prints the functions with the most self time,
split into cos-relay's own code (relay/) and the libraries, plus the inclusive time of relay/
functions. Shares are of busy samples: threads blocked waiting (the writer on its queue, idle
thread-pool workers) are left out. ``Runner.run`` as a leaf is uvloop's native code (polling and
socket I/O under the event loop). ``--gil`` keeps only the samples of the thread holding the GIL:
Python work, and C work that keeps the GIL (lxml releases it while libxml2 parses, sqlite3 while
SQLite runs). py-spy is not a project dependency: install it into the venv.
"""

from __future__ import annotations

import argparse
import json
import linecache
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.ingest import gateway
from bench.load import closed_loop, new_run_id, sample_template
from bench.process import free_port

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Entry:
    function: str
    share: float  # of all non-idle samples


@dataclass(frozen=True)
class Profile:
    samples: int
    seconds: float
    requests_per_second: float
    relay_self: list[Entry]
    library_self: list[Entry]
    relay_inclusive: list[Entry]
    by_thread: list[Entry]


def _frame_name(frame: str) -> str:
    """``Writer._commit (relay/store/sqlite/writer.py:139)`` -> ``Writer._commit (relay/store/sqlite/writer.py)``."""
    name, _, where = frame.rpartition(" (")
    file = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({file})" if name else frame


def _is_relay(frame: str) -> bool:
    return "(relay/" in frame


#: Leaf frames that are a thread waiting, not working (py-spy does not always tell them apart).
_WAITS = ("Condition.wait (threading.py", "Event.wait (threading.py", "Thread.join (threading.py")


def is_idle(leaf: str) -> bool:
    """A sample of a thread blocked waiting: a lock or condition, or the writer waiting for its queue."""
    if leaf.startswith(_WAITS):
        return True
    where = leaf.rpartition(" (")[2]
    file, _, line = where.rstrip(")").rpartition(":")
    if file.startswith("relay/") and line.isdigit():
        source = linecache.getline(str(ROOT / file), int(line))
        return "_queue.get()" in source  # the writer thread's blocking get
    return False


def summarize(raw: str, top: int = 15) -> tuple[int, list[Entry], list[Entry], list[Entry], list[Entry]]:
    """Self and inclusive time from py-spy's raw (collapsed-stack) output."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = frames[0].split(": ", 1)[-1] if frames[0].startswith("thread") else "?"
        if len(frames) < 2 or is_idle(frames[-1]):
            continue
        names = [_frame_name(frame) for frame in frames[1:]]
        total += count
        threads[thread] += count
        self_time[names[-1]] += count
        for name in set(names):
            if _is_relay(name):
                inclusive[name] += count

    def entries(counter: Counter[str], keep: int) -> list[Entry]:
        return [Entry(name, count / total) for name, count in counter.most_common(keep)] if total else []

    relay_self = Counter({name: count for name, count in self_time.items() if _is_relay(name)})
    library_self = Counter({name: count for name, count in self_time.items() if not _is_relay(name)})
    return total, entries(relay_self, top), entries(library_self, top), entries(inclusive, top), entries(threads, 8)


def record(seconds: float, connections: int, folder: Path, raw: Path | None = None, gil: bool = False) -> Profile:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    port = free_port()
    output = folder / "ingest.raw"
    with gateway(port, folder / "profile.db", folder / "profile.log") as server:
        template = sample_template()
        closed_loop(port, template, new_run_id(), connections=connections, seconds=2)  # warm up
        command = [py_spy, "record", "--pid", str(server.pid), "-f", "raw", "--threads", "-r", "200"]
        recorder = subprocess.Popen(
            [*command, *(["--gil"] if gil else []), "-d", str(int(seconds)), "-o", str(output)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(0.5)
            load = closed_loop(port, template, new_run_id(), connections=connections, seconds=seconds - 1)
            recorder.wait(timeout=seconds + 30)
        finally:
            if recorder.poll() is None:
                recorder.kill()
                recorder.wait()
    if raw is not None:
        shutil.copyfile(output, raw)
    samples, relay_self, library_self, relay_inclusive, threads = summarize(output.read_text())
    return Profile(samples, seconds, load.requests_per_second, relay_self, library_self, relay_inclusive, threads)


def table(title: str, entries: list[Entry]) -> str:
    lines = [f"| {title} | share of samples |", "| --- | ---: |"]
    lines += [f"| `{entry.function}` | {entry.share:.1%} |" for entry in entries]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--raw", type=Path, help="keep py-spy's raw output (collapsed stacks) here")
    parser.add_argument("--gil", action="store_true", help="only samples of the thread holding the GIL")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cos-relay-profile-") as folder:
        profile = record(options.seconds, options.connections, Path(folder), options.raw, options.gil)
    print(f"{profile.samples} samples over {profile.seconds:.0f} s at {profile.requests_per_second:,.0f} req/s\n")
    print(table("self time, relay/", profile.relay_self) + "\n")
    print(table("self time, libraries and runtime", profile.library_self) + "\n")
    print(table("inclusive time, relay/", profile.relay_inclusive) + "\n")
    print(table("thread", profile.by_thread))
    if options.json:
        options.json.write_text(json.dumps(asdict(profile), indent=2) + "\n")


if __name__ == "__main__":
    main()
