"""A subscriber for tests: a real Starlette app on loopback that records every request it gets."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.events import CONTENT_TYPE, claims_to_be_an_event, problems
from tests.live import ThreadServer


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    method: str = "POST"

    @property
    def event(self) -> dict[str, Any]:
        return dict(json.loads(self.body))

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


@dataclass
class Sink:
    """Routes: ``/ok``, ``/fail`` (500), ``/gone`` (410), ``/redirect`` (302), ``/throttle/N`` (429, Retry-After N),
    ``/unavailable/N`` (503, Retry-After N), ``/hang`` (never answers), ``/flaky/N`` (500 for the first N
    requests, then 200), ``/slow/SECONDS``. The CloudEvents handshake (``OPTIONS``): ``/grant/...`` grants any
    origin, ``/grant-rate/N/...`` grants N a minute, ``/refuse/...`` answers 200 without granting (until
    `granting` is set); their POSTs answer 204."""

    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    failing: dict[str, int] = field(default_factory=dict)
    #: ``/refuse/...`` grants from now on.
    granting: bool = False
    #: Where it is served, once `serve` started it.
    server: ThreadServer | None = None

    def serve(self, port: int | None = None) -> Sink:
        self.server = ThreadServer(self.app(), port=port).start()
        return self

    def stop(self) -> None:
        """Stop serving; every event received is checked against the published schemas."""
        if self.server is not None:
            self.server.stop()
        with self.lock:
            events = [
                request
                for request in self.requests
                if request.headers.get("content-type") == CONTENT_TYPE and claims_to_be_an_event(request.body)
            ]
        wrong = {request.headers.get("webhook-id", request.path): problems(request.body) for request in events}
        assert not any(wrong.values()), f"events that break the published schemas: {wrong}"

    @property
    def url(self) -> str:
        assert self.server is not None, "not served"
        return self.server.url

    @property
    def port(self) -> int:
        assert self.server is not None, "not served"
        return self.server.port

    def app(self) -> Starlette:
        async def handle(request: Request) -> Response:
            body = await request.body()
            path = request.url.path
            with self.lock:
                self.requests.append(Received(path, dict(request.headers), body, time.monotonic(), request.method))
            kind, _, arg = path.strip("/").partition("/")
            if request.method == "OPTIONS":
                return self._handshake(kind, arg)
            if kind in ("ok", "grant", "grant-rate", "refuse"):
                return Response(status_code=204)
            if kind == "fail":
                return Response("boom", status_code=500)
            if kind == "gone":
                return Response(status_code=410)
            if kind == "redirect":
                return Response(status_code=302, headers={"Location": "http://169.254.169.254/latest/meta-data/"})
            if kind == "throttle":
                return Response(status_code=429, headers={"Retry-After": arg or "1"})
            if kind == "unavailable":
                return Response(status_code=503, headers={"Retry-After": arg or "1"})
            if kind == "hang":
                await asyncio.sleep(3600)
            if kind == "flaky":
                with self.lock:
                    seen = self.failing[path] = self.failing.get(path, 0) + 1
                return Response(status_code=500 if seen <= int(arg) else 200)
            if kind == "slow":
                await asyncio.sleep(float(arg))
                return Response(status_code=200)
            return Response(status_code=404)

        return Starlette(routes=[Route("/{path:path}", handle, methods=["POST", "OPTIONS"])])

    def _handshake(self, kind: str, arg: str) -> Response:
        if kind == "refuse" and not self.granting:
            return Response(status_code=200)  # answered, but nothing granted: the spec's refusal
        if kind in ("grant", "refuse"):
            return Response(status_code=200, headers={"WebHook-Allowed-Origin": "*", "Allow": "POST"})
        if kind == "grant-rate":
            rate = arg.partition("/")[0]
            headers = {"WebHook-Allowed-Origin": "*", "WebHook-Allowed-Rate": rate, "Allow": "POST"}
            return Response(status_code=200, headers=headers)
        return Response(status_code=405)

    def to(self, path: str) -> list[Received]:
        with self.lock:
            return [request for request in self.requests if request.path == path]

    def wait_for(self, path: str, count: int, timeout: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.to(path)
            if len(got) >= count:
                return got
            time.sleep(0.02)
        raise AssertionError(f"{path}: expected {count} requests, got {len(self.to(path))}")


def verify(request: Received, secret: str) -> dict[str, Any]:
    """Check a delivery the way a subscriber would: official Standard Webhooks library, then the event schema."""
    payload = Webhook(secret).verify(request.body, request.headers)
    assert request.headers["content-type"] == "application/cloudevents+json"
    assert problems(request.body) == []
    assert request.event["id"] == request.webhook_id
    return dict(payload)


def assert_unsigned_feishu_message(request: Received, *secrets: str) -> None:
    """A Feishu robot's card that carries no signature: none the Feishu way (``sign``, ``timestamp``), none the
    Standard Webhooks way, and no part of any of ``secrets`` (``whsec_`` keys it must not have been signed with)."""
    message = json.loads(request.body)
    assert message["msg_type"] == "interactive"
    assert not {"sign", "timestamp"} & set(message)
    assert "webhook-signature" not in request.headers
    for secret in secrets:
        assert secret.removeprefix("whsec_")[4:] not in request.body.decode()
