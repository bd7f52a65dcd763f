"""What /metrics and the logs give away, and what a flood of refusals costs, on a real ``cos-relay serve``."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from relay.logs import Throttle, clip
from relay.store.records import Target
from tests.conftest import ADMIN_TOKEN, CALLBACK_TOKEN, DATA, callback_url
from tests.live import ProcessServer, ThreadServer, wait_until
from tests.sink import Sink

METRICS_TOKEN = "test-metrics-token"
TOKENS = ("--callback-token", CALLBACK_TOKEN, "--admin-token", ADMIN_TOKEN)
TRANSCODE = (DATA / "samples" / "transcode_success.xml").read_bytes()
FLOOD = 2000


@pytest.fixture
def sink_url() -> Iterator[str]:
    server = ThreadServer(Sink().app()).start()
    yield f"{server.url}/ok"
    server.stop()


def scrape(server: ProcessServer, token: str | None = None) -> str:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(f"{server.url}/metrics", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return response.text


def sample(exposition: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(exposition):
        for found in family.samples:
            if found.name == name and all(found.labels.get(key) == value for key, value in labels.items()):
                return float(found.value)
    return None


def refusal_lines(server: ProcessServer) -> list[str]:
    return [line for line in server.printed.splitlines() if "callback refused" in line]


@pytest.mark.slow
def test_metrics_token_is_required_when_set_and_compared_exactly(database: Target) -> None:
    server = ProcessServer(database, args=(*TOKENS, "--metrics-token", METRICS_TOKEN)).start()
    try:
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": f"Bearer {METRICS_TOKEN}x"},
            {"Authorization": f"Basic {METRICS_TOKEN}"},
            {"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ):
            response = httpx.get(f"{server.url}/metrics", headers=headers, timeout=30)
            assert response.status_code == 401, headers
            assert "relay_" not in response.text
            assert response.headers["www-authenticate"] == "Bearer"
        assert "relay_callbacks_received_total" in scrape(server, METRICS_TOKEN)
    finally:
        server.stop()


@pytest.mark.slow
def test_metrics_stay_open_without_a_metrics_token(database: Target) -> None:
    server = ProcessServer(database, args=TOKENS).start()
    try:
        assert "relay_callbacks_received_total" in scrape(server)
    finally:
        server.stop()


@pytest.mark.slow
def test_removing_a_subscriber_removes_every_series_naming_it_from_a_real_scrape(
    database: Target, sink_url: str
) -> None:
    args = (*TOKENS, "--allow-networks", "127.0.0.0/8")
    server = ProcessServer(database, args=args).start()
    admin = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30)
    try:
        for name in ("leaving", "staying"):
            response = admin.post("/api/subscribers", json={"name": name, "url": sink_url})
            assert response.status_code == 201, response.text
        response = httpx.post(
            f"{server.url}{callback_url()}", content=TRANSCODE, headers={"Content-Type": "application/xml"}, timeout=30
        )
        assert response.status_code == 200, response.text

        def delivered_to_both() -> bool:
            exposition = scrape(server)
            return all(
                sample(exposition, "relay_delivery_attempts_total", subscriber=name, outcome="success") == 1
                for name in ("leaving", "staying")
            )

        wait_until(delivered_to_both, what="both subscribers' delivery series in a scrape")
        assert admin.delete("/api/subscribers/leaving").status_code in (200, 204)
        wait_until(
            lambda: 'subscriber="leaving"' not in scrape(server),
            timeout=15,
            what="every series naming the removed subscriber gone from the scrape",
        )
        exposition = scrape(server)
        assert sample(exposition, "relay_delivery_attempts_total", subscriber="staying", outcome="success") == 1
        assert sample(exposition, "relay_subscriber_state", subscriber="staying", state="enabled") == 1
    finally:
        admin.close()
        server.stop()


@pytest.mark.slow
def test_a_flood_of_bad_tokens_logs_a_bounded_number_of_lines_while_the_counter_counts_every_one(
    database: Target,
) -> None:
    # Every bad token compared and refused 401, not throttled to 429 (tests/test_edge.py has the throttle).
    server = ProcessServer(database, args=TOKENS, env={"RELAY_GUESS_LIMIT": "0"}).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for _ in range(FLOOD):
                assert http.post(callback_url("wrong"), content=b"<x/>").status_code == 401
        wait_until(
            lambda: sample(scrape(server), "relay_callbacks_received_total", outcome="unauthorized") == FLOOD,
            what="every refusal counted",
        )
        wait_until(lambda: len(refusal_lines(server)) >= 1, what="the first refusal logged")
        assert len(refusal_lines(server)) <= 5, f"{len(refusal_lines(server))} lines for {FLOOD} refusals"
    finally:
        server.stop()


@pytest.mark.slow
def test_a_long_content_type_is_logged_and_answered_truncated(database: Target) -> None:
    # Just under the 8 KiB header line cap (a longer one gets 431 before the app sees it).
    server = ProcessServer(database, args=TOKENS).start()
    content_type = "application/" + "x" * 8_000
    try:
        response = httpx.post(
            f"{server.url}{callback_url()}", content=TRANSCODE, headers={"Content-Type": content_type}, timeout=30
        )
        assert response.status_code == 415
        assert len(response.content) < 1000
        assert "...[7812 more characters]" in response.json()["detail"]
        wait_until(lambda: any("415" in line for line in refusal_lines(server)), what="the refusal logged")
        (line,) = [line for line in refusal_lines(server) if "415" in line]
        assert "x" * 100 in line
        assert "x" * 201 not in line
        assert "more characters]" in line
        assert len(line) < 1000
    finally:
        server.stop()


def test_throttle_lets_one_line_per_interval_through_and_counts_the_rest() -> None:
    now = [0.0]
    throttle = Throttle(10.0, clock=lambda: now[0])
    assert throttle.allow("unauthorized") == 0
    assert [throttle.allow("unauthorized") for _ in range(3)] == [None, None, None]
    assert throttle.allow("too_large") == 0  # keys are throttled apart
    now[0] = 10.0
    assert throttle.allow("unauthorized") == 3


def test_clip_marks_what_it_left_out() -> None:
    assert clip("short") == "short"
    assert clip("a" * 250) == "a" * 200 + "...[50 more characters]"
