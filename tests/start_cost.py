"""What one `cos-relay serve` start costs the test suite: ``python -m tests.start_cost [--coverage] [--starts N]``.

Starts and stops `tests.live.ProcessServer` on a new SQLite file N times and prints the CPU per start of the
gateway process (its imports, the callback schema, opening the database, answering /healthz) and of this
process (polling it until it answers). ``--coverage`` runs the gateway under coverage as `scripts/test`
does (pyproject.toml's [tool.coverage.run]); its data files are removed afterwards. The suite starts a few
hundred gateways; docs: README.md, "What keeps the run short".
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from tests.live import ProcessServer

ROOT = Path(__file__).resolve().parent.parent


def children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=6)
    parser.add_argument("--coverage", action="store_true", help="the gateway under coverage, as in scripts/test")
    options = parser.parse_args()
    env = {"COVERAGE_PROCESS_START": str(ROOT / "pyproject.toml")} if options.coverage else {}
    with tempfile.TemporaryDirectory() as folder:
        gateway, poller, wall = children_cpu(), time.process_time(), time.monotonic()
        for number in range(options.starts):
            # The working directory is the temporary folder: that is where coverage leaves its data files.
            ProcessServer(Path(folder) / f"{number}.db", env=env, cwd=Path(folder)).start().stop()
        gateway, poller = children_cpu() - gateway, time.process_time() - poller
        wall = time.monotonic() - wall
    each = options.starts
    print(
        f"{each} starts{' under coverage' if options.coverage else ''}: gateway {gateway / each:.2f} s CPU,"
        f" poller {poller / each:.2f} s CPU, {wall / each:.2f} s wall each (load average {os.getloadavg()[0]:.1f})"
    )


if __name__ == "__main__":
    main()
