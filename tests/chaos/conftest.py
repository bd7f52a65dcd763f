"""Chaos fixtures: the ``--chaos-long`` switch and timeouts sized to the run (the subscriber: tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.harness import long_mode

CHAOS = Path(__file__).parent
#: pytest-timeout per chaos test: quick runs are well under a minute each; long runs up to ~12 minutes.
QUICK_TIMEOUT = 240
LONG_TIMEOUT = 1800


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--chaos-long",
        action="store_true",
        default=False,
        help="run the long chaos and fuzz versions (same as RELAY_CHAOS_LONG=1)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    timeout = LONG_TIMEOUT if long_mode(config) else QUICK_TIMEOUT
    for item in items:
        if CHAOS in item.path.parents:
            item.add_marker(pytest.mark.slow)
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(timeout))


@pytest.fixture
def long_run(request: pytest.FixtureRequest) -> bool:
    return long_mode(request.config)
