"""Test doubles for the delivery seams: a clock you set, and a sender that answers from a function.

`FakeSender` is to `relay.deliver.client.Sender` what httpx's ``MockTransport`` is to a transport: a
handler turns each outgoing request into a `Reply` (or raises ``TimeoutError`` / ``OSError``), every
request is recorded, and the result is the `Attempt` the real sender would have returned for that
answer (same outcome, status, error text, bounded body and Retry-After). Nothing touches the network.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
from yarl import URL

from relay.deliver.client import Sender, outcome_for, parse_retry_after
from relay.deliver.ssrf import AddressPolicy
from relay.domain.delivery import Attempt, Outcome
from tests.events import CONTENT_TYPE, claims_to_be_an_event, problems

#: Any fixed instant will do; a Monday morning reads well in failures.
EPOCH = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)


@dataclass
class FakeClock:
    """A UTC clock that only moves when told to: pass it as ``clock=``."""

    now: datetime = EPOCH

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@dataclass(frozen=True)
class Request:
    """One request the sender was asked to make."""

    url: str
    body: bytes
    headers: Mapping[str, str]
    timeout: float
    #: The fake clock's time when it was sent (None without a clock).
    at: datetime | None

    @property
    def path(self) -> str:
        return URL(self.url).path

    @property
    def event(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


@dataclass(frozen=True)
class Reply:
    """How the subscriber answers."""

    status: int = 204
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    #: Seconds the answer takes; at or past the attempt's timeout the attempt times out.
    delay: float = 0.0


Handler = Callable[[Request], Reply]


class FakeSender(Sender):
    """A `Sender` whose subscribers are a function; the SSRF refusal is the real sender's own check."""

    def __init__(
        self, handler: Handler, *, policy: AddressPolicy | None = None, clock: FakeClock | None = None
    ) -> None:
        super().__init__(policy or AddressPolicy.from_setting(""))
        self.handler = handler
        self.clock = clock
        self.requests: list[Request] = []
        self.started = False

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        """Stop; every event sent is checked against the published schemas."""
        self.started = False
        sent = [
            request
            for request in self.requests
            if request.headers.get("content-type") == CONTENT_TYPE and claims_to_be_an_event(request.body)
        ]
        wrong = {request.headers.get("webhook-id"): problems(request.body) for request in sent}
        assert not any(wrong.values()), f"events that break the published schemas: {wrong}"

    def to(self, path: str) -> list[Request]:
        return [request for request in self.requests if request.path == path]

    def _now(self) -> datetime:
        return self.clock() if self.clock is not None else datetime.now(UTC)

    def _spend(self, seconds: float) -> None:
        if self.clock is not None:
            self.clock.advance(seconds)

    async def send(self, url: str, body: bytes, headers: Mapping[str, str], *, timeout: float) -> Attempt:
        if not self.started:
            raise RuntimeError("Sender.send() before start()")
        where = self._target(url)  # the real sender's check, remembered as it remembers it
        if isinstance(where, str):
            return Attempt(Outcome.SSRF_BLOCKED, None, 0.0, where, b"", None)
        request = Request(url, body, dict(headers), timeout, self.clock() if self.clock is not None else None)
        self.requests.append(request)
        await anyio.lowlevel.checkpoint()  # a real send yields to the event loop; so does this one
        try:
            reply = self.handler(request)
        except TimeoutError:
            self._spend(timeout)
            return Attempt(Outcome.TIMEOUT, None, timeout, f"timeout after {timeout:g}s", b"", None)
        except OSError as exc:
            # What aiohttp's ClientConnectorError comes down to: the OS error's class name.
            return Attempt(Outcome.CONNECTION_ERROR, None, 0.0, type(exc).__name__, b"", None)
        if reply.delay >= timeout:
            self._spend(timeout)
            # No status line arrived in time: the real sender has no status to report either.
            return Attempt(Outcome.TIMEOUT, None, timeout, f"timeout after {timeout:g}s", b"", None)
        self._spend(reply.delay)
        retry_after = None
        if reply.status in (429, 503):
            header = {name.lower(): value for name, value in reply.headers.items()}.get("retry-after")
            retry_after = parse_retry_after(header, self._now())
        received = reply.body[: self._body_limit]
        return Attempt(outcome_for(reply.status), reply.status, reply.delay, None, received, retry_after)


def subscriber(request: Request) -> Reply:
    """The routes of `tests.sink.Sink`, answered without a server.

    ``/ok``, ``/fail`` (500), ``/gone`` (410), ``/redirect`` (302), ``/throttle/N`` (429, Retry-After N),
    ``/unavailable/N`` (503, Retry-After N), ``/hang`` (times out), ``/refused`` (connection refused),
    ``/slow/SECONDS``; anything else 404.
    """
    kind, _, arg = request.path.strip("/").partition("/")
    if kind == "ok":
        return Reply(204)
    if kind == "fail":
        return Reply(500, body=b"boom")
    if kind == "gone":
        return Reply(410)
    if kind == "redirect":
        return Reply(302, {"Location": "http://169.254.169.254/latest/meta-data/"})
    if kind == "throttle":
        return Reply(429, {"Retry-After": arg or "1"})
    if kind == "unavailable":
        return Reply(503, {"Retry-After": arg or "1"})
    if kind == "hang":
        raise TimeoutError
    if kind == "refused":
        raise ConnectionRefusedError
    if kind == "slow":
        return Reply(200, delay=float(arg))
    return Reply(404)


async def settle(check: Callable[[], bool], timeout: float = 10.0, what: str = "the condition") -> None:
    """Yield to the event loop until ``check`` holds (for work the app's own tasks do)."""
    with anyio.move_on_after(timeout):
        # ASYNC110: the condition is state of the app's own tasks, which offer no event to wait on.
        while not check():  # noqa: ASYNC110
            await anyio.sleep(0.01)
        return
    raise AssertionError(f"not within {timeout:g} s: {what}")
