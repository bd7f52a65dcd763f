"""Every sender test of tests/deliver/test_client.py again on uvloop, the loop the gateway delivers on in production:
the sender's client is built on the loop's own transports, and uvloop's differ from asyncio's (they are no
asyncio.Transport; a write to a closed one raises)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import uvloop

from tests.deliver.test_client import *  # noqa: F403 - the same tests, collected again under this module's loop


@pytest.fixture  # type: ignore[no-redef]  # this module's loop, in place of the imported one
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return "asyncio", {"loop_factory": uvloop.new_event_loop}


async def test_these_tests_run_on_uvloop() -> None:
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
