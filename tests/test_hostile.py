"""Hostile callback bodies and connections against a real ``cos-relay serve`` process: each gets its status in
bounded time without the server's memory growing. (Simple bad bodies are in test_receive*.py; here is what
tries to make the parser fetch, blow up or hang.)"""

from __future__ import annotations

import contextlib
import gzip
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from relay.store.records import Target
from tests.chaos import harness
from tests.conftest import ADMIN_TOKEN, CALLBACK_TOKEN, DATA, callback_url
from tests.live import ProcessServer, wait_until
from tests.procfs import MIB, peak_rss, reset_peak_rss, rss

#: Slow tier: a real gateway process under hostile input, waiting out its timeouts.
pytestmark = pytest.mark.slow

TRANSCODE = (DATA / "samples" / "transcode_success.xml").read_bytes()
JSON_SAMPLE = (DATA / "samples" / "json" / "transcode_task_finish.json").read_bytes()
BODY_TIMEOUT = 2.0
#: Generous for a loaded 2-core machine; the real figures are a few milliseconds.
SECONDS = 10.0


class Listener:
    """A TCP port on loopback that counts every connection made to it (nothing should ever connect)."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = int(self._sock.getsockname()[1])
        self._peers: list[int] = []  # the client port of every connection accepted
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                conn, peer = self._sock.accept()
                self._peers.append(int(peer[1]))
                conn.close()

    @property
    def connections(self) -> int:
        return len(self._peers)

    def settle(self) -> None:
        """Return once every connection made before this call is counted: connect, and wait until this
        connection is accepted (connections are accepted in order), then forget it."""
        with socket.create_connection(("127.0.0.1", self.port)) as marker:
            port = int(marker.getsockname()[1])
            wait_until(lambda: port in self._peers, timeout=SECONDS, what="the marker connection accepted")
        self._peers.remove(port)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()


@dataclass
class Gateway:
    server: ProcessServer
    baseline_rss: int

    @property
    def pid(self) -> int:
        return self.server.pid


@pytest.fixture(scope="module")
def gateway(module_database: Target) -> Iterator[Gateway]:
    db = module_database
    args = ("--callback-token", CALLBACK_TOKEN, "--admin-token", ADMIN_TOKEN, "--log-level", "warning")
    server = ProcessServer(db, args=args, env={"RELAY_BODY_TIMEOUT": str(BODY_TIMEOUT)}).start()
    with httpx.Client(base_url=server.url) as client:  # warm up: schema, parser, first commit
        assert client.post(callback_url(), content=TRANSCODE).status_code == 200
    yield Gateway(server, rss(server.pid))
    server.stop()


@pytest.fixture(scope="module")
def figures() -> Iterator[dict[str, dict[str, object]]]:
    """Each case's status, time and memory, kept in tests/chaos/results/hostile_inputs.json for the docs."""
    found: dict[str, dict[str, object]] = {}
    yield found
    harness.record_cases("hostile_inputs", found)


def note(figures: dict[str, dict[str, object]], case: str, outcome: Outcome, gateway: Gateway) -> None:
    figures[harness.case(case, gateway.server.db_path)] = {
        "status": outcome.status,
        "seconds": round(outcome.seconds, 3),
        "rss_growth_mib": round(outcome.rss_growth / MIB, 1),
        "rss_peak_mib": round(outcome.rss_peak / MIB, 1),
    }


@pytest.fixture(scope="module")
def listener() -> Iterator[Listener]:
    found = Listener()
    yield found
    found.close()


@dataclass(frozen=True)
class Outcome:
    status: int
    seconds: float
    #: How far the server's resident memory rose, at its peak, above what it was just before the request.
    rss_growth: int
    #: The server's peak resident memory while handling the request.
    rss_peak: int


#: No request may take the server past this, whatever came before it.
RSS_CEILING = 512 * MIB


def send(gateway: Gateway, body: bytes, headers: dict[str, str] | None = None) -> Outcome:
    before = rss(gateway.pid)
    assert reset_peak_rss(gateway.pid), "cannot reset the peak RSS counter (Linux 4.0+, same user or root)"
    started = time.monotonic()
    with httpx.Client(base_url=gateway.server.url, timeout=60) as client:
        response = client.post(callback_url(), content=body, headers=headers or {"Content-Type": "application/xml"})
    seconds = time.monotonic() - started
    peak = peak_rss(gateway.pid)
    assert peak < RSS_CEILING, f"the server grew to {peak / MIB:.0f} MiB"
    return Outcome(response.status_code, seconds, peak - before, peak)


def xml(prolog: str, root: str = "<Response><NonExistJobIds>&x;</NonExistJobIds></Response>") -> Callable[[int], bytes]:
    return lambda port: f'<?xml version="1.0"?>{prolog.replace("PORT", str(port))}{root}'.encode()


def billion_laughs(levels: int = 10) -> bytes:
    entities = ['<!ENTITY l0 "lol">'] + [f'<!ENTITY l{n} "{f"&l{n - 1};" * 10}">' for n in range(1, levels)]
    return f"<!DOCTYPE Response [{''.join(entities)}]><Response>&l{levels - 1};</Response>".encode()


def quadratic_blowup() -> bytes:
    """One 100 KB entity referenced 10,000 times: 1 MB on the wire, 1 GB expanded."""
    entity = "a" * 100_000
    return f'<!DOCTYPE Response [<!ENTITY a "{entity}">]><Response>{"&a;" * 10_000}</Response>'.encode()


def many_attributes(total: int = 10_000_000) -> bytes:
    attribute = ' a{:07d}="xxxxxxxxxxxxxxxx"'
    count = total // len(attribute.format(0))
    return ("<Response" + "".join(attribute.format(n) for n in range(count)) + "/>").encode()


def gzip_bomb(expanded: int = 1 << 30) -> bytes:
    """~1 MB of gzip members that inflate to ``expanded`` bytes of zeros."""
    member = gzip.compress(bytes(1 << 20), compresslevel=9)
    return member * (expanded >> 20)


NETWORK_CASES: dict[str, tuple[Callable[[int], bytes], int]] = {
    "external-general-entity": (xml('<!DOCTYPE Response [<!ENTITY x SYSTEM "http://127.0.0.1:PORT/x">]>'), 400),
    "external-parameter-entity": (
        xml('<!DOCTYPE Response [<!ENTITY % p SYSTEM "http://127.0.0.1:PORT/x.dtd"> %p;]>'),
        400,
    ),
    "external-dtd-subset": (xml('<!DOCTYPE Response SYSTEM "http://127.0.0.1:PORT/x.dtd">', "<Response/>"), 400),
    "public-dtd-subset": (
        xml('<!DOCTYPE Response PUBLIC "-//X//Y" "http://127.0.0.1:PORT/x.dtd">', "<Response/>"),
        400,
    ),
    "xinclude": (
        xml(
            "",
            '<Response xmlns:xi="http://www.w3.org/2001/XInclude"><NonExistJobIds>j1</NonExistJobIds>'
            '<xi:include href="http://127.0.0.1:PORT/x" parse="text"/></Response>',
        ),
        422,
    ),
    "schema-location-hint": (
        xml(
            "",
            '<Response xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
            ' xsi:noNamespaceSchemaLocation="http://127.0.0.1:PORT/x.xsd"><NonExistJobIds>j1</NonExistJobIds>'
            "</Response>",
        ),
        422,
    ),
}


@pytest.mark.parametrize("case", sorted(NETWORK_CASES))
def test_references_to_the_network_are_refused_and_never_fetched(
    case: str, gateway: Gateway, listener: Listener, figures: dict[str, dict[str, object]]
) -> None:
    make, status = NETWORK_CASES[case]
    outcome = send(gateway, make(listener.port))
    note(figures, case, outcome, gateway)
    assert outcome.status == status
    assert outcome.seconds < SECONDS
    assert outcome.rss_growth < 32 * MIB
    listener.settle()
    assert listener.connections == 0


def declared(encoding: bytes, body: bytes) -> bytes:
    """``body`` (which declares utf-8) declaring ``encoding`` instead."""
    return body.replace(b'encoding="utf-8"', b'encoding="' + encoding + b'"', 1)


# name -> (body, Content-Type, expected status, largest RSS growth in MiB)
BODY_CASES: dict[str, tuple[Callable[[], bytes], str, int, int]] = {
    "billion-laughs": (billion_laughs, "application/xml", 400, 32),
    "quadratic-blowup": (quadratic_blowup, "application/xml", 400, 48),
    "nested-100000-elements": (
        lambda: b"<Response>" + b"<a>" * 100_000 + b"</a>" * 100_000 + b"</Response>",
        "application/xml",
        400,
        48,
    ),
    "nested-100000-json-arrays": (lambda: b"[" * 100_000 + b"]" * 100_000, "application/json", 400, 32),
    "nested-100000-json-objects": (lambda: b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "application/json", 400, 32),
    # Well-formed, but more attributes than the node limit: refused before lxml builds anything (it was
    # parsed whole, ~17x its size, before the schema refused its attributes with 422).
    "ten-mb-of-attributes": (many_attributes, "application/xml", 413, 48),
    "one-ten-mb-attribute": (
        lambda: b'<Response a="' + b"x" * 10_000_001 + b'"/>',
        "application/xml",
        400,
        200,
    ),
    "utf8-overlong-slash": (lambda: TRANSCODE.replace(b"uploads/", b"uploads\xc0\xaf"), "application/xml", 400, 32),
    "utf8-lone-surrogate": (lambda: TRANSCODE.replace(b"uploads/", b"\xed\xa0\x80/"), "application/xml", 400, 32),
    "utf8-truncated-at-the-end": (lambda: TRANSCODE + b"\xe4\xb8", "application/xml", 400, 32),
    "utf8-ff-byte-in-json": (lambda: JSON_SAMPLE.replace(b"Success", b"Succ\xffess", 1), "application/json", 400, 32),
    "utf16-le-with-bom": (lambda: "\ufeff<Response/>".encode("utf-16-le"), "application/xml", 400, 32),
    "utf16-be-json-with-bom": (lambda: JSON_SAMPLE.decode().encode("utf-16"), "application/json", 400, 32),
    "utf32-xml": (lambda: TRANSCODE.decode().encode("utf-32"), "application/xml", 400, 32),
    # Declared other encodings: libxml2 used to follow the declaration (or guess UTF-16 from the first
    # bytes) and store what it decoded. Whatever a body declares, only UTF-8 is read, so these are refused.
    "utf16-le-declared-without-bom": (
        lambda: TRANSCODE.replace(b"utf-8", b"UTF-16", 1).decode().encode("utf-16-le"),
        "application/xml",
        400,
        32,
    ),
    # "+ADE-" is UTF-7 for "1": read as UTF-7, this body names job j0000001, a job its bytes do not name.
    "utf7-declared": (
        lambda: (
            b'<?xml version="1.0" encoding="UTF-7"?><Response><NonExistJobIds>j000000+ADE-</NonExistJobIds></Response>'
        ),
        "application/xml",
        400,
        32,
    ),
    "latin1-declared-over-utf8-bytes": (
        lambda: declared(b"ISO-8859-1", TRANSCODE.replace(b"uploads/", "café/".encode())),
        "application/xml",
        400,
        32,
    ),
    "nul-first": (lambda: b"\x00" + TRANSCODE, "application/xml", 400, 32),
    "nul-in-element-name": (lambda: TRANSCODE.replace(b"<Tag>", b"<T\x00ag>"), "application/xml", 400, 32),
    "nul-raw-in-json-string": (lambda: JSON_SAMPLE.replace(b"Success", b"Succ\x00ess", 1), "application/json", 400, 32),
    "nul-escaped-in-json-string": (
        lambda: JSON_SAMPLE.replace(b"Success", b"Succ\\u0000ess", 1),
        "application/json",
        422,
        32,
    ),
    "control-character-escaped-in-json-key": (
        lambda: JSON_SAMPLE.replace(b'"Tag"', b'"T\\u0001ag"', 1),
        "application/json",
        422,
        32,
    ),
}


@pytest.mark.parametrize("case", sorted(BODY_CASES))
def test_hostile_bodies_get_their_status_quickly_in_bounded_memory(
    case: str, gateway: Gateway, figures: dict[str, dict[str, object]]
) -> None:
    make, content_type, status, mib = BODY_CASES[case]
    outcome = send(gateway, make(), {"Content-Type": content_type})
    note(figures, case, outcome, gateway)
    assert outcome.status == status
    assert outcome.seconds < SECONDS
    assert outcome.rss_growth < mib * MIB, f"{outcome.rss_growth / MIB:.0f} MiB"


@pytest.mark.parametrize("encoding", [b"UTF-8", b"utf-8", b"utf8", None])
def test_bodies_that_declare_utf8_or_nothing_are_still_accepted(encoding: bytes | None, gateway: Gateway) -> None:
    body = declared(encoding, TRANSCODE) if encoding else TRANSCODE.split(b"?>", 1)[1]
    assert send(gateway, body).status == 200


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip", "GZIP", "deflate", "br", "gzip, identity", "identity, gzip"])
def test_compressed_bodies_are_refused_with_415_without_being_inflated(
    encoding: str, gateway: Gateway, figures: dict[str, dict[str, object]]
) -> None:
    outcome = send(gateway, gzip_bomb(), {"Content-Type": "application/xml", "Content-Encoding": encoding})
    note(figures, f"gzip-bomb-1GiB ({encoding})", outcome, gateway)
    assert outcome.status == 415
    assert outcome.seconds < SECONDS
    assert outcome.rss_growth < 32 * MIB  # 1 MB on the wire; 1 GiB if it were ever inflated


# -- connections, on raw sockets -------------------------------------------------------------------


def exchange(port: int, data: bytes, *, half_close: bool = False, timeout: float = 15) -> tuple[bytes, float]:
    """Send ``data``, then read until the server closes; returns what it sent and how long that took."""
    started = time.monotonic()
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
    return received, time.monotonic() - started


@contextlib.contextmanager
def bounded_memory(gateway: Gateway, mib: int = 32) -> Iterator[None]:
    """The server's peak RSS while the block runs stays within ``mib`` of what it was before."""
    before = rss(gateway.pid)
    assert reset_peak_rss(gateway.pid)
    yield
    growth = peak_rss(gateway.pid) - before
    assert growth < mib * MIB, f"{growth / MIB:.0f} MiB"


def head(length: int | str | None, extra: str = "") -> bytes:
    lines = [f"POST {callback_url()} HTTP/1.1", "Host: localhost", "Content-Type: application/xml"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


def stored_jobs(gateway: Gateway) -> int:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(base_url=gateway.server.url, headers=headers) as client:
        return len(client.get("/api/jobs", params={"limit": "500"}).json()["items"])


def fresh(number: int) -> bytes:
    return TRANSCODE.replace(b"j7c12d4be4c935a96bfe3fb23d1a491e9", f"j{number:032x}".encode())


def test_content_length_longer_than_the_body_times_out_with_408(gateway: Gateway) -> None:
    body = fresh(1)
    before = stored_jobs(gateway)
    with bounded_memory(gateway):
        answer, seconds = exchange(gateway.server.port, head(len(body) + 100) + body)
    assert answer.startswith(b"HTTP/1.1 408")
    assert seconds < BODY_TIMEOUT + SECONDS
    assert stored_jobs(gateway) == before


def test_content_length_longer_than_the_body_then_end_of_stream_stores_nothing(gateway: Gateway) -> None:
    body = fresh(2)
    before = stored_jobs(gateway)
    with bounded_memory(gateway):
        answer, seconds = exchange(gateway.server.port, head(len(body) + 100) + body, half_close=True)
    assert not answer.startswith(b"HTTP/1.1 200")
    assert seconds < SECONDS
    assert stored_jobs(gateway) == before


def test_content_length_shorter_than_the_body_never_acknowledges_a_truncated_callback(gateway: Gateway) -> None:
    body = fresh(3)
    before = stored_jobs(gateway)
    with bounded_memory(gateway):
        answer, seconds = exchange(gateway.server.port, head(len(body) - 100) + body)
    assert b"HTTP/1.1 200" not in answer
    assert answer.startswith(b"HTTP/1.1 400")
    assert seconds < SECONDS
    assert stored_jobs(gateway) == before


@pytest.mark.parametrize(
    "bad_head",
    [
        head(-5),
        head("12abc"),
        head("0x10"),
        head(10, f"Content-Length: {len(TRANSCODE)}\r\n"),
        head(10, "Transfer-Encoding: chunked\r\n"),
        head(None, "Transfer-Encoding: gzip, chunked\r\n"),
    ],
    ids=["negative", "junk", "hex", "two-different", "with-chunked", "gzip-transfer-coding"],
)
def test_malformed_or_ambiguous_lengths_get_400_and_store_nothing(bad_head: bytes, gateway: Gateway) -> None:
    before = stored_jobs(gateway)
    with bounded_memory(gateway):
        answer, seconds = exchange(gateway.server.port, bad_head + fresh(4))
    assert answer.startswith(b"HTTP/1.1 400") or answer.startswith(b"HTTP/1.1 415"), answer[:100]
    assert seconds < SECONDS
    assert stored_jobs(gateway) == before


def test_slowloris_connections_are_timed_out_and_freed_while_normal_callbacks_get_through(
    gateway: Gateway, figures: dict[str, dict[str, object]]
) -> None:
    """Ten connections trickle a body and ten trickle their headers, one byte every half second; a normal
    callback still gets its 200 promptly, and every slow connection gets 408 and is closed."""
    port = gateway.server.port
    fds_before = len(list(Path(f"/proc/{gateway.pid}/fd").iterdir()))
    body = fresh(5)
    answers: list[bytes] = []
    lock = threading.Lock()
    begun = threading.Semaphore(0)

    def trickle(start: bytes, rest: bytes) -> None:
        received = b""
        with socket.create_connection(("127.0.0.1", port), timeout=BODY_TIMEOUT + SECONDS) as sock:
            sock.sendall(start)
            begun.release()
            for byte in rest[:100]:  # bounded: 50 s of trickling at most
                time.sleep(0.5)
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    break  # the server closed the connection on us
            with contextlib.suppress(OSError):
                while chunk := sock.recv(65536):
                    received += chunk
        with lock:
            answers.append(received)

    slow = [threading.Thread(target=trickle, args=(head(len(body)), body)) for _ in range(10)]
    slow += [threading.Thread(target=trickle, args=(head(len(body))[:1], head(len(body))[1:])) for _ in range(10)]
    before = rss(gateway.pid)
    assert reset_peak_rss(gateway.pid)
    for thread in slow:
        thread.start()
    for _ in slow:  # every trickler has begun before the normal callbacks go
        assert begun.acquire(timeout=10), "a trickler could not connect"
    latencies = []
    with httpx.Client(base_url=gateway.server.url, timeout=30) as client:
        for number in range(6):
            started = time.monotonic()
            assert client.post(callback_url(), content=fresh(100 + number)).status_code == 200
            latencies.append(time.monotonic() - started)
            time.sleep(0.5)
    for thread in slow:
        thread.join(timeout=BODY_TIMEOUT + 2 * SECONDS)
    growth = peak_rss(gateway.pid) - before
    figures[harness.case("slowloris (10 body + 10 head tricklers)", gateway.server.db_path)] = {
        "statuses": sorted({answer[9:12].decode() for answer in answers}),
        "normal_callback_seconds_max": round(max(latencies), 3),
        "body_timeout_seconds": BODY_TIMEOUT,
        "rss_growth_mib": round(growth / MIB, 1),
    }
    assert max(latencies) < 2.0, latencies
    assert growth < 32 * MIB
    assert len(answers) == 20
    assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers), {answer[:40] for answer in answers}
    wait_until(
        lambda: len(list(Path(f"/proc/{gateway.pid}/fd").iterdir())) <= fds_before + 2,
        timeout=10,
        what="the tricklers' connections closed",
    )


def test_a_connection_that_never_sends_a_byte_is_closed_after_the_timeout(gateway: Gateway) -> None:
    answer, seconds = exchange(gateway.server.port, b"")
    assert answer == b""  # closed without an answer: there was no request to answer
    assert BODY_TIMEOUT * 0.9 <= seconds < BODY_TIMEOUT + SECONDS
