"""The sender against a real subscriber on loopback: outcomes, deadlines, bounded bodies and the SSRF guard."""

from __future__ import annotations

import asyncio
import gzip
import resource
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from ipaddress import ip_network
from typing import Any

import pytest
from aiohttp import web
from multidict import CIMultiDict

from relay.deliver.client import Sender, outcome_for, parse_retry_after
from relay.deliver.ssrf import AddressPolicy
from relay.domain.delivery import Attempt, Outcome
from tests.live import free_port

pytestmark = pytest.mark.anyio

LOOPBACK = AddressPolicy(allow=(ip_network("127.0.0.0/8"),))
HUGE = 100 * 1024 * 1024
CHUNK = b"x" * 65536
BODY = b'{"specversion":"1.0","id":"evt_1","source":"cos-relay","type":"cos.job.completed"}'


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Seen:
    path: str
    headers: CIMultiDict[str]
    body: bytes
    peer_port: int


@dataclass
class Subscriber:
    """A subscriber on 127.0.0.1 that records every request it receives."""

    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    huge_bytes_written: int = 0
    #: Set when the /huge handler stops writing (all sent, or the connection dropped).
    huge_ended: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def paths(self) -> list[str]:
        return [request.path for request in self.seen]


@dataclass(frozen=True)
class PinnedPolicy(AddressPolicy):
    """Resolves every name to one vetted address and records each lookup."""

    lookups: list[tuple[str, int]] = field(default_factory=list)

    async def resolve(self, host: str, port: int) -> list[str]:
        self.lookups.append((host, port))
        return ["127.0.0.1"]


Handler = Callable[[web.Request], Any]


def subscriber_app(sub: Subscriber) -> web.Application:
    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        body = await request.read()
        sub.seen.append(Seen(request.path, CIMultiDict(request.headers), body, peer[1] if peer else 0))
        response: web.StreamResponse = await handler(request)
        return response

    async def ok(request: web.Request) -> web.Response:
        response = web.Response(text="ok")
        response.set_cookie("session", "from-subscriber")
        return response

    async def peer(request: web.Request) -> web.Response:
        return web.Response(text=str(sub.seen[-1].peer_port))

    def status(code: int, **headers: str) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            return web.Response(status=code, text=f"status {code}", headers=headers)

        return handler

    async def unavailable(request: web.Request) -> web.Response:
        later = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
        return web.Response(status=503, text="busy", headers={"Retry-After": later})

    async def forever(request: web.Request) -> web.Response:
        await sub.released.wait()
        return web.Response(text="too late")

    async def drip(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = 100
        await response.prepare(request)
        try:
            for _ in range(100):
                await response.write(b".")
                await asyncio.sleep(1)
        except ConnectionError:
            pass  # the sender gave up, as it should
        return response

    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = HUGE
        await response.prepare(request)
        try:
            while sub.huge_bytes_written < HUGE:
                await response.write(CHUNK)
                sub.huge_bytes_written += len(CHUNK)
        except ConnectionError:
            pass
        finally:
            sub.huge_ended.set()
        return response

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            while not sub.released.is_set():
                await response.write(CHUNK)
        except ConnectionError:
            pass
        return response

    async def gzip_bomb(request: web.Request) -> web.Response:
        packed = gzip.compress(bytes(10 * 1024 * 1024))
        return web.Response(body=packed, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"})

    async def big_text(request: web.Request) -> web.Response:
        return web.Response(body=bytes(range(256)) * 40)

    app = web.Application(middlewares=[record])
    for path, handler in {
        "/ok": ok,
        "/peer": peer,
        "/no-content": status(204),
        "/gone": status(410),
        "/not-found": status(404),
        "/error": status(500, **{"Retry-After": "30"}),
        "/slow-down": status(429, **{"Retry-After": "7"}),
        "/unavailable": unavailable,
        "/redirect-metadata": status(302, Location="http://169.254.169.254/latest/meta-data/"),
        "/redirect-local": status(307, Location="/landing"),
        "/landing": ok,
        "/forever": forever,
        "/drip": drip,
        "/huge": huge,
        "/endless": endless,
        "/gzip-bomb": gzip_bomb,
        "/big-text": big_text,
    }.items():
        app.router.add_post(path, handler)
    return app


@pytest.fixture
async def subscriber() -> AsyncIterator[Subscriber]:
    sub = Subscriber()
    # handler_cancellation: a handler whose client went away is cancelled, so teardown is quick.
    runner = web.AppRunner(subscriber_app(sub), handler_cancellation=True, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    sub.port = runner.addresses[0][1]
    try:
        yield sub
    finally:
        sub.released.set()
        await runner.cleanup()


@pytest.fixture
async def sender() -> AsyncIterator[Sender]:
    async with Sender(LOOPBACK) as started:
        yield started


async def post(sender: Sender, url: str, deadline: float = 10.0, **headers: str) -> Attempt:
    return await sender.send(url, BODY, headers, timeout=deadline)


# --- outcomes --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "outcome", "status"),
    [
        ("/ok", Outcome.SUCCESS, 200),
        ("/no-content", Outcome.SUCCESS, 204),
        ("/error", Outcome.HTTP_5XX, 500),
        ("/gone", Outcome.HTTP_410, 410),
        ("/not-found", Outcome.HTTP_4XX, 404),
        ("/slow-down", Outcome.HTTP_429, 429),
        ("/unavailable", Outcome.HTTP_5XX, 503),
    ],
)
async def test_each_response_status_maps_to_its_outcome(
    subscriber: Subscriber, sender: Sender, path: str, outcome: Outcome, status: int
) -> None:
    attempt = await post(sender, subscriber.url(path))
    assert (attempt.outcome, attempt.status, attempt.error) == (outcome, status, None)
    assert 0 <= attempt.duration < 5
    assert subscriber.paths() == [path]


async def test_a_success_keeps_the_response_body(subscriber: Subscriber, sender: Sender) -> None:
    attempt = await post(sender, subscriber.url("/ok"))
    assert attempt.response_body == b"ok"
    assert attempt.retry_after is None


async def test_429_retry_after_in_seconds_is_parsed(subscriber: Subscriber, sender: Sender) -> None:
    attempt = await post(sender, subscriber.url("/slow-down"))
    assert attempt.outcome is Outcome.HTTP_429
    assert attempt.retry_after == 7.0


async def test_503_retry_after_as_an_http_date_becomes_seconds_from_now(subscriber: Subscriber, sender: Sender) -> None:
    attempt = await post(sender, subscriber.url("/unavailable"))
    assert attempt.outcome is Outcome.HTTP_5XX
    assert attempt.retry_after is not None
    assert 100 < attempt.retry_after <= 121


async def test_retry_after_is_ignored_on_other_statuses(subscriber: Subscriber, sender: Sender) -> None:
    attempt = await post(sender, subscriber.url("/error"))
    assert attempt.retry_after is None


async def test_a_redirect_is_a_failure_and_is_never_followed(subscriber: Subscriber, sender: Sender) -> None:
    to_metadata = await post(sender, subscriber.url("/redirect-metadata"))
    assert (to_metadata.outcome, to_metadata.status) == (Outcome.HTTP_3XX, 302)
    # Even a redirect to an allowed address is not followed: the landing page never sees a request.
    to_landing = await post(sender, subscriber.url("/redirect-local"))
    assert (to_landing.outcome, to_landing.status) == (Outcome.HTTP_3XX, 307)
    assert subscriber.paths() == ["/redirect-metadata", "/redirect-local"]


# --- what is sent ----------------------------------------------------------------------------------------


async def test_the_request_is_a_cloudevents_post_with_the_given_headers(subscriber: Subscriber, sender: Sender) -> None:
    signature = {"webhook-id": "msg_1", "webhook-timestamp": "1700000000", "webhook-signature": "v1,abc="}
    await sender.send(subscriber.url("/ok"), BODY, signature, timeout=10)
    (seen,) = subscriber.seen
    assert seen.body == BODY
    assert seen.headers.getall("Content-Type") == ["application/cloudevents+json"]
    assert seen.headers["User-Agent"] == "cos-relay"
    assert seen.headers["Accept-Encoding"] == "identity"
    for name, value in signature.items():
        assert seen.headers[name] == value


async def test_a_content_type_given_by_the_caller_is_kept(subscriber: Subscriber, sender: Sender) -> None:
    await sender.send(subscriber.url("/ok"), BODY, {"content-type": "application/json"}, timeout=10)
    assert subscriber.seen[0].headers.getall("Content-Type") == ["application/json"]


async def test_cookies_set_by_a_subscriber_are_never_sent_back(subscriber: Subscriber) -> None:
    # A host name, not 127.0.0.1: aiohttp's default jar ignores cookies from IP addresses anyway.
    url = subscriber.url("/ok", host="hooks.example")
    async with Sender(PinnedPolicy()) as named:
        await post(named, url)
        await post(named, url)
    assert "Cookie" not in subscriber.seen[1].headers


async def test_connections_are_kept_alive_between_attempts(subscriber: Subscriber, sender: Sender) -> None:
    first = await post(sender, subscriber.url("/peer"))
    second = await post(sender, subscriber.url("/peer"))
    assert first.response_body == second.response_body


async def test_many_concurrent_attempts_all_succeed(subscriber: Subscriber) -> None:
    async with Sender(LOOPBACK, connector_limit=16) as limited:
        attempts = await asyncio.gather(*(post(limited, subscriber.url("/ok")) for _ in range(200)))
    assert {attempt.outcome for attempt in attempts} == {Outcome.SUCCESS}
    assert len(subscriber.seen) == 200


# --- deadlines -------------------------------------------------------------------------------------------


async def test_a_subscriber_that_never_answers_times_out_at_the_deadline(
    subscriber: Subscriber, sender: Sender
) -> None:
    attempt = await post(sender, subscriber.url("/forever"), deadline=1.0)
    assert attempt.outcome is Outcome.TIMEOUT
    assert attempt.status is None
    assert attempt.error == "timeout after 1s"
    assert 0.9 <= attempt.duration < 5


async def test_a_body_trickling_one_byte_per_second_times_out_at_the_deadline(
    subscriber: Subscriber, sender: Sender
) -> None:
    attempt = await post(sender, subscriber.url("/drip"), deadline=2.5)
    assert attempt.outcome is Outcome.TIMEOUT
    assert attempt.status == 200  # the status line came; the body never finished
    assert attempt.error == "timeout after 2.5s"
    assert 2.4 <= attempt.duration < 8


# --- bounded response bodies -----------------------------------------------------------------------------


async def test_a_100_mb_response_is_read_only_up_to_the_body_limit(subscriber: Subscriber, sender: Sender) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    started = time.monotonic()
    attempt = await post(sender, subscriber.url("/huge"), deadline=60)
    elapsed = time.monotonic() - started
    growth_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert (attempt.outcome, attempt.status) == (Outcome.SUCCESS, 200)
    assert attempt.response_body == CHUNK[:4096]
    assert elapsed < 10
    assert growth_mib < 50
    # The connection was dropped, so the subscriber could not push the rest: far less than 100 MB left it.
    await asyncio.wait_for(subscriber.huge_ended.wait(), timeout=10)
    assert subscriber.huge_bytes_written < HUGE // 2


async def test_the_connection_behind_a_truncated_body_is_not_reused(subscriber: Subscriber, sender: Sender) -> None:
    before = await post(sender, subscriber.url("/peer"))
    await post(sender, subscriber.url("/huge"))
    after = await post(sender, subscriber.url("/peer"))
    assert before.response_body != after.response_body


async def test_an_endless_body_does_not_hold_the_attempt_until_the_deadline(
    subscriber: Subscriber, sender: Sender
) -> None:
    attempt = await post(sender, subscriber.url("/endless"), deadline=30)
    assert attempt.outcome is Outcome.SUCCESS
    assert len(attempt.response_body) == 4096
    assert attempt.duration < 10


async def test_the_body_limit_is_configurable(subscriber: Subscriber) -> None:
    async with Sender(LOOPBACK, body_limit=100) as small:
        attempt = await post(small, subscriber.url("/big-text"))
    assert attempt.response_body == bytes(range(100))


async def test_a_gzip_response_is_kept_compressed_and_never_inflated(subscriber: Subscriber, sender: Sender) -> None:
    attempt = await post(sender, subscriber.url("/gzip-bomb"))
    assert attempt.outcome is Outcome.SUCCESS
    assert attempt.response_body.startswith(b"\x1f\x8b")
    assert len(attempt.response_body) <= 4096


# --- network errors --------------------------------------------------------------------------------------


async def test_a_closed_port_is_a_connection_error(sender: Sender) -> None:
    attempt = await post(sender, f"http://127.0.0.1:{free_port()}/hook")
    assert attempt.outcome is Outcome.CONNECTION_ERROR
    assert attempt.status is None
    assert attempt.error == "ConnectionRefusedError"


async def test_errors_never_echo_the_url_or_its_secrets(sender: Sender) -> None:
    attempt = await post(sender, f"http://127.0.0.1:{free_port()}/hook?access_token=s3cr3t")
    assert attempt.error is not None
    assert "s3cr3t" not in attempt.error


async def test_send_before_start_is_a_programming_error() -> None:
    with pytest.raises(RuntimeError, match="before start"):
        await Sender(LOOPBACK).send("http://127.0.0.1/", BODY, {}, timeout=1)


async def test_close_is_idempotent() -> None:
    sender = Sender(LOOPBACK)
    await sender.start()
    await sender.close()
    await sender.close()


# --- SSRF ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "2130706433"])
async def test_without_the_allow_list_loopback_is_blocked_and_never_contacted(
    subscriber: Subscriber, host: str
) -> None:
    async with Sender(AddressPolicy()) as guarded:
        attempt = await post(guarded, subscriber.url("/ok", host=host))
    assert attempt.outcome is Outcome.SSRF_BLOCKED
    assert attempt.status is None
    assert attempt.error is not None
    assert "127.0.0.1" in attempt.error
    assert "loopback" in attempt.error
    assert subscriber.seen == []


async def test_a_name_is_blocked_by_the_connectors_resolver_not_only_by_check_url(subscriber: Subscriber) -> None:
    url = subscriber.url("/ok", host="localhost")
    AddressPolicy().check_url(url)  # the URL itself is fine: only resolution can refuse it
    async with Sender(AddressPolicy()) as guarded:
        attempt = await post(guarded, url)
    assert attempt.outcome is Outcome.SSRF_BLOCKED
    assert attempt.error is not None
    assert attempt.error.startswith("localhost: ")
    assert subscriber.seen == []


async def test_a_name_whose_answer_mixes_public_and_private_addresses_is_blocked_at_connect(
    subscriber: Subscriber, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def rebinding(host: str, port: int, **_: object) -> list[tuple[Any, ...]]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("8.8.8.8", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
        ]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", rebinding)
    async with Sender(AddressPolicy()) as guarded:
        attempt = await post(guarded, subscriber.url("/ok", host="hooks.example"), deadline=5)
    assert attempt.outcome is Outcome.SSRF_BLOCKED
    # The refusal names the setting that would allow it (issue 15).
    assert attempt.error == (
        "hooks.example: 127.0.0.1 is loopback; to allow it, add its network to RELAY_ALLOW_NETWORKS (--allow-networks)"
    )
    assert subscriber.seen == []


async def test_the_connection_goes_to_the_vetted_address_resolved_once(subscriber: Subscriber) -> None:
    # The name does not exist in DNS: reaching the subscriber proves the connector used exactly what
    # the policy vetted, with no second lookup that a rebinding DNS server could answer differently.
    policy = PinnedPolicy()
    url = subscriber.url("/ok", host="hooks.rebind.invalid")
    async with Sender(policy) as pinned:
        first = await post(pinned, url)
        second = await post(pinned, url)
    assert (first.outcome, second.outcome) == (Outcome.SUCCESS, Outcome.SUCCESS)
    assert policy.lookups == [("hooks.rebind.invalid", subscriber.port)]
    assert subscriber.seen[0].headers["Host"] == f"hooks.rebind.invalid:{subscriber.port}"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://127.0.0.1/", "scheme"),
        ("http://user:pw@127.0.0.1/", "credentials"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ],
)
async def test_forbidden_urls_are_blocked_before_connecting(sender: Sender, url: str, why: str) -> None:
    attempt = await post(sender, url)
    assert attempt.outcome is Outcome.SSRF_BLOCKED
    assert attempt.error is not None
    assert why in attempt.error


# --- pure helpers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.SUCCESS),
        (201, Outcome.SUCCESS),
        (202, Outcome.SUCCESS),
        (204, Outcome.SUCCESS),
        (299, Outcome.SUCCESS),
        (301, Outcome.HTTP_3XX),
        (302, Outcome.HTTP_3XX),
        (304, Outcome.HTTP_3XX),
        (307, Outcome.HTTP_3XX),
        (308, Outcome.HTTP_3XX),
        (400, Outcome.HTTP_4XX),
        (401, Outcome.HTTP_4XX),
        (404, Outcome.HTTP_4XX),
        (413, Outcome.HTTP_4XX),
        (415, Outcome.HTTP_4XX),
        (410, Outcome.HTTP_410),
        (429, Outcome.HTTP_429),
        (500, Outcome.HTTP_5XX),
        (502, Outcome.HTTP_5XX),
        (503, Outcome.HTTP_5XX),
        (504, Outcome.HTTP_5XX),
        (101, Outcome.HTTP_5XX),
        (600, Outcome.HTTP_5XX),
    ],
)
def test_status_codes_map_to_outcomes(status: int, outcome: Outcome) -> None:
    assert outcome_for(status) is outcome


NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("7", 7.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("86400", 86400.0),
        ("Thu, 01 Jan 2026 12:02:00 GMT", 120.0),
        ("Thursday, 01-Jan-26 12:00:30 GMT", 30.0),  # RFC 850, still valid HTTP-date
        ("Thu, 01 Jan 2026 11:00:00 GMT", 0.0),  # in the past: retry now
        (None, None),
        ("", None),
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("\u0667", None),  # ARABIC-INDIC DIGIT SEVEN: isdigit() but not delta-seconds
    ],
)
def test_retry_after_accepts_delta_seconds_and_http_dates(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, NOW) == expected
