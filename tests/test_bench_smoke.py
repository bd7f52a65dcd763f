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
    assert set(data["sections"]) == {"validation", "ingest", "delivery", "fairness", "e2e", "history", "memory"}
    assert 0 <= data["sections"]["fairness"]["share"] <= 1.5
    assert data["sections"]["ingest"]["variants"]
    assert report.read_text().startswith("# Benchmarks")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_cost_run_reports_cpu_per_callback() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.cost", "--rate", "50", "--seconds", "1", "--rounds", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "ms CPU per callback with its delivery" in done.stdout
