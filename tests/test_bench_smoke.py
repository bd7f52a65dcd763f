"""The benchmark suite still runs: ``python -m bench --smoke`` (tiny sizes, no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_smoke_run_writes_results(tmp_path: Path) -> None:
    results, report = tmp_path / "smoke.json", tmp_path / "smoke.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--json", str(results), "--markdown", str(report)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads(results.read_text())
    assert data["smoke"] is True
    assert data["errors"] == {}
    assert set(data["sections"]) == {"validation", "ingest", "delivery", "e2e", "history", "memory"}
    assert data["sections"]["ingest"]["variants"]
    assert report.read_text().startswith("# Benchmarks")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_retention_benchmark_runs_and_its_file_levels_off(tmp_path: Path) -> None:
    results = tmp_path / "retention.json"
    command = ["--jobs", "5000", "--seconds", "1", "--rate", "50", "--window", "4", "--steady", "15"]
    done = subprocess.run(
        [sys.executable, "-m", "bench.retention", *command, "--json", str(results)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads(results.read_text())
    assert data["prune"]["during_prune"]["accepted"] > 0
    assert data["steady"]["samples"]
    assert data["compaction"]["vacuum_seconds"] > 0
