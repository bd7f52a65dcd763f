"""The benchmark suite still runs: ``python -m bench --smoke`` (tiny sizes, no timing assertions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.live import unmeasured

ROOT = Path(__file__).resolve().parent.parent


def run_bench(*args: str, timeout: float) -> str:
    """``python -m ARGS`` from the project root; its output, once it exited 0."""
    # Without coverage's tracer: it would measure itself (the suite's figures are no figures, but its CPU is
    # the suite's), and what the benchmarks run, the other tests cover.
    done = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env=unmeasured(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def bench_json(folder: Path, module: str, *args: str, timeout: float) -> Any:
    """``python -m MODULE ARGS --json FILE`` (`run_bench`): what it wrote to FILE, in ``folder``."""
    results = folder / f"{module}.json"
    run_bench(module, *args, "--json", str(results), timeout=timeout)
    return json.loads(results.read_text())


#: The suite's sections in three runs of about the same length, so three test workers share them.
SMOKE_PARTS = {
    "parse_and_ingest": "validation,ingest,floor",
    "deliver": "delivery,fairness,e2e",
    "grow": "history,memory",
}


def smoke(folder: Path, sections: str) -> tuple[dict[str, Any], str]:
    """``python -m bench --smoke --only SECTIONS``: its results, once every section ran; and its report."""
    results, report = folder / "smoke.json", folder / "smoke.md"
    run_bench("bench", "--smoke", "--only", sections, "--json", str(results), "--markdown", str(report), timeout=280)
    data = json.loads(results.read_text())
    assert data["smoke"] is True
    assert data["errors"] == {}
    assert set(data["sections"]) == set(sections.split(","))
    assert report.read_text().startswith("# Benchmarks")
    return data, report.read_text()


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("sections", SMOKE_PARTS.values(), ids=SMOKE_PARTS.keys())
def test_smoke_run_writes_results(tmp_path: Path, sections: str) -> None:
    data, _ = smoke(tmp_path, sections)
    ran = data["sections"]
    if "fairness" in ran:
        assert 0 <= ran["fairness"]["share"] <= 1.5
        assert ran["delivery"]["signed_per_second"] > 0
    if "floor" in ran:
        assert [step["server"] for step in ran["floor"]["steps"]][::6] == ["bare", "cos-relay"]
        assert all(step["refused"] == 0 for step in ran["floor"]["steps"])
        assert ran["ingest"]["variants"]


#: Issue 26's sections that the parts above leave out, the backend whose rows they fill, and how many rows.
ISSUE_26_PARTS = {
    "sqlite": ("fanout,disk", "SQLite", 3),
    "postgres": ("floor_pg,delivery_pg,fairness_pg,fanout_pg,disk_pg", "PostgreSQL", 6),
}


def issue_26_table(report: str) -> list[list[str]]:
    """The cells of each row of the report's "Issue 26 targets" table."""
    section = report.split("## Issue 26 targets\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")][2:]  # after the header and its rule
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize(("sections", "backend", "filled"), ISSUE_26_PARTS.values(), ids=ISSUE_26_PARTS.keys())
def test_smoke_run_reports_issue_26_rows_on_each_backend(
    tmp_path: Path, sections: str, backend: str, filled: int
) -> None:
    data, report = smoke(tmp_path, sections)
    rows = issue_26_table(report)
    assert [row[1] for row in rows] == ["SQLite"] * 6 + ["PostgreSQL"] * 6
    measured = [row for row in rows if row[3] != "not measured"]
    assert len(measured) == filled
    assert all(row[1] == backend and row[4] in ("yes", "**no**") for row in measured)
    assert all(row[5].startswith("`python -m bench.") for row in rows)
    issue_26 = [verdict for verdict in data["verdicts"] if verdict["measure"].startswith("issue 26:")]
    assert sum(verdict["met"] is not None for verdict in issue_26) == filled


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_regimes_run_reports_each_load(tmp_path: Path) -> None:
    command = ["--loads", "2", "--seconds", "1", "--connections", "8"]
    loads = bench_json(tmp_path, "bench.regimes", *command, timeout=110)["loads"]
    assert len(loads) == 2
    assert all(load["cpu_us"] > 0 and 0 <= load["delivered_during"] <= 1.5 for load in loads)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_cost_run_reports_cpu_per_callback() -> None:
    output = run_bench("bench.cost", "--rate", "50", "--seconds", "1", "--rounds", "1", timeout=110)
    assert "ms CPU per callback with its delivery" in output


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_retention_benchmark_runs_and_its_file_levels_off(tmp_path: Path) -> None:
    command = ["--jobs", "5000", "--seconds", "1", "--rate", "50", "--window", "4", "--steady", "15"]
    data = bench_json(tmp_path, "bench.retention", *command, timeout=280)
    assert data["prune"]["during_prune"]["accepted"] > 0
    assert data["steady"]["samples"]
    assert data["compaction"]["vacuum_seconds"] > 0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_guessing_benchmark_runs_and_one_address_is_throttled(tmp_path: Path) -> None:
    rates = bench_json(tmp_path, "bench.guessing", "--seconds", "1", "--sources", "2", timeout=280)
    assert {(rate["limit"], rate["check"], rate["sources"]) for rate in rates} == {
        (limit, check, sources)
        for limit in ("0", "10")
        for check in ("login", "bearer", "callback")
        for sources in (1, 2)
    }
    assert all(rate["throttled"] == 0 for rate in rates if rate["limit"] == "0")
    # Each address: its burst of 10, and one more if the run outlasted 6 s on a slow machine.
    assert all(rate["guesses"] <= 11 * rate["sources"] for rate in rates if rate["limit"] == "10")
    assert all(rate["guesses"] > 0 for rate in rates)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_gauges_benchmark_runs_and_counts_every_pending_delivery() -> None:
    output = run_bench(
        "bench.gauges", "--subscribers", "3", "--filtered", "1", "--callbacks", "4", "--reads", "2", timeout=110
    )
    assert "3 subscribers (1 filtered), 4 callbacks: 12 pending" in output


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_attempts_index_benchmark_compares_both_layouts(tmp_path: Path) -> None:
    layouts = bench_json(tmp_path, "bench.attempts_index", "--rows", "0,1000", "--batches", "5", timeout=110)
    assert [(layout["rows_before"], layout["key"]) for layout in layouts] == [
        (0, "event id"),
        (0, "position"),
        (1000, "event id"),
        (1000, "position"),
    ]
    assert all(layout["insert_cpu_us"] > 0 and layout["page_ms"] > 0 for layout in layouts)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_claims_benchmark_claims_the_same_deliveries_at_every_level(tmp_path: Path) -> None:
    command = ["--subscribers", "1,4", "--deliveries", "8", "--repeat", "1"]
    levels = bench_json(tmp_path, "bench.claims", *command, timeout=110)
    assert [(level["subscribers"], level["claims"]) for level in levels] == [(1, 8), (4, 8)]
    assert levels[0]["ratio"] == 1.0
    assert all(level["cpu_us"] > 0 and level["page_ms"] > 0 for level in levels)
