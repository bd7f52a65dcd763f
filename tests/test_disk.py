"""The database stays bounded under hostile traffic, against a real ``cos-relay serve`` on both backends: a
replayed callback keeps a reference to the first copy of its bytes, not a copy of them."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from relay.store.records import Target
from tests.conftest import ADMIN_TOKEN, CALLBACK_TOKEN, callback_url, job_body
from tests.databases import values
from tests.live import ProcessServer

TOKENS = ("--callback-token", CALLBACK_TOKEN, "--admin-token", ADMIN_TOKEN, "--log-level", "warning")
XML = {"Content-Type": "application/xml"}


@pytest.fixture
def server(database: Target) -> Iterator[ProcessServer]:
    running = ProcessServer(database, args=TOKENS).start()
    yield running
    running.stop()


def stored_body_bytes(db: Target) -> int:
    return int(values(db, "SELECT coalesce(sum(length(body)), 0) FROM callbacks")[0][0])


def test_a_replayed_callback_stores_its_body_once_and_each_replay_shows_it(
    server: ProcessServer, database: Target
) -> None:
    body = job_body(1)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.post(callback_url(), content=body, headers=XML).json() == {"status": "accepted"}
        first = stored_body_bytes(database)
        for _ in range(20):
            assert client.post(callback_url(), content=body, headers=XML).json() == {"status": "duplicate"}
        # A duplicate with other bytes (the same job state, spaced differently) is a piece of its own: kept.
        assert client.post(callback_url(), content=body + b"\n", headers=XML).json() == {"status": "duplicate"}
        listed = client.get(
            "/api/callbacks",
            params={"outcome": "duplicate", "limit": 50},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ).json()["items"]
    assert stored_body_bytes(database) < 2.5 * first  # the first copy and the one with other bytes, not 22
    assert len(listed) == 21
    assert all(item["body_prefix"] and body.decode().startswith(item["body_prefix"]) for item in listed)
    assert {item["size"] for item in listed} == {len(body), len(body) + 1}
