"""Connection-level defenses of a real ``cos-relay serve`` process, probed with raw sockets: every phase of a
connection has a deadline, request heads are bounded, a client holding as many sockets as it can does not starve
real callbacks, and neither the Host header nor an untrusted X-Forwarded-For ends up in a response or a record."""

from __future__ import annotations

import contextlib
import re
import resource
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from relay.store.records import Target
from tests.chaos.harness import case, record_cases
from tests.conftest import ADMIN_TOKEN, CALLBACK_TOKEN, DATA, callback_url
from tests.live import ProcessServer, wait_until
from tests.procfs import MIB, peak_rss, reset_peak_rss, rss

#: Slow tier: a real gateway process, probed connection by connection up to each deadline.
pytestmark = pytest.mark.slow

TRANSCODE = (DATA / "samples" / "transcode_success.xml").read_bytes()
BODY_TIMEOUT = 2.0
KEEPALIVE = 1.0
#: Generous bounds for a loaded 2-core machine; the deadlines themselves are a few seconds.
SECONDS = 10.0
TOKENS = ("--callback-token", CALLBACK_TOKEN, "--admin-token", ADMIN_TOKEN, "--log-level", "error")


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def fresh(number: int) -> bytes:
    return TRANSCODE.replace(b"j7c12d4be4c935a96bfe3fb23d1a491e9", f"j{number:032x}".encode())


@pytest.fixture(scope="module")
def server(module_database: Target) -> Iterator[ProcessServer]:
    db = module_database
    # Thousands of wrong tokens probe the connections here, not the guessing throttle (tests/test_edge.py does).
    env = {"RELAY_BODY_TIMEOUT": str(BODY_TIMEOUT), "RELAY_KEEPALIVE_TIMEOUT": str(KEEPALIVE), "RELAY_GUESS_LIMIT": "0"}
    started = ProcessServer(db, args=TOKENS, env=env).start()
    with httpx.Client(base_url=started.url) as client:  # warm up: schema, parser, first commit
        assert client.post(callback_url(), content=TRANSCODE).status_code == 200
    yield started
    started.stop()


@pytest.fixture(scope="module")
def figures() -> Iterator[dict[str, dict[str, object]]]:
    """What each attack cost the server, kept in tests/chaos/results/connections.json for the docs (the
    PostgreSQL run's in connections_postgres.json)."""
    found: dict[str, dict[str, object]] = {}
    yield found
    record_cases("connections", found)


def connect(port: int, timeout: float = SECONDS) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_answer(sock: socket.socket) -> bytes:
    """One response head (and whatever came with it)."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``sock`` within ``seconds`` (whatever else it sends meanwhile)."""
    sock.settimeout(seconds)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return False


# -- 1. deadlines in every phase --------------------------------------------------------------------------------

#: Requests the app answers without reading their body, each announcing a body of 1,000 bytes.
UNREAD_BODIES = {
    "401-wrong-token": f"POST {callback_url('wrong')} HTTP/1.1",
    "healthz": "GET /healthz HTTP/1.1",
    "404": "POST /nowhere HTTP/1.1",
    "405": "POST /healthz HTTP/1.1",
}


@pytest.mark.parametrize("case", sorted(UNREAD_BODIES))
def test_a_body_byte_after_an_answer_that_left_the_body_unread_does_not_hold_the_connection(
    case: str, server: ProcessServer
) -> None:
    with connect(server.port) as sock:
        sock.sendall(f"{UNREAD_BODIES[case]}\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n".encode())
        answer = read_answer(sock)
        assert answer.startswith(b"HTTP/1.1 "), answer
        sock.sendall(b"x")  # uvicorn cancels its keep-alive timer on this byte and never re-arms it
        assert closed_within(sock, BODY_TIMEOUT + KEEPALIVE + SECONDS)


def test_bytes_between_requests_do_not_keep_an_idle_connection_open(server: ProcessServer) -> None:
    with connect(server.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert read_answer(sock).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        closed = False
        for _ in range(int(SECONDS / (KEEPALIVE / 2))):  # bounded: a blank line every half keep-alive
            try:
                sock.sendall(b"\r\n")
            except OSError:
                closed = True
                break
            if closed_within(sock, KEEPALIVE / 2):
                closed = True
                break
        assert closed, "the connection was still open after a blank line every half keep-alive period"
        assert time.monotonic() - started < KEEPALIVE + SECONDS


def test_a_body_that_trickles_after_a_refusal_is_cut_off(server: ProcessServer) -> None:
    """A 401 to a 1 MB body, then one byte every 0.2 s: each byte used to hold the connection for good."""
    with connect(server.port) as sock:
        sock.sendall(
            f"POST {callback_url('wrong')} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000000\r\n\r\n".encode()
        )
        assert read_answer(sock).startswith(b"HTTP/1.1 401")
        started = time.monotonic()
        closed = False
        for _ in range(int(SECONDS / 0.2)):
            try:
                sock.sendall(b"x")
            except OSError:
                closed = True
                break
            if closed_within(sock, 0.2):
                closed = True
                break
        assert closed
        assert time.monotonic() - started < BODY_TIMEOUT + SECONDS


def test_a_refused_callback_whose_body_is_all_sent_still_gets_its_answer_and_keep_alive(server: ProcessServer) -> None:
    """The deadline on an unread body does not cost well-behaved clients anything."""
    with httpx.Client(base_url=server.url, timeout=SECONDS) as client:
        assert client.post(callback_url("wrong"), content=TRANSCODE).status_code == 401
        assert client.post(callback_url(), content=fresh(1)).status_code == 200
        assert client.get("/healthz").status_code == 200


def test_pipelined_requests_are_all_answered_in_order(server: ProcessServer) -> None:
    """Heads are fed to the parser in pieces; requests sent back to back in one write still all get answers."""
    requests = (
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n" * 3 + b"GET /nowhere HTTP/1.1\r\nHost: localhost\r\n\r\n"
    )
    with connect(server.port) as sock:
        sock.sendall(requests)
        received = b""
        while received.count(b"HTTP/1.1 ") < 4:
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
    statuses = re.findall(rb"HTTP/1\.1 (\d{3})", received)
    assert statuses == [b"200", b"200", b"200", b"404"]


TCP_CLOSE = 7  # tcpi_state, the first byte of struct tcp_info


def tcp_closed(sock: socket.socket) -> bool:
    """Whether the peer reset or closed the connection, found without reading what it sent."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] == TCP_CLOSE


def test_a_client_that_pipelines_requests_and_never_reads_the_answers_is_cut_off(server: ProcessServer) -> None:
    # 800 scrapes of ~7.5 KB: more than a small receive window, the server's largest send buffer (4 MiB here)
    # and its transport's high-water mark together, so the server's writing pauses for good.
    requests = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept-Encoding: identity\r\n\r\n" * 800
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
    sock.connect(("127.0.0.1", server.port))

    def send() -> None:
        with contextlib.suppress(OSError):  # the server stops reading, then resets the connection
            sock.sendall(requests)

    sender = threading.Thread(target=send, daemon=True)
    with sock:
        sender.start()
        wait_until(lambda: tcp_closed(sock), timeout=BODY_TIMEOUT + 3 * SECONDS, what="the reader cut off")
        sender.join(timeout=SECONDS)
    with httpx.Client(base_url=server.url) as client:
        assert client.get("/healthz").status_code == 200


def test_a_second_request_whose_head_stalls_gets_408_after_the_first_answer(server: ProcessServer) -> None:
    # Sent in one write: a pause between the two could outlast the 1 s keep-alive on a loaded machine.
    with connect(server.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\nGET /healthz HTTP/1.1\r\nHo")
        sock.settimeout(BODY_TIMEOUT + SECONDS)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert re.findall(rb"HTTP/1\.1 (\d{3})", received) == [b"200", b"408"]


def test_two_thousand_connections_holding_unread_bodies_are_all_released(
    server: ProcessServer, figures: dict[str, dict[str, object]]
) -> None:
    """The issue's probe: 2,000 sockets, each "a 401, then one more body byte"; the server's descriptors come back."""
    baseline = open_fds(server.pid)
    attackers: list[socket.socket] = []
    try:
        for _ in range(2000):
            sock = connect(server.port)
            attackers.append(sock)
            sock.sendall(
                f"POST {callback_url('wrong')} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n".encode()
            )
        for sock in attackers:
            assert read_answer(sock).startswith(b"HTTP/1.1 401")
            sock.sendall(b"x")
        held = open_fds(server.pid)
        started = time.monotonic()
        # The attacker still holds its sockets open; the server has closed its side of all of them.
        wait_until(
            lambda: open_fds(server.pid) <= baseline + 10,
            timeout=BODY_TIMEOUT + SECONDS,
            what="the server's descriptors back near baseline",
        )
        figures[case("2000 sockets: 401, then one more body byte", server.db_path)] = {
            "fds_before": baseline,
            "fds_after_the_last_byte": held,
            "seconds_until_released": round(time.monotonic() - started, 2),
            "fds_after": open_fds(server.pid),
        }
    finally:
        for sock in attackers:
            sock.close()


# -- 2. bounded request heads --------------------------------------------------------------------------------


def test_a_header_line_over_8_kib_gets_431(server: ProcessServer) -> None:
    with connect(server.port) as sock:
        sock.sendall(f"POST {callback_url()} HTTP/1.1\r\nHost: localhost\r\nX-Big: {'a' * 9000}\r\n\r\n".encode())
        assert read_answer(sock).startswith(b"HTTP/1.1 431")
        assert closed_within(sock, SECONDS)


def test_a_url_over_8_kib_gets_431(server: ProcessServer) -> None:
    with connect(server.port) as sock:
        sock.sendall(f"GET /healthz?{'a' * 9000} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        assert read_answer(sock).startswith(b"HTTP/1.1 431")


def test_a_head_over_64_kib_of_short_headers_gets_431(server: ProcessServer) -> None:
    headers = "".join(f"X-H{n}: {'a' * 100}\r\n" for n in range(700))  # ~75 KB, every line short
    with connect(server.port) as sock:
        sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n".encode())
        assert read_answer(sock).startswith(b"HTTP/1.1 431")


def test_a_large_head_under_the_limits_is_served(server: ProcessServer) -> None:
    headers = {f"X-H{n}": "a" * 7000 for n in range(8)}  # ~56 KB, each line under 8 KiB
    with httpx.Client(base_url=server.url, timeout=SECONDS) as client:
        assert client.post(callback_url(), content=fresh(2), headers=headers).status_code == 200


def send_huge_header(port: int, size: int, answers: list[bytes], lock: threading.Lock) -> None:
    """One header ``size`` bytes long, sent until the server answers or closes; records the answer."""
    chunk = b"a" * 262_144
    answer = b""
    with contextlib.suppress(OSError), connect(port, timeout=30) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: ")
        for _ in range(size // len(chunk)):  # bounded by size
            sock.sendall(chunk)
        sock.sendall(b"\r\n\r\n")
        answer = read_answer(sock)
    if not answer:
        # The server answered and closed while we were still sending: the answer is in our receive buffer,
        # unless the close reset it away.
        answer = b"(closed)"
    with lock:
        answers.append(answer)


def test_eight_parallel_50_mb_heads_are_refused_without_stalling_the_server_or_growing_it(
    server: ProcessServer, figures: dict[str, dict[str, object]]
) -> None:
    """Before, these took the server from 74 to 399 MiB and stalled /healthz for seconds."""
    answers: list[bytes] = []
    lock = threading.Lock()
    threads = [threading.Thread(target=send_huge_header, args=(server.port, 50 * MIB, answers, lock)) for _ in range(8)]
    before = rss(server.pid)
    assert reset_peak_rss(server.pid)
    for thread in threads:
        thread.start()
    latencies = []
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for _ in range(10):
            started = time.monotonic()
            assert client.get("/healthz").status_code == 200
            latencies.append(time.monotonic() - started)
    for thread in threads:
        thread.join(timeout=60)
    growth = peak_rss(server.pid) - before
    figures[case("8 parallel 50 MB request heads", server.db_path)] = {
        "answers": sorted({answer[:12].decode() for answer in answers}),
        "rss_before_mib": round(before / MIB, 1),
        "rss_growth_mib": round(growth / MIB, 1),
        "healthz_seconds_max": round(max(latencies), 3),
    }
    assert growth < 32 * MIB, f"{growth / MIB:.0f} MiB"
    assert max(latencies) < 2.0, latencies
    assert len(answers) == 8
    assert all(answer.startswith(b"HTTP/1.1 431") or answer == b"(closed)" for answer in answers), answers


def test_a_huge_head_is_answered_431_as_soon_as_it_crosses_the_limit(server: ProcessServer) -> None:
    """The answer comes while the client is still sending (it never finishes its head here)."""
    with connect(server.port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 70_000)
        assert read_answer(sock).startswith(b"HTTP/1.1 431")


# -- starvation: a client holding as many sockets as it can -----------------------------------------------------

NOFILE = 256


def low_nofile() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


class Attacker:
    """Holds up to ``count`` sockets to ``port``, half doing "a 401, then one more body byte", half trickling a
    request head, and opens a new one for each the server closes, until stopped (or ``seconds`` pass)."""

    def __init__(self, port: int, count: int, seconds: float) -> None:
        self.port = port
        self.count = count
        self.seconds = seconds
        self.opened = 0
        self.refused = 0
        self.held = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Attacker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.seconds + SECONDS)

    def _open(self, number: int) -> socket.socket | None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=0.5)
        except OSError:
            self.refused += 1
            return None
        self.opened += 1
        try:
            if number % 2:
                sock.sendall(
                    f"POST {callback_url('wrong')} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n".encode()
                )
                sock.settimeout(0.5)
                sock.recv(65536)
                sock.sendall(b"x")
            else:
                sock.sendall(b"POST /cos/callback HTTP/1.1\r\nHo")
        except OSError:
            sock.close()
            return None
        sock.setblocking(False)
        return sock

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        deadline = time.monotonic() + self.seconds
        number = 0
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                while len(selector.get_map()) < self.count and not self._stop.is_set():
                    number += 1
                    sock = self._open(number)
                    if sock is not None:
                        selector.register(sock, selectors.EVENT_READ)
                    if time.monotonic() > deadline:
                        break
                self.held = len(selector.get_map())
                for key, _ in selector.select(timeout=0.05):  # the server closed it (or answered): reopen
                    held = key.fileobj
                    assert isinstance(held, socket.socket)
                    with contextlib.suppress(OSError):
                        if held.recv(65536):
                            continue
                    selector.unregister(held)
                    held.close()
        finally:
            for key in list(selector.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr]
            selector.close()


def test_real_callbacks_are_served_while_a_client_holds_three_times_the_descriptor_limit_in_sockets(
    database: Target, figures: dict[str, dict[str, object]]
) -> None:
    # The flood's wrong tokens and the real callbacks both come from 127.0.0.1: no guessing throttle here.
    env = {"RELAY_BODY_TIMEOUT": str(BODY_TIMEOUT), "RELAY_GUESS_LIMIT": "0"}
    server = ProcessServer(database, args=TOKENS, env=env, preexec_fn=low_nofile).start()
    try:
        baseline = open_fds(server.pid)
        outcomes: list[tuple[int, int, float]] = []
        fds_peak = baseline
        with Attacker(server.port, 3 * NOFILE, seconds=40) as attacker:
            wait_until(lambda: attacker.opened >= 2 * NOFILE, timeout=30, what="the attacker at twice the limit")
            with httpx.Client(base_url=server.url, timeout=SECONDS) as client:
                for number in range(10):
                    started = time.monotonic()
                    callback = client.post(callback_url(), content=fresh(1000 + number)).status_code
                    health = client.get("/healthz").status_code
                    outcomes.append((callback, health, time.monotonic() - started))
                    fds_peak = max(fds_peak, open_fds(server.pid))
            opened, held = attacker.opened, attacker.held
        figures[case(f"starvation: {3 * NOFILE} sockets against RLIMIT_NOFILE {NOFILE}", database)] = {
            "attacker_sockets_opened": opened,
            "attacker_sockets_held_at_the_end": held,
            "server_fds_before": baseline,
            "server_fds_peak_sampled": fds_peak,
            "callback_and_healthz_seconds_max": round(max(seconds for *_, seconds in outcomes), 3),
            "statuses": sorted({f"{callback}/{health}" for callback, health, _ in outcomes}),
        }
        assert opened >= 2 * NOFILE
        assert all(callback == 200 and health == 200 for callback, health, _ in outcomes), outcomes
        assert max(seconds for *_, seconds in outcomes) < 5.0, outcomes
        wait_until(
            lambda: open_fds(server.pid) <= baseline + 10,
            timeout=BODY_TIMEOUT + SECONDS,
            what="the server's descriptors back near baseline",
        )
    finally:
        server.stop()


def test_upgrade_requests_are_answered_as_ordinary_requests_and_log_nothing(database: Target) -> None:
    server = ProcessServer(database, args=TOKENS[:-2]).start()  # info-level logs
    try:
        for _ in range(20):
            with connect(server.port) as sock:
                sock.sendall(
                    b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
                )
                assert read_answer(sock).startswith(b"HTTP/1.1 200 "), "answered as a plain GET"
    finally:
        output = server.stop()
    assert "upgrade request" not in output.lower(), output[-2000:]


def test_the_open_file_limit_is_raised_to_the_hard_limit_at_start(database: Target) -> None:
    hard = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 4096)
    if hard <= NOFILE:
        pytest.skip(f"the hard limit on open files here is only {hard}")

    def soft_below_hard() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, hard))

    server = ProcessServer(database, args=TOKENS, preexec_fn=soft_below_hard).start()
    try:
        limits = Path(f"/proc/{server.pid}/limits").read_text()
        line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
        assert line.split()[3:5] == [str(hard), str(hard)], line
    finally:
        server.stop()


# -- what a client's headers may not decide -------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/cos/callback/", "/healthz/", "/api/jobs/"])
def test_a_path_with_a_trailing_slash_is_not_redirected_to_the_host_header(path: str, server: ProcessServer) -> None:
    with httpx.Client(base_url=server.url, timeout=SECONDS) as client:
        response = client.request(
            "GET" if path != "/cos/callback/" else "POST",
            path,
            params={"token": CALLBACK_TOKEN},
            content=fresh(3) if path == "/cos/callback/" else None,
            headers={"Host": "attacker.example", "Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
    # Refused for its Host before any route is looked at (tests/test_edge.py: with every host allowed, still
    # no redirect).
    assert response.status_code == 400
    assert "location" not in response.headers


def recorded_sources(url: str, count: int) -> list[str | None]:
    """The source address of the last ``count`` callbacks recorded, newest first."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(base_url=url, headers=headers, timeout=SECONDS) as client:
        items = client.get("/api/callbacks", params={"limit": str(count)}).json()["items"]
    return [item["source_addr"] for item in items]


FORGED = "<script>alert(1)</script>" + "a" * 5000


def test_x_forwarded_for_is_not_believed_by_default_even_from_loopback(server: ProcessServer) -> None:
    with httpx.Client(base_url=server.url, timeout=SECONDS) as client:
        for number, forwarded in enumerate([FORGED, "203.0.113.7"]):
            response = client.post(callback_url(), content=fresh(10 + number), headers={"X-Forwarded-For": forwarded})
            assert response.status_code == 200
    assert recorded_sources(server.url, 2) == ["127.0.0.1", "127.0.0.1"]


def test_from_a_configured_proxy_only_a_valid_forwarded_address_is_recorded(database: Target) -> None:
    env = {"RELAY_FORWARDED_ALLOW_IPS": "127.0.0.1"}
    server = ProcessServer(database, args=TOKENS, env=env).start()
    try:
        with httpx.Client(base_url=server.url, timeout=SECONDS) as client:
            for number, forwarded in enumerate(["203.0.113.7", FORGED, "2001:db8::1"]):
                response = client.post(
                    callback_url(), content=fresh(20 + number), headers={"X-Forwarded-For": forwarded}
                )
                assert response.status_code == 200
        assert recorded_sources(server.url, 3) == ["2001:db8::1", None, "203.0.113.7"]
    finally:
        server.stop()


def test_worker_processes_get_the_head_limit_and_the_trusted_proxies(database: Target) -> None:
    args = (*TOKENS, "--workers", "2", "--max-head", "4096", "--forwarded-allow-ips", "127.0.0.1")
    server = ProcessServer(database, args=args).start()
    try:
        for _ in range(4):  # whichever worker accepts the connection
            with connect(server.port) as sock:
                sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: {'a' * 5000}\r\n\r\n".encode())
                assert read_answer(sock).startswith(b"HTTP/1.1 431")
        with httpx.Client(base_url=server.url, timeout=SECONDS) as client:
            for number in range(4):
                headers = {"X-Forwarded-For": "198.51.100.9"}
                assert client.post(callback_url(), content=fresh(30 + number), headers=headers).status_code == 200
        assert recorded_sources(server.url, 4) == ["198.51.100.9"] * 4
    finally:
        server.stop()
