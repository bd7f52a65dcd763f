"""CPU per accepted callback through the ingest pipeline in one process (read, record, commit), two trees compared.

Run: python -m bench.store_cpu [--callbacks 2000] [--rounds 4] [--tree /work/main] [--tree .]

Each round runs every tree once, in turn (the order alternating), in a fresh process with ``PYTHONPATH`` set to
the tree: ``--callbacks`` distinct callbacks through `relay.ingest.Ingest` into a fresh SQLite file with
one subscriber (its deliveries are written, nothing sends them), after 100 to warm up. The process's CPU time
(every thread: the store's writer included) over the callbacks is the figure; no HTTP, so what a change to the
store costs shows undiluted. Two bodies:
the transcode sample, and the failed one with a Message of 4,096 characters that compress little.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

#: The child: its figure is its one line of output, CPU seconds per callback.
CHILD = """
import asyncio, random, re, string, sys, tempfile, time
from datetime import UTC, datetime
from pathlib import Path
from relay.deliver.signing import generate_secret
from relay.domain.callback import Received
from relay.domain.filters import Filter
from relay.domain.subscribers import SubscriberSpec
from relay.ingest import Ingest, Reader
from relay.store import store_for
from relay.validate.schema import CallbackSchema

samples, kind, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
if kind == "sample":
    template = (samples / "transcode_success.xml").read_bytes()
else:
    rng = random.Random(7)
    message = "".join(rng.choices(string.ascii_letters + string.digits, k=4096)).encode()
    template = (samples / "transcode_failed.xml").read_bytes()
    template = template.replace(b"source file is invalid, moov atom not found", message)

def body(number):
    return re.sub(rb"([0-9a-f]{24})[0-9a-f]{8}(?![0-9a-f])", lambda m: m.group(1) + b"%08x" % number, template)

async def main():
    with tempfile.TemporaryDirectory() as folder, store_for(Path(folder) / "relay.db") as store:
        now = datetime.now(UTC)
        store.add_subscriber(SubscriberSpec("hook", "http://127.0.0.1:9/h", generate_secret(), Filter()), now)
        ingest = Ingest(store, Reader(CallbackSchema.load()))
        bodies = [body(number) for number in range(count + 100)]
        for number, sent in enumerate(bodies):
            if number == 100:
                started = time.process_time()
            await ingest.ingest(Received(datetime.now(UTC), "127.0.0.1", "application/xml", sent, "xml"))
        print((time.process_time() - started) / count)

asyncio.run(main())
"""


def once(tree: Path, kind: str, callbacks: int) -> float:
    samples = Path(__file__).parent.parent / "tests" / "data" / "samples"
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(samples), kind, str(callbacks)],
        env={**os.environ, "PYTHONPATH": str(tree.resolve())},
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--callbacks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--tree", type=Path, action="append", help="a tree whose relay to run (default: this one)")
    options = parser.parse_args()
    trees = options.tree or [Path(".")]
    for kind, label in (("sample", "sample"), ("large", "4 KiB Message")):
        seconds: dict[Path, list[float]] = {tree: [] for tree in trees}
        for round_ in range(options.rounds):
            for tree in trees if round_ % 2 == 0 else trees[::-1]:
                seconds[tree].append(once(tree, kind, options.callbacks))
        for tree, figures in seconds.items():
            shown = ", ".join(f"{figure * 1e6:.0f}" for figure in figures)
            median = statistics.median(figures) * 1e6
            print(f"{label:>14} {tree!s:<24} median {median:,.0f} us CPU per callback ({shown})")


if __name__ == "__main__":
    main()
