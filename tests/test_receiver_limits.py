"""Each receiver's own limits, end to end through real uvicorn servers: the CloudEvents handshake (granted,
refused, limited, asked again when it expires), binary content mode, and a subscriber's rate."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from standardwebhooks.webhooks import Webhook

from relay.api.openapi import document
from relay.app.factory import create_app
from relay.settings.table import Settings
from tests.conftest import ADMIN_TOKEN, callback_schema, callback_url, job_body
from tests.live import ThreadServer, wait_until
from tests.sink import Received, Sink

pytestmark = pytest.mark.both_backends


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.replace(
        allow_networks="127.0.0.0/8", retry_schedule=(0.2, 0.2, 0.2, 0.2, 0.2), poll_interval=0.1, gateway_id="relay-a"
    )


def subscribe(api: httpx.Client, name: str, url: str, **options: Any) -> dict[str, Any]:
    response = api.post("/api/subscribers", json={"name": name, "url": url, **options})
    assert response.status_code == 201, response.text
    return dict(response.json())


def post(api: httpx.Client, *numbers: int) -> None:
    for number in numbers:
        assert api.post(callback_url(), content=job_body(number)).status_code == 200


def options_to(sink: Sink, path: str) -> list[Received]:
    return [request for request in sink.to(path) if request.method == "OPTIONS"]


def posts_to(sink: Sink, path: str) -> list[Received]:
    return [request for request in sink.to(path) if request.method == "POST"]


def test_a_granted_handshake_is_asked_once_and_every_delivery_then_carries_the_origin(
    admin: httpx.Client, sink: Sink
) -> None:
    subscribe(admin, "asks", f"{sink.url}/grant/a", handshake=True)
    post(admin, 1, 2, 3)
    wait_until(lambda: len(posts_to(sink, "/grant/a")) == 3, what="three deliveries")
    [asked] = options_to(sink, "/grant/a")
    assert asked.headers["webhook-request-origin"] == "relay-a"
    assert "webhook-request-rate" not in asked.headers  # no rate of its own: none asked for
    assert asked.at < min(request.at for request in posts_to(sink, "/grant/a"))
    assert {request.headers["webhook-request-origin"] for request in posts_to(sink, "/grant/a")} == {"relay-a"}


def test_a_refused_handshake_sends_nothing_and_retries_until_the_receiver_grants(
    admin: httpx.Client, sink: Sink
) -> None:
    subscribe(admin, "asks", f"{sink.url}/refuse/a", handshake=True)
    post(admin, 1)
    wait_until(lambda: len(options_to(sink, "/refuse/a")) >= 2, what="asked again at the retry")
    assert posts_to(sink, "/refuse/a") == []
    shown = admin.get("/api/subscribers/asks").json()
    assert shown["last_outcome"] == "handshake_refused"
    assert "without WebHook-Allowed-Origin" in shown["last_error"]
    sink.granting = True
    wait_until(lambda: len(posts_to(sink, "/refuse/a")) == 1, what="delivered once granted")


def conforms(response: httpx.Response, template: str) -> dict[str, Any]:
    """The answer's JSON, checked against the OpenAPI document's schema for ``GET template``."""
    # Imported here, not at the top: importing schemathesis costs each test worker a second at collection.
    import schemathesis

    assert response.status_code == 200, response.text
    schemathesis.openapi.from_dict(document())[template]["GET"].validate_response(response)
    return dict(response.json())


def verdict(api: httpx.Client, name: str) -> Any:
    """The subscriber's handshake verdict, as its own answer and the listing show it (the same)."""
    shown = conforms(api.get(f"/api/subscribers/{name}"), "/api/subscribers/{name}")
    (listed,) = [
        item for item in conforms(api.get("/api/subscribers"), "/api/subscribers")["items"] if item["name"] == name
    ]
    if shown["handshake_verdict"] is not None:  # a refusal is asked again at every retry: its time moves on
        assert {**listed["handshake_verdict"], "checked_at": None} == {**shown["handshake_verdict"], "checked_at": None}
    else:
        assert listed["handshake_verdict"] is None
    return shown["handshake_verdict"]


def test_a_granted_handshake_shows_in_the_subscriber_with_the_rate_allowed_and_until_when(
    admin: httpx.Client, sink: Sink
) -> None:
    created = subscribe(admin, "asks", f"{sink.url}/grant-rate/120/v", handshake=True)
    pending = {"state": "pending", "checked_at": None, "expires_at": None, "allowed_rate": None, "detail": None}
    assert created["handshake_verdict"] == pending  # nothing asked yet
    assert verdict(admin, "asks") == pending
    post(admin, 1)
    wait_until(lambda: len(posts_to(sink, "/grant-rate/120/v")) == 1, what="delivered")
    granted = verdict(admin, "asks")
    assert granted["state"] == "granted"
    assert granted["allowed_rate"] == "120/m"
    assert granted["detail"] == "granted to *, at most 120/m"
    checked, expires = datetime.fromisoformat(granted["checked_at"]), datetime.fromisoformat(granted["expires_at"])
    assert (expires - checked).total_seconds() == 86400  # RELAY_HANDSHAKE_EVERY's default
    assert sink.url.partition("//")[2] not in str(granted)  # the verdict never repeats the URL
    # A new URL has not been asked: pending again until the next delivery asks it.
    assert admin.patch("/api/subscribers/asks", json={"url": f"{sink.url}/grant/w"}).status_code == 200
    assert verdict(admin, "asks") == pending


def test_a_refused_handshake_shows_in_the_subscriber_with_the_receivers_answer(admin: httpx.Client, sink: Sink) -> None:
    subscribe(admin, "asks", f"{sink.url}/refuse/v", handshake=True)
    post(admin, 1)
    wait_until(lambda: admin.get("/api/subscribers/asks").json()["last_outcome"] == "handshake_refused", what="refused")
    refused = verdict(admin, "asks")
    assert refused["state"] == "refused"
    assert refused["detail"] == "refused: answered 200 without WebHook-Allowed-Origin"
    assert refused["expires_at"] is None  # asked again at the next attempt
    assert refused["allowed_rate"] is None
    assert datetime.fromisoformat(refused["checked_at"]) <= datetime.now(UTC)


def test_a_subscriber_without_handshake_shows_a_null_verdict(admin: httpx.Client, sink: Sink) -> None:
    created = subscribe(admin, "plain", f"{sink.url}/grant/plain")
    assert created["handshake_verdict"] is None
    post(admin, 1)
    wait_until(lambda: len(posts_to(sink, "/grant/plain")) == 1, what="delivered")
    assert verdict(admin, "plain") is None


def test_a_subscriber_without_handshake_is_never_asked(admin: httpx.Client, sink: Sink) -> None:
    subscribe(admin, "plain", f"{sink.url}/grant/plain")
    post(admin, 1)
    wait_until(lambda: len(posts_to(sink, "/grant/plain")) == 1, what="delivered")
    assert options_to(sink, "/grant/plain") == []
    assert "webhook-request-origin" not in posts_to(sink, "/grant/plain")[0].headers


def test_the_rate_a_receiver_allows_paces_its_deliveries(admin: httpx.Client, sink: Sink) -> None:
    # 120 a minute: one start every half second, whatever the subscriber's own (faster) rate asks for.
    subscribe(admin, "limited", f"{sink.url}/grant-rate/120/a", handshake=True, rate="100/s")
    post(admin, 1, 2, 3, 4)
    wait_until(lambda: len(posts_to(sink, "/grant-rate/120/a")) == 4, what="four deliveries")
    assert options_to(sink, "/grant-rate/120/a")[0].headers["webhook-request-rate"] == "6000"
    starts = sorted(started(admin, "limited"))
    # Paced at the claim, so a send may start up to a lane's scheduling delay late: three half-second intervals
    # less one of slack, a bound slowness cannot break. At the subscriber's own 100/s the four start within ms.
    assert (starts[-1] - starts[0]).total_seconds() >= 1.0, starts


def started(api: httpx.Client, subscriber: str) -> list[datetime]:
    found = []
    for delivery in api.get("/api/deliveries", params={"subscriber": subscriber}).json()["items"]:
        detail = api.get(f"/api/subscribers/{subscriber}/deliveries/{delivery['event_id']}").json()  # row or not
        found += [datetime.fromisoformat(attempt["started_at"]) for attempt in detail["attempts_log"]]
    return found


@pytest.fixture
def expiring(settings: Settings) -> Iterator[httpx.Client]:
    """A gateway whose handshake grants hold for a second."""
    server = ThreadServer(create_app(settings.replace(handshake_every=1.0), schema=callback_schema())).start()
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30) as api:
        yield api
    server.stop()


def test_a_grant_is_asked_for_again_once_it_expires(expiring: httpx.Client, sink: Sink) -> None:
    subscribe(expiring, "asks", f"{sink.url}/grant/b", handshake=True)
    post(expiring, 1)
    wait_until(lambda: len(posts_to(sink, "/grant/b")) == 1, what="the first delivery")
    first = posts_to(sink, "/grant/b")[0].at
    wait_until(lambda: time.monotonic() >= first + 1.1, what="the grant to expire")
    post(expiring, 2)
    wait_until(lambda: len(posts_to(sink, "/grant/b")) == 2, what="the second delivery")
    assert len(options_to(sink, "/grant/b")) == 2


def test_binary_mode_sends_the_data_as_the_body_and_the_attributes_as_ce_headers(
    admin: httpx.Client, sink: Sink
) -> None:
    created = subscribe(admin, "binary", f"{sink.url}/ok/binary", content_mode="binary")
    post(admin, 1)
    [request] = sink.wait_for("/ok/binary", 1)
    assert request.headers["content-type"] == "application/json"
    assert request.headers["ce-specversion"] == "1.0"
    assert request.headers["ce-type"] == "cos.job.succeeded"
    assert request.headers["ce-id"] == request.headers["webhook-id"]
    assert request.headers["ce-source"].startswith("/cos-relay/relay-a")
    data = orjson.loads(request.body)
    assert data["JobId"] == request.headers["ce-subject"]
    # Signed over the bytes sent, verified by the official library.
    assert Webhook(created["secret"]).verify(request.body, request.headers) == data
