"""Unknown values are refused, listing the valid ones: job states, callback outcomes, subscribers, event types."""

from __future__ import annotations

import httpx
import pytest

from relay.domain.events import EVENT_TYPES
from relay.settings.table import Settings
from relay.store import store_for
from relay.store.records import Target
from tests.conftest import callback_url, ingest, job_body, job_id
from tests.live import db_text
from tests.mistakes.commands import cos_relay

PUBLIC_URL = "https://8.8.8.8/hooks/cos"  # a public literal: no DNS, and nothing is sent to it here


@pytest.fixture
def db(database: Target) -> Target:
    with store_for(database):
        return database


def test_api_jobs_with_an_unknown_state_is_400_listing_the_states(admin: httpx.Client) -> None:
    response = admin.get("/api/jobs", params={"state": "bogus"})
    assert response.status_code == 400
    assert (
        response.json()["detail"]
        == "state must be one of Submitted, Running, Success, Failed, Pause, Cancel (any case)"
    )


def test_api_jobs_state_matches_in_any_case(admin: httpx.Client, settings: Settings) -> None:
    ingest(settings.db_path, job_body(1, "Failed"))
    for spelling in ("Failed", "failed", "FAILED"):
        found = admin.get("/api/jobs", params={"state": spelling}).json()["items"]
        assert [job["job_id"] for job in found] == [job_id(1)]


def test_api_callbacks_with_an_unknown_outcome_is_400_listing_the_outcomes(admin: httpx.Client) -> None:
    response = admin.get("/api/callbacks", params={"outcome": "bogus"})
    assert response.status_code == 400
    assert "outcome must be one of accepted, duplicate, invalid, malformed" in response.json()["detail"]
    assert admin.get("/api/callbacks", params={"outcome": "ACCEPTED"}).status_code == 200


def test_api_callbacks_outcome_rejected_lists_every_refused_callback(admin: httpx.Client, client: httpx.Client) -> None:
    client.post(callback_url(), content=b"<Response><Unclosed>", headers={"Content-Type": "application/xml"})
    client.post(callback_url(), content=job_body(2), headers={"Content-Type": "application/xml"})
    refused = admin.get("/api/callbacks", params={"outcome": "rejected"}).json()["items"]
    assert [callback["outcome"] for callback in refused] == ["malformed"]


def test_api_deliveries_of_an_unknown_subscriber_is_404(admin: httpx.Client) -> None:
    admin.post("/api/subscribers", json={"name": "real", "url": PUBLIC_URL}).raise_for_status()
    response = admin.get("/api/deliveries", params={"subscriber": "nope"})
    assert response.status_code == 404
    assert response.json()["detail"] == "no subscriber is named 'nope' (known: real)"


def test_api_refuses_a_type_pattern_matching_no_event_type(admin: httpx.Client) -> None:
    response = admin.post("/api/subscribers", json={"name": "t", "url": PUBLIC_URL, "types": ["cos.jbo.*"]})
    assert response.status_code == 400
    assert response.json()["detail"] == (
        f"event type 'cos.jbo.*' matches no event type; known types: {', '.join(EVENT_TYPES)}"
    )
    assert admin.get("/api/subscribers/t").status_code == 404
    patch = admin.post("/api/subscribers", json={"name": "t", "url": PUBLIC_URL, "types": ["cos.job.*"]})
    assert patch.status_code == 201
    changed = admin.patch("/api/subscribers/t", json={"types": ["cos.workflw.*"]})
    assert changed.status_code == 400
    assert "matches no event type" in changed.json()["detail"]


@pytest.mark.slow
def test_cli_refuses_a_type_pattern_matching_no_event_type(db: Target) -> None:
    result = cos_relay("subscribers", "add", "t", "--url", PUBLIC_URL, "--type", "cos.jbo.*", "--db", db_text(db))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: event type 'cos.jbo.*' matches no event type; known types: {', '.join(EVENT_TYPES)}"
    ]
    assert "no subscribers" in cos_relay("subscribers", "list", "--db", db_text(db)).stdout


@pytest.mark.slow
def test_cli_deliveries_of_an_unknown_subscriber_exits_1_naming_the_known_ones(db: Target) -> None:
    result = cos_relay("deliveries", "list", "--subscriber", "nope", "--db", db_text(db))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["Error: no subscriber is named 'nope' (known: none yet)"]


@pytest.mark.slow
def test_cli_jobs_with_an_unknown_state_exits_1_listing_the_states(db: Target) -> None:
    result = cos_relay("jobs", "--state", "bogus", "--db", db_text(db))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: --state 'bogus' is not a job state; use one of Submitted, Running, Success, Failed, Pause, Cancel"
    ]


def test_cli_jobs_state_matches_in_any_case(db: Target) -> None:
    ingest(db, job_body(3, "Failed"))
    result = cos_relay("jobs", "--state", "failed", "--db", db_text(db))
    assert result.returncode == 0, result.stderr
    assert job_id(3) in result.stdout


@pytest.mark.slow
def test_cli_deliveries_with_an_unknown_state_exits_1_listing_the_states(db: Target) -> None:
    result = cos_relay("deliveries", "list", "--state", "bogus", "--db", db_text(db))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: --state 'bogus' is not a delivery state;"
        " use one of pending, in_flight, delivered, dead, cancelled, dropped, confirming, unconfirmed"
    ]


@pytest.mark.slow
def test_cli_deliveries_state_matches_in_any_case(db: Target) -> None:
    assert cos_relay("subscribers", "add", "hook", "--url", PUBLIC_URL, "--db", db_text(db)).returncode == 0
    ingest(db, job_body(4))  # no server runs: its delivery stays pending
    result = cos_relay("deliveries", "list", "--state", "PENDING", "--db", db_text(db))
    assert result.returncode == 0, result.stderr
    assert "pending" in result.stdout
    assert "hook" in result.stdout


def test_api_deliveries_with_an_unknown_state_is_400_and_matches_in_any_case(admin: httpx.Client) -> None:
    response = admin.get("/api/deliveries", params={"state": "bogus"})
    assert response.status_code == 400
    assert response.json()["detail"] == (
        "state must be one of pending, in_flight, delivered, dead, cancelled, dropped, confirming, unconfirmed"
        " (any case)"
    )
    assert admin.get("/api/deliveries", params={"state": "Dead"}).status_code == 200
