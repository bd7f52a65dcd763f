"""What the COS tests share: a fresh COS stand-in per test (modules that seed one, or share one, define their own)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cos.standin import CosStandIn
from tests.cos.test_client import CREDENTIALS


@pytest.fixture
def standin() -> Iterator[CosStandIn]:
    server = CosStandIn(CREDENTIALS).start()
    yield server
    server.stop()
