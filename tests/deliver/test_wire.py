"""The sender's own HTTP/1.1 client against servers that answer byte for byte: what it writes, how it frames and
reuses connections, how it fails, and https with a certificate of the test's own. On asyncio and on uvloop."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
import struct
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import pytest
import uvloop

from relay.deliver.client import Sender
from relay.deliver.ssrf import AddressPolicy
from relay.deliver.wire import pool
from relay.domain.delivery import Outcome

pytestmark = pytest.mark.anyio

LOOPBACK = AddressPolicy(allow=(ip_network("127.0.0.0/8"),))
BODY = b'{"specversion":"1.0","id":"evt_1"}'
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@pytest.fixture(params=["asyncio", "uvloop"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return "asyncio", {"loop_factory": uvloop.new_event_loop} if request.param == "uvloop" else {}


@dataclass(frozen=True)
class Pinned(AddressPolicy):
    """Every name resolves to 127.0.0.1 (vetted by the allow-list), without DNS."""

    async def resolve(self, host: str, port: int) -> list[str]:
        return ["127.0.0.1"]


@dataclass
class Request:
    connection: int
    head: bytes
    body: bytes

    def header(self, name: str) -> list[str]:
        return [value.decode() for value in re.findall(rb"(?im)^" + name.encode() + rb": *(.*?)\r$", self.head)]


@dataclass
class Scripted:
    """A server that answers each path with the bytes given, then closes or not."""

    answers: dict[str, bytes | None]
    #: Paths after whose answer the server closes the connection.
    close_after: set[str] = field(default_factory=set)
    #: Paths answered only as a connection's first request: later, the server hangs up instead (as one that
    #: closed an idle connection just as it was reused).
    first_only: set[str] = field(default_factory=set)
    port: int = 0
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    closed: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number, self.connections = self.connections, self.connections + 1
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?im)^content-length: *(\d+)", head)
                body = await reader.readexactly(int(length.group(1)) if length else 0)
                self.requests.append(Request(number, head, body))
                path = head.split(b" ")[1].split(b"?")[0].decode()
                answer = self.answers[path]
                if answer is None or (path in self.first_only and served):
                    break
                served += 1
                writer.write(answer)
                await writer.drain()
                if head.split(b" ")[1].decode() in self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed += 1
            writer.close()

    def url(self, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"


async def serve(script: Scripted, tls: ssl.SSLContext | None = None) -> asyncio.Server:
    server = await asyncio.start_server(script.handle, "127.0.0.1", 0, ssl=tls)
    script.port = server.sockets[0].getsockname()[1]
    return server


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[str]:
    """A loopback server answering each connection with ``handler``; its URL."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
    finally:
        server.close()


@pytest.fixture
async def script() -> AsyncIterator[Scripted]:
    scripted = Scripted(
        {
            "/ok": OK,
            "/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
            "/until-close": b"HTTP/1.1 200 OK\r\n\r\nthe body ends with the connection",
            "/close": b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
            "/then-close": OK,
            "/early-hints": b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK,
            "/hang-up": None,
            "/short": b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
            "/not-http": b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
            "/twice": OK + b"HTTP/1.1 500 Internal Server Error\r\nRetry-After: 9\r\nContent-Length: 3\r\n\r\nbad",
            "/origin": b"HTTP/1.1 200 OK\r\nWebHook-Allowed-Origin: relay.example\r\nContent-Length: 0\r\n\r\n",
            "/exactly-100": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 100,
        },
        close_after={"/until-close", "/then-close", "/short"},
        first_only={"/origin"},
    )
    server = await serve(scripted)
    try:
        yield scripted
    finally:
        server.close()


async def send(sender: Sender, url: str, headers: dict[str, str] | None = None) -> Any:
    return await sender.send(url, BODY, headers or {}, timeout=5)


# --- what is written -------------------------------------------------------------------------------------


async def test_the_request_is_one_http_1_1_message_with_the_clients_headers(script: Scripted) -> None:
    async with Sender(LOOPBACK) as sender:
        await send(sender, script.url("/ok?a=1&b=%20"), {"webhook-id": "msg_1", "Content-Length": "999"})
    (seen,) = script.requests
    assert seen.head.startswith(b"POST /ok?a=1&b=%20 HTTP/1.1\r\n")
    assert seen.body == BODY
    assert seen.header("Host") == [f"127.0.0.1:{script.port}"]
    assert seen.header("webhook-id") == ["msg_1"]
    assert seen.header("Content-Length") == [str(len(BODY))]  # the client frames the body, whatever it is given
    assert seen.header("Content-Type") == ["application/cloudevents+json"]
    assert seen.header("User-Agent") == ["cos-relay"]
    assert seen.header("Accept-Encoding") == ["identity"]
    assert seen.header("Cookie") == seen.header("Connection") == seen.header("Transfer-Encoding") == []


async def test_a_header_that_would_write_a_header_of_its_own_is_refused_unsent(script: Scripted) -> None:
    async with Sender(LOOPBACK) as sender:
        attempt = await send(sender, script.url("/ok"), {"webhook-id": "msg_1\r\nX-Injected: yes"})
    assert (attempt.outcome, attempt.status, attempt.error) == (Outcome.CONNECTION_ERROR, None, "ValueError")
    assert script.requests == []


async def test_proxies_in_the_environment_are_never_used(script: Scripted, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # discard: a proxy taken from here would fail the attempt
    async with Sender(LOOPBACK) as sender:
        attempt = await send(sender, script.url("/ok"))
    assert attempt.outcome is Outcome.SUCCESS
    assert len(script.requests) == 1


# --- framing and reuse -----------------------------------------------------------------------------------


async def test_a_chunked_body_is_read_and_its_connection_reused(script: Scripted) -> None:
    async with Sender(LOOPBACK) as sender:
        first = await send(sender, script.url("/chunked"))
        second = await send(sender, script.url("/chunked"))
    assert (first.outcome, first.response_body, second.response_body) == (Outcome.SUCCESS, b"abcdefg", b"abcdefg")
    assert [request.connection for request in script.requests] == [0, 0]


async def test_a_body_without_length_ends_with_the_connection_which_is_not_reused(script: Scripted) -> None:
    async with Sender(LOOPBACK) as sender:
        first = await send(sender, script.url("/until-close"))
        second = await send(sender, script.url("/ok"))
    assert (first.outcome, first.response_body) == (Outcome.SUCCESS, b"the body ends with the connection")
    assert second.outcome is Outcome.SUCCESS
    assert [request.connection for request in script.requests] == [0, 1]


async def test_connection_close_is_honoured(script: Scripted) -> None:
    async with Sender(LOOPBACK) as sender:
        await send(sender, script.url("/close"))
        await send(sender, script.url("/ok"))
        await send(sender, script.url("/ok"))
    assert [request.connection for request in script.requests] == [0, 1, 1]


async def test_a_body_exactly_at_the_limit_is_whole_and_keeps_its_connection(script: Scripted) -> None:
    async with Sender(LOOPBACK, body_limit=100) as sender:
        first = await send(sender, script.url("/exactly-100"))
        await send(sender, script.url("/ok"))
    assert first.response_body == b"x" * 100
    assert [request.connection for request in script.requests] == [0, 0]


async def test_an_idle_connection_the_server_closed_is_not_reused(script: Scripted) -> None:
    async with Sender(LOOPBACK) as sender:
        await send(sender, script.url("/then-close"))
        await asyncio.sleep(0.1)  # the close arrives while the connection is idle
        attempt = await send(sender, script.url("/ok"))
    assert attempt.outcome is Outcome.SUCCESS
    assert [request.connection for request in script.requests] == [0, 1]


async def test_bytes_after_the_response_end_the_connection(script: Scripted) -> None:
    async with Sender(LOOPBACK) as sender:
        first = await send(sender, script.url("/twice"))
        await asyncio.sleep(0.05)
        await send(sender, script.url("/ok"))
    assert (first.outcome, first.status, first.response_body) == (Outcome.SUCCESS, 200, b"ok")
    assert [request.connection for request in script.requests] == [0, 1]


async def test_idle_connections_close_after_the_keep_alive(script: Scripted, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool, "KEEPALIVE", 0.1)
    async with Sender(LOOPBACK) as sender:
        await send(sender, script.url("/ok"))
        await asyncio.sleep(0.5)
        assert script.closed == 1  # closed by the client's sweep, the sender still open
        await send(sender, script.url("/ok"))
    assert [request.connection for request in script.requests] == [0, 1]


async def test_the_pool_holds_at_most_its_limit_of_connections(script: Scripted) -> None:
    async with Sender(LOOPBACK, connector_limit=2) as sender:
        attempts = await asyncio.gather(*(send(sender, script.url("/ok")) for _ in range(50)))
    assert {attempt.outcome for attempt in attempts} == {Outcome.SUCCESS}
    assert script.connections == 2


async def test_a_connection_whose_request_is_still_being_written_is_not_reused() -> None:
    """A server may answer before it read the body; a connection with part of a request still to write would
    carry the rest into the next request."""
    connections = 0
    done = asyncio.Event()

    async def answer_unread(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n")
        await done.wait()  # the body is never read
        writer.close()

    async with serving(answer_unread) as url:
        try:
            async with Sender(LOOPBACK) as sender:
                first = await sender.send(url, bytes(64 * 1024 * 1024), {}, timeout=5)
                second = await sender.send(url, BODY, {}, timeout=5)
        finally:
            done.set()
    assert (first.status, second.status) == (413, 413)
    assert connections == 2


async def test_an_interim_1xx_answer_is_skipped_for_the_final_one(script: Scripted) -> None:
    async with Sender(LOOPBACK) as sender:
        attempt = await send(sender, script.url("/early-hints"))
    assert (attempt.outcome, attempt.status, attempt.response_body) == (Outcome.SUCCESS, 200, b"ok")


async def test_the_answers_headers_are_case_insensitive(script: Scripted) -> None:
    async with Sender(LOOPBACK) as sender:
        attempt, answer = await sender.exchange("OPTIONS", script.url("/origin"), b"", {}, timeout=5)
        _, unanswered = await sender.exchange("OPTIONS", script.url("/hang-up"), b"", {}, timeout=5)
    assert attempt.status == 200
    assert answer["webhook-allowed-origin"] == answer["WebHook-Allowed-Origin"] == "relay.example"
    assert dict(unanswered) == {}
    assert script.requests[0].head.startswith(b"OPTIONS /origin HTTP/1.1\r\n")


async def test_an_options_on_a_kept_alive_connection_the_server_dropped_is_asked_again_a_post_is_not(
    script: Scripted,
) -> None:
    async with Sender(LOOPBACK) as sender:
        first, _ = await sender.exchange("OPTIONS", script.url("/origin"), b"", {}, timeout=5)
        again, answer = await sender.exchange("OPTIONS", script.url("/origin"), b"", {}, timeout=5)
        posted = await send(sender, script.url("/origin"))
    assert (first.status, again.status, answer.get("WebHook-Allowed-Origin")) == (200, 200, "relay.example")
    assert (posted.outcome, posted.error) == (Outcome.CONNECTION_ERROR, "ServerDisconnectedError")
    # The OPTIONS asked on connection 0 again, then on a new one; the POST, once, on that one kept alive.
    assert [request.connection for request in script.requests] == [0, 0, 1, 1]


# --- failures --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status", "error"),
    [
        ("/hang-up", None, "ServerDisconnectedError"),
        ("/short", 200, "ClientPayloadError"),
        ("/not-http", None, "ClientResponseError"),
    ],
)
async def test_a_broken_answer_is_a_connection_error_named_as_aiohttp_named_it(
    script: Scripted, path: str, status: int | None, error: str
) -> None:
    async with Sender(LOOPBACK) as sender:
        attempt = await send(sender, script.url(path))
    assert (attempt.outcome, attempt.status, attempt.error) == (Outcome.CONNECTION_ERROR, status, error)


@pytest.mark.parametrize(
    "endless",
    [b"X-Pad: " + b"a" * 1000 + b"\r\n", b"a" * 1000],  # headers without end; one header line without end
    ids=["headers", "line"],
)
async def test_a_head_without_end_is_refused_at_64_kib_not_read_until_the_deadline(endless: bytes) -> None:
    done = asyncio.Event()

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nX-Long: ")
        try:
            while not done.is_set():
                writer.write(endless * 64)
                await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    async with serving(flood) as url:
        try:
            async with Sender(LOOPBACK) as sender:
                attempt = await sender.send(url, BODY, {}, timeout=30)
        finally:
            done.set()
    assert (attempt.outcome, attempt.status, attempt.error) == (
        Outcome.CONNECTION_ERROR,
        None,
        "ClientResponseError",
    )
    assert attempt.duration < 5


async def test_a_large_head_within_the_bound_is_read(script: Scripted) -> None:
    cookies = b"".join(b"Set-Cookie: c%d=%s\r\n" % (number, b"v" * 4000) for number in range(12))
    script.answers["/cookies"] = b"HTTP/1.1 200 OK\r\n" + cookies + b"Content-Length: 2\r\n\r\nok"
    async with Sender(LOOPBACK) as sender:
        attempt, answer = await sender.exchange("POST", script.url("/cookies"), BODY, {}, timeout=5)
    assert (attempt.outcome, attempt.response_body) == (Outcome.SUCCESS, b"ok")
    assert sum(name.lower() == "set-cookie" for name, _ in answer.items()) == 12


async def test_a_reset_before_the_answer_is_a_connection_error_named_as_aiohttp_named_it() -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends an RST
        writer.transport.abort()

    async with serving(reset) as url, Sender(LOOPBACK) as sender:
        attempt = await sender.send(url, BODY, {}, timeout=5)
    assert (attempt.outcome, attempt.status, attempt.error) == (Outcome.CONNECTION_ERROR, None, "ClientOSError")


async def test_a_name_that_does_not_resolve_is_a_dns_failure(script: Scripted) -> None:
    @dataclass(frozen=True)
    class Unknown(AddressPolicy):
        async def resolve(self, host: str, port: int) -> list[str]:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async with Sender(Unknown()) as sender:
        attempt = await send(sender, script.url("/ok", host="nowhere.example"))
    assert (attempt.outcome, attempt.error) == (Outcome.CONNECTION_ERROR, "DNS lookup failed (gaierror)")


async def test_a_name_with_several_addresses_is_served_by_one_that_answers(script: Scripted) -> None:
    @dataclass(frozen=True)
    class Two(AddressPolicy):
        async def resolve(self, host: str, port: int) -> list[str]:
            return ["127.0.0.2", "127.0.0.1"]  # nothing listens on the first: refused

    async with Sender(Two(allow=LOOPBACK.allow)) as sender:
        attempt = await send(sender, script.url("/ok", host="hooks.example"))
    assert (attempt.outcome, attempt.response_body) == (Outcome.SUCCESS, b"ok")


# --- https -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    key_type = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"]
    subject = ["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
    files = ["-keyout", str(key), "-out", str(cert)]
    subprocess.run(["openssl", "req", "-x509", *key_type, *subject, *files], check=True, capture_output=True)
    return cert, key


@pytest.fixture
async def tls_script(certificate: tuple[Path, Path]) -> AsyncIterator[Scripted]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    scripted = Scripted({"/ok": OK})
    server = await serve(scripted, tls=context)
    try:
        yield scripted
    finally:
        server.close()


async def test_https_verifies_the_certificate_against_the_urls_host(
    tls_script: Scripted, certificate: tuple[Path, Path]
) -> None:
    trusting = ssl.create_default_context(cafile=str(certificate[0]))
    async with Sender(Pinned(allow=LOOPBACK.allow), ssl_context=trusting) as sender:
        by_name = await send(sender, tls_script.url("/ok", host="localhost", scheme="https"))
        by_address = await send(sender, tls_script.url("/ok", scheme="https"))
        again = await send(sender, tls_script.url("/ok", host="localhost", scheme="https"))
        wrong_name = await send(sender, tls_script.url("/ok", host="hooks.example", scheme="https"))
    assert (by_name.outcome, by_name.response_body) == (Outcome.SUCCESS, b"ok")
    assert (by_address.outcome, again.outcome) == (Outcome.SUCCESS, Outcome.SUCCESS)
    assert (wrong_name.outcome, wrong_name.error) == (Outcome.CONNECTION_ERROR, "SSLCertVerificationError")
    assert tls_script.requests[0].header("Host") == [f"localhost:{tls_script.port}"]
    # One connection per origin: the name's and the address's, each reused by its own URLs.
    assert [request.connection for request in tls_script.requests] == [0, 1, 0]


async def test_https_by_default_trusts_only_the_systems_authorities(tls_script: Scripted) -> None:
    async with Sender(Pinned(allow=LOOPBACK.allow)) as sender:
        attempt = await send(sender, tls_script.url("/ok", host="localhost", scheme="https"))
    assert (attempt.outcome, attempt.status, attempt.error) == (
        Outcome.CONNECTION_ERROR,
        None,
        "SSLCertVerificationError",
    )
    assert tls_script.requests == []
