"""More of what COS (or someone pretending to be COS) can send: edge cases written from FORMAT.md."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from relay.app.factory import create_app
from relay.settings.table import Settings
from tests.conftest import ADMIN_TOKEN, DATA, callback_schema, callback_url
from tests.databases import locked
from tests.fuzz.mutate import edit_bytes
from tests.live import ThreadServer

TRANSCODE = (DATA / "samples" / "transcode_success.xml").read_bytes()
DOC = (DATA / "samples" / "doc_process_success.xml").read_bytes()
SAMPLES = [path.read_bytes() for path in sorted((DATA / "samples").glob("*.xml"))]


def post(client: httpx.Client, body: bytes, content_type: str = "application/xml") -> httpx.Response:
    return client.post(callback_url(), content=body, headers={"Content-Type": content_type})


def with_object(key_xml: str) -> bytes:
    return TRANSCODE.replace(b"uploads/2024/11/lecture-01.mov", key_xml.encode())


@pytest.mark.parametrize(
    ("key_xml", "stored"),
    [
        ("视频/课程 第一讲\uff08上\uff09.mov", "视频/课程 第一讲\uff08上\uff09.mov"),  # full-width brackets
        ("a&amp;b &lt;c&gt; &#34;d&#34; 'e' 100%25+x.mp4", "a&b <c> \"d\" 'e' 100%25+x.mp4"),
        ("/leading/slash.mp4", "/leading/slash.mp4"),
    ],
)
def test_object_keys_are_stored_exactly_as_cos_meant_them(
    key_xml: str, stored: str, client: httpx.Client, admin: httpx.Client
) -> None:
    assert post(client, with_object(key_xml)).status_code == 200
    job = admin.get("/api/jobs/j7c12d4be4c935a96bfe3fb23d1a491e9").json()
    assert job["input"]["object"] == stored  # never URL-decoded, never re-escaped


def test_two_megabyte_page_info_list_is_accepted(client: httpx.Client, admin: httpx.Client) -> None:
    page = "<PageInfo><PageNo>{n}</PageNo><TgtUri>doc/out/page-{n}.jpg</TgtUri></PageInfo>"
    pages = "".join(page.format(n=n) for n in range(1, 32000))
    body = DOC.replace(b"<PageInfo>", pages.encode() + b"<PageInfo>", 1)
    assert len(body) > 2_000_000
    assert post(client, body).status_code == 200
    root = body.split(b"<JobId>")[1].split(b"</JobId>")[0].decode()
    detail = admin.get(f"/api/jobs/{root}").json()["detail"]
    assert len(detail["Operation"]["DocProcessResult"]["PageInfo"]) >= 32000


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (TRANSCODE.replace(b"<Response>", b'<Response xmlns="http://example.com/ns">'), 422),
        (b'<?xml version="1.0"?><!DOCTYPE Response [<!ELEMENT Response ANY>]>' + TRANSCODE.split(b"?>", 1)[1], 400),
        (b'<!DOCTYPE Response [<!ENTITY a "x">]><Response><NonExistJobIds>&a;</NonExistJobIds></Response>', 400),
        (b"<Response><NonExistJobIds>&nbsp;</NonExistJobIds></Response>", 400),
        (TRANSCODE.replace(b"2024-11-05T10:12:03+0800", b"2024-02-30T10:12:03+0800"), 422),
        (TRANSCODE.replace(b"2024-11-05T10:12:03+0800", b"2023-02-29T10:12:03+0800"), 422),
        (TRANSCODE.replace(b"2024-11-05T10:12:03+0800", b"2024-11-05T25:12:03+0800"), 422),
        (TRANSCODE.replace(b"2024-11-05T10:12:03+0800", b"yesterday afternoon"), 422),
        (TRANSCODE.replace(b"<State>Success</State>", b"<State>success</State>"), 422),
        (b"<Response><EventName>TaskFinish</EventName></Response>", 422),
        (b"<Response/>", 422),
        (TRANSCODE + b"<Response/>", 400),
        (b"<Response><NonExistJobIds>j1</NonExistJobIds>\x00</Response>", 400),
        ("<?xml version='1.0' encoding='UTF-16'?><Response/>".encode("utf-16"), 400),
        (b"", 400),
        (b"   \n", 400),
        (b"<" * 100, 400),
        (b"<a>" * 100_000, 400),
        (b'{"EventName": "TaskFinish"}', 400),
    ],
    ids=[
        "namespaced-root",
        "benign-internal-dtd",
        "internal-entity",
        "undeclared-entity",
        "february-30",
        "not-a-leap-year",
        "hour-25",
        "free-text-time",
        "state-wrong-case",
        "no-payload",
        "empty-response",
        "two-roots",
        "nul-byte",
        "utf-16",
        "empty-body",
        "blank-body",
        "garbage",
        "nested-100000-deep",
        "json-with-xml-type",
    ],
)
def test_hostile_or_wrong_bodies_get_a_clear_4xx(body: bytes, status: int, client: httpx.Client) -> None:
    response = post(client, body)
    assert response.status_code == status, response.text
    assert response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b'{"EventName": "TaskFinish"}', 422),
        (b"[]", 422),
        (b'{"JobsDetail": [[1]]}', 422),
        (b'{"JobsDetail": {"bad name": "x"}}', 422),
        (b'{"EventName": "TaskFinish",', 400),
        (b"[" * 5000 + b"]" * 5000, 400),
    ],
)
def test_bad_json_bodies_get_400_or_422(body: bytes, status: int, client: httpx.Client) -> None:
    assert post(client, body, "application/json").status_code == status


_MUTATIONS = st.sampled_from(["delete", "duplicate", "insert", "replace"])


@hypothesis_settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    sample=st.sampled_from(SAMPLES),
    edits=st.lists(st.tuples(_MUTATIONS, st.integers(0, 10_000), st.binary(max_size=12)), min_size=1, max_size=4),
)
def test_mutated_samples_never_get_a_5xx(
    sample: bytes, edits: list[tuple[str, int, bytes]], client: httpx.Client
) -> None:
    response = post(client, edit_bytes(sample, edits))
    assert response.status_code in (200, 400, 415, 422), response.text


@pytest.fixture
def locked_gateway(settings: Settings) -> Iterator[ThreadServer]:
    server = ThreadServer(
        create_app(settings.replace(write_timeout=0.2, statement_timeout=0.3), schema=callback_schema())
    ).start()
    yield server
    server.stop()


def test_locked_database_gets_503_never_200_and_recovers(locked_gateway: ThreadServer, settings: Settings) -> None:
    with locked(settings.db_path), httpx.Client(base_url=locked_gateway.url, timeout=30) as client:
        response = post(client, TRANSCODE)
        assert response.status_code == 503
        assert response.headers["retry-after"]
        assert response.json()["error"] == "unavailable"
        ready = client.get("/readyz")
        assert ready.status_code == 503
    with httpx.Client(base_url=locked_gateway.url, timeout=30) as client:
        assert post(client, TRANSCODE).json() == {"status": "accepted"}
        assert client.get("/readyz").status_code == 200
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        job = client.get("/api/jobs/j7c12d4be4c935a96bfe3fb23d1a491e9", headers=headers).json()
        assert len(job["history"]) == 1


def test_a_body_that_never_finishes_is_timed_out_and_the_connection_freed(settings: Settings) -> None:
    server = ThreadServer(create_app(settings.replace(body_timeout=0.5), schema=callback_schema())).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            head = f"POST {callback_url()} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/xml\r\n"
            sock.sendall(f"{head}Content-Length: {len(TRANSCODE)}\r\n\r\n".encode() + TRANSCODE[:100])
            started = time.monotonic()
            answer = read_until_closed(sock)
            assert time.monotonic() - started < 5
    finally:
        server.stop()
    assert answer.startswith(b"HTTP/1.1 408")


def test_chunked_body_over_the_cap_is_refused_while_it_is_still_arriving(settings: Settings) -> None:
    limit = 64 * 1024
    server = ThreadServer(create_app(settings.replace(max_body=limit), schema=callback_schema())).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            head = f"POST {callback_url()} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/xml\r\n"
            sock.sendall(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode())
            chunk = b"%x\r\n%s\r\n" % (1024, b" " * 1024)
            sent = 0
            for _ in range(50 * 1024):  # up to 50 MiB, and never the final chunk
                if select.select([sock], [], [], 0)[0]:
                    break  # the server has answered
                try:
                    sock.sendall(chunk)
                except ConnectionError:
                    break  # ...and closed the connection
                sent += 1024
            answer = read_until_closed(sock)
    finally:
        server.stop()
    assert answer.startswith(b"HTTP/1.1 413")
    # Refused while the body was still arriving: what was sent past the cap sat in socket buffers.
    assert sent < 8 * 1024 * 1024


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (it must, within the socket timeout)."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass  # closed with our unread bytes in its buffer: what it sent before is still here
    return received
