"""Reading a callback body: whole within the limit, 413 as soon as it passes it, 408 when it stalls; the format."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import pytest
from starlette.requests import Request
from starlette.types import Message

from relay.domain.errors import BodyTimeout, TooLarge, UnsupportedType
from relay.receive.body import body_format, read_body


def request(chunks: list[bytes], *, declared: int | None = None, stall: bool = False) -> Request:
    """A request whose body arrives in ``chunks``; with ``stall``, the rest never comes."""
    headers = [] if declared is None else [(b"content-length", str(declared).encode())]
    pending = list(chunks)
    served: list[int] = []

    async def receive() -> Message:
        if pending:
            chunk = pending.pop(0)
            served.append(len(chunk))
            return {"type": "http.request", "body": chunk, "more_body": bool(pending) or stall}
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    request = Request({"type": "http", "method": "POST", "path": "/", "headers": headers}, receive)
    request.state.served = served
    return request


def run(read: Callable[[], Awaitable[bytes]]) -> bytes:
    return anyio.run(read)


def test_a_body_in_chunks_is_read_whole() -> None:
    body = request([b"<Response>", b"<a/>", b"</Response>"])
    assert run(lambda: read_body(body, limit=1024, timeout=5)) == b"<Response><a/></Response>"


def test_a_body_at_the_limit_is_read() -> None:
    assert run(lambda: read_body(request([b"x" * 8]), limit=8, timeout=5)) == b"x" * 8


def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    body = request([b"x"], declared=10_000)
    with pytest.raises(TooLarge):
        run(lambda: read_body(body, limit=1024, timeout=5))
    assert body.state.served == []


def test_a_body_growing_past_the_limit_is_refused_without_reading_the_rest() -> None:
    body = request([b"x" * 600, b"x" * 600, b"x" * 600])
    with pytest.raises(TooLarge):
        run(lambda: read_body(body, limit=1024, timeout=5))
    assert body.state.served == [600, 600]


def test_a_body_that_stops_arriving_times_out() -> None:
    with pytest.raises(BodyTimeout):
        run(lambda: read_body(request([b"<Resp"], stall=True), limit=1024, timeout=0.05))


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("application/xml", b"{}", "xml"),
        ("text/xml; charset=utf-8", b"", "xml"),
        ("application/soap+xml", b"", "xml"),
        ("application/json", b"<a/>", "json"),
        (None, b"  <Response/>", "xml"),
        ("text/plain", b"\n{}", "json"),
        ("application/octet-stream", b"[1]", "json"),
    ],
)
def test_the_content_type_decides_the_format_and_generic_types_sniff(
    content_type: str | None, body: bytes, expected: str
) -> None:
    assert body_format(content_type, body) == expected


@pytest.mark.parametrize(("content_type", "body"), [("text/html", b"<a/>"), (None, b"hello"), ("", b"")])
def test_neither_xml_nor_json_is_unsupported(content_type: str | None, body: bytes) -> None:
    with pytest.raises(UnsupportedType):
        body_format(content_type, body)
