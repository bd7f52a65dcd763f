"""bench/console.py keeps working: a tiny history, a few requests of each pair."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.console import measure

pytestmark = pytest.mark.slow


def test_the_console_benchmark_measures_every_page_against_its_baseline(tmp_path: Path) -> None:
    result = measure(jobs=2000, requests=3, folder=tmp_path)
    assert [pair.name for pair in result.pairs] == [
        "job page",
        "jobs list",
        "jobs list, State and Tag",
        "jobs list, page at the middle of the history",
        "overview",
    ]
    assert all(pair.console_p50_ms > 0 and pair.ratio_p50 > 0 for pair in result.pairs)
