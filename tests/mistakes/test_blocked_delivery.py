"""A delivery the address policy blocks is visible on the subscriber (CLI and API), not only in the log."""

from __future__ import annotations

import re

import httpx
import pytest

from relay.store import store_for
from relay.store.records import Target
from tests.conftest import ADMIN_TOKEN, ingest, job_body
from tests.live import ProcessServer, db_text, wait_until
from tests.mistakes.commands import cos_relay


@pytest.mark.slow
def test_a_delivery_blocked_by_the_allow_list_shows_on_subscribers_show_and_the_api(database: Target) -> None:
    db = database
    with store_for(db):
        pass
    # Added while loopback was allowed; the server then runs without that allow-list.
    added = cos_relay(
        "subscribers", "add", "local", "--url", "http://127.0.0.1:9/hook", "--allow-networks", "127.0.0.0/8",
        "--db", db_text(db),
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    server = ProcessServer(db, args=("--admin-token", ADMIN_TOKEN, "--poll-interval", "0.1")).start()
    try:
        ingest(db, job_body(1))

        def shown() -> str:
            return cos_relay("subscribers", "show", "local", "--db", db_text(db)).stdout

        wait_until(lambda: "ssrf_blocked" in shown(), what="the blocked delivery on subscribers show")
        printed = shown()
        assert re.search(r"^last_outcome\s+ssrf_blocked$", printed, re.MULTILINE), printed
        assert re.search(r"^last_error\s+.*127\.0\.0\.1 is loopback.*RELAY_ALLOW_NETWORKS", printed, re.MULTILINE)
        api = httpx.get(
            f"{server.url}/api/subscribers/local", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        ).json()
        assert api["last_outcome"] == "ssrf_blocked"
        assert "RELAY_ALLOW_NETWORKS" in api["last_error"]
    finally:
        server.stop()
