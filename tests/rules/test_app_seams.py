"""`create_app` takes the fake sender, the fake clock and a fresh registry: the whole app, in process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from relay.app.factory import create_app
from relay.deliver.ssrf import AddressPolicy
from relay.settings.table import Settings
from tests.conftest import ADMIN_TOKEN, FAKE_HOST, FAKE_NETWORK, callback_schema, callback_url, job_body, job_id
from tests.fakes import FakeClock, FakeSender, settle, subscriber

pytestmark = pytest.mark.anyio


@dataclass
class App:
    http: httpx.AsyncClient
    sender: FakeSender
    clock: FakeClock
    registry: CollectorRegistry


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[App]:
    clock, registry = FakeClock(), CollectorRegistry()
    settings = settings.replace(allow_networks=FAKE_NETWORK)
    sender = FakeSender(subscriber, policy=AddressPolicy.from_setting(FAKE_NETWORK), clock=clock)
    relay = create_app(settings, sender=sender, clock=clock, registry=registry, schema=callback_schema())
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with relay.router.lifespan_context(relay):
        transport = httpx.ASGITransport(app=relay)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost", headers=headers) as http:
            yield App(http, sender, clock, registry)
    assert not sender.started  # the app closed the sender it was given


async def test_a_callback_reaches_the_injected_sender_stamped_by_the_injected_clock(app: App) -> None:
    assert app.sender.started
    response = await app.http.post("/api/subscribers", json={"name": "hook", "url": f"{FAKE_HOST}/ok"})
    assert response.status_code == 201, response.text
    assert (await app.http.post(callback_url(), content=job_body(1))).status_code == 200
    await settle(lambda: len(app.sender.requests) == 1, what="the delivery sent")
    [request] = app.sender.requests
    assert request.event["subject"] == job_id(1)
    assert request.headers["webhook-timestamp"] == str(int(app.clock().timestamp()))
    labels = {"subscriber": "hook", "outcome": "success"}
    await settle(lambda: app.registry.get_sample_value("relay_delivery_attempts_total", labels) == 1)
    [delivery] = (await app.http.get("/api/deliveries")).json()["items"]
    assert delivery["delivered_at"].startswith(app.clock().strftime("%Y-%m-%dT%H:%M:%S"))


async def test_two_apps_in_one_process_count_into_their_own_registries(
    app: App, settings: Settings, tmp_path: Path
) -> None:
    other = CollectorRegistry()
    # Never started: on an SQLite file of its own, as a PostgreSQL store starts its loop when it is built.
    create_app(settings.replace(db_path=tmp_path / "other.db"), registry=other, schema=callback_schema())
    assert (await app.http.post(callback_url(), content=job_body(1))).status_code == 200
    assert app.registry.get_sample_value("relay_callbacks_received_total", {"outcome": "accepted"}) == 1
    assert not other.get_sample_value("relay_callbacks_received_total", {"outcome": "accepted"})
