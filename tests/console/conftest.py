"""A gateway in the test process with its console, a fake subscriber and a fake clock; clients signed in or not."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from relay.app.factory import create_app
from relay.deliver.ssrf import AddressPolicy
from relay.settings.table import Settings
from tests.conftest import ADMIN_TOKEN, CALLBACK_TOKEN, FAKE_HOST, FAKE_NETWORK, callback_schema, callback_url
from tests.fakes import FakeClock, FakeSender, subscriber
from tests.live import ThreadServer

#: Near the real time, so the sample callbacks' own times read naturally on the pages.
START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


class Console:
    """A browser-like client of the console: it signs in, reads CSRF tokens off pages and posts forms."""

    def __init__(self, http: httpx.Client, clock: FakeClock, sender: FakeSender) -> None:
        self.http = http
        self.clock = clock
        self.sender = sender
        #: What a browser on the console's own pages sends as Origin.
        self.origin = str(http.base_url).rstrip("/")

    def sign_in(self, token: str = ADMIN_TOKEN) -> httpx.Response:
        return self.http.post(
            "/console/login", data={"token": token}, headers={"origin": self.origin}, follow_redirects=False
        )

    def get(self, path: str) -> httpx.Response:
        return self.http.get(path, follow_redirects=False)

    def csrf(self, page: str = "/console/") -> str:
        found = re.search(r'name="csrf" value="([^"]+)"', self.get(page).text)
        assert found is not None, "the page has no form with a CSRF token"
        return found[1]

    def post(self, path: str, fields: dict[str, str] | None = None, *, origin: str | None = "") -> httpx.Response:
        """Post a form the way a console page does; ``origin`` None sends none, "" the console's own."""
        headers = {} if origin is None else {"origin": origin or self.origin}
        data = {"csrf": self.csrf(), **(fields or {})}
        return self.http.post(path, data=data, headers=headers, follow_redirects=False)

    def callback(self, body: bytes) -> httpx.Response:
        return self.http.post(callback_url(), content=body, headers={"content-type": "application/xml"})

    def add_subscriber(self, name: str, path: str, **options: object) -> None:
        answer = self.http.post(
            "/api/subscribers",
            json={"name": name, "url": f"{FAKE_HOST}{path}", **options},
            headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert answer.status_code == 201, answer.text

    def api(self, path: str) -> dict[str, object]:
        answer = self.http.get(path, headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
        assert answer.status_code == 200, answer.text
        document: dict[str, object] = answer.json()
        return document


@pytest.fixture
def console_settings(settings: Settings) -> Settings:
    return settings.replace(
        allow_networks=FAKE_NETWORK, retry_schedule=(10,), poll_interval=0.05, callback_token=CALLBACK_TOKEN
    )


@pytest.fixture
def console(console_settings: Settings) -> Iterator[Console]:
    """Not signed in yet: call `sign_in`."""
    clock = FakeClock(START)
    sender = FakeSender(subscriber, policy=AddressPolicy.from_setting(FAKE_NETWORK), clock=clock)
    server = ThreadServer(create_app(console_settings, clock=clock, sender=sender, schema=callback_schema())).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            yield Console(http, clock, sender)
    finally:
        server.stop()


@pytest.fixture
def signed_in(console: Console) -> Console:
    assert console.sign_in().status_code == 303
    return console
