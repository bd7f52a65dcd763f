"""One request over the pool within one deadline (connect, send, bounded read), every failure an `Attempt`."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime

from multidict import CIMultiDict

from relay.deliver.client import CLOUDEVENTS_JSON, forbidden_cause, outcome_for, parse_retry_after
from relay.deliver.wire.pool import ConnectFailed, LookupFailed, Pool
from relay.deliver.wire.response import Connection, ResponseFailed, ServerDisconnected
from relay.deliver.wire.target import Target
from relay.domain.delivery import Attempt, Outcome

# Control characters other than tab, in a header name or value, would let it write a header (or request) of its
# own: refused, as aiohttp refuses them.
_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
#: Header names the client writes itself, whatever the caller passes: the body's framing is the client's.
_FRAMING = frozenset(("content-length", "transfer-encoding"))
_RETRY_AFTER = b"retry-after"
_IDEMPOTENT = frozenset(("GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"))
_NO_HEADERS: Mapping[str, str] = {}


def head(method: str, target: Target, headers: Mapping[str, str], length: int, user_agent: str) -> bytes:
    """The request line and headers: the caller's (case-insensitive, theirs win), then the defaults they lack."""
    lines = [f"{method} {target.path} HTTP/1.1\r\n"]
    given: set[str] = set()
    checked: list[str] = []
    for name, value in headers.items():
        lower = name.lower()
        if lower in _FRAMING:
            continue
        given.add(lower)
        checked += (name, value)
        lines.append(f"{name}: {value}\r\n")
    if _FORBIDDEN.search("".join(checked)):
        raise ValueError("a control character in a request header")  # never the header itself: it may be secret
    if "host" not in given:
        lines.append(f"Host: {target.authority}\r\n")
    if "content-type" not in given:
        lines.append(f"Content-Type: {CLOUDEVENTS_JSON}\r\n")
    if "user-agent" not in given:
        lines.append(f"User-Agent: {user_agent}\r\n")
    if "accept" not in given:
        lines.append("Accept: */*\r\n")
    if "accept-encoding" not in given:
        # The response body is stored, not interpreted: keep it raw, and a gzip bomb small.
        lines.append("Accept-Encoding: identity\r\n")
    lines.append(f"Content-Length: {length}\r\n\r\n")
    return "".join(lines).encode()


def describe(exc: BaseException) -> str:
    """A short, secret-free description: class names only (messages can include the URL)."""
    if isinstance(exc, LookupFailed):
        return f"DNS lookup failed ({type(exc.os_error).__name__})"
    if isinstance(exc, ConnectFailed):
        return type(exc.cause).__name__
    if isinstance(exc, ResponseFailed):
        return exc.label
    return type(exc).__name__


def answer_headers(raw: list[tuple[bytes, bytes]]) -> CIMultiDict[str]:
    """The response's headers as the handshake reads them: names case-insensitive, bytes decoded as aiohttp did."""
    return CIMultiDict(
        (name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape")) for name, value in raw
    )


def retry_after(raw: list[tuple[bytes, bytes]]) -> float | None:
    for name, value in raw:
        if name.lower() == _RETRY_AFTER:
            return parse_retry_after(value.decode("utf-8", "surrogateescape"), datetime.now(UTC))
    return None


async def request(
    pool: Pool,
    target: Target,
    method: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout: float,
    body_limit: int,
    user_agent: str,
    answer: bool,
) -> tuple[Attempt, Mapping[str, str]]:
    """One request within ``timeout``, and, when ``answer``, the response's headers (empty when none came)."""
    started = time.monotonic()
    connection: Connection | None = None

    def failed(outcome: Outcome, error: str) -> tuple[Attempt, Mapping[str, str]]:
        status = connection.status if connection is not None else None
        return Attempt(outcome, status, time.monotonic() - started, error, b"", None), _NO_HEADERS

    try:
        try:
            message = head(method, target, headers, len(body), user_agent)
            outgoing = message + body  # one write: with TCP_NODELAY, two writes would go as two packets
            async with asyncio.timeout(timeout):
                connection = await pool.acquire(target)
                await connection.send(outgoing, body_limit)
                if method in _IDEMPOTENT and connection.reused and isinstance(connection.error, ServerDisconnected):
                    # A kept-alive connection the server closed as it was reused: an idempotent request is asked
                    # again once, on a new connection (RFC 9112, 9.3.1; aiohttp did the same). Never a POST.
                    pool.release(connection)
                    connection = None
                    connection = await pool.acquire(target, fresh=True)
                    await connection.send(outgoing, body_limit)
        except TimeoutError:
            return failed(Outcome.TIMEOUT, f"timeout after {timeout:g}s")
        except Exception as exc:
            forbidden = forbidden_cause(exc)
            if forbidden is not None:
                return failed(Outcome.SSRF_BLOCKED, str(forbidden))
            if isinstance(exc, OSError | ValueError | ConnectFailed):
                return failed(Outcome.CONNECTION_ERROR, describe(exc))
            raise
        if connection.error is not None:
            return failed(Outcome.CONNECTION_ERROR, describe(connection.error))
        status = connection.status
        assert status is not None
        raw = connection.headers
        delay = retry_after(raw) if status in (429, 503) else None
        attempt = Attempt(outcome_for(status), status, time.monotonic() - started, None, connection.body, delay)
        return attempt, answer_headers(raw) if answer else _NO_HEADERS
    finally:
        if connection is not None:
            pool.release(connection)
