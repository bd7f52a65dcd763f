"""The aiohttp side of the sender: the SSRF-guarded session and one request over it.

Imported by `Sender` at its first request, not at start: aiohttp (with yarl, multidict and attrs) is a tenth of a
second of every `cos-relay serve` start's CPU, and a gateway without subscribers never needs it.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Mapping
from datetime import UTC, datetime

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import CIMultiDict

from relay.deliver.client import CLOUDEVENTS_JSON, forbidden_cause, outcome_for, parse_retry_after
from relay.deliver.ssrf import AddressPolicy
from relay.domain.delivery import Attempt, Outcome

_NUMERIC = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV


class GuardedResolver(AbstractResolver):
    """The connector's resolver: resolves through `AddressPolicy.resolve`, so every address is vetted.

    The connection is then made to exactly the vetted addresses, never to a second lookup: a DNS
    rebinding answer cannot slip in between check and connect.
    """

    def __init__(self, policy: AddressPolicy) -> None:
        self._policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results: list[ResolveResult] = []
        for address in await self._policy.resolve(host, port):
            found = socket.AF_INET6 if ":" in address else socket.AF_INET
            if family in (socket.AF_UNSPEC, found):
                result: ResolveResult = {
                    "hostname": host,
                    "host": address,
                    "port": port,
                    "family": found,
                    "proto": 0,
                    "flags": _NUMERIC,
                }
                results.append(result)
        if not results:
            raise OSError(f"{host} has no {family.name} address")
        return results

    async def close(self) -> None:
        return None


def open_session(policy: AddressPolicy, *, connector_limit: int, user_agent: str) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=connector_limit, resolver=GuardedResolver(policy))
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),  # a subscriber's cookies must not reach another
        # The response body is stored, not interpreted: keep it raw, and a gzip bomb small.
        auto_decompress=False,
        headers={"User-Agent": user_agent, "Accept-Encoding": "identity"},
        timeout=aiohttp.ClientTimeout(total=None),  # `send` enforces its own deadline
        trust_env=False,  # no HTTP(S)_PROXY from the environment: the guard must see the real target
    )


def _describe(exc: BaseException) -> str:
    """A short, secret-free description: class names only (aiohttp messages can include the URL)."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"DNS lookup failed ({type(exc.os_error).__name__})"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return type(exc.os_error).__name__
    return type(exc).__name__


async def _read_bounded(content: aiohttp.StreamReader, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes of the body, and whether that was all of it."""
    chunks: list[bytes] = []
    remaining = limit
    while remaining > 0:
        chunk = await content.read(remaining)
        if not chunk:
            return b"".join(chunks), True
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks), content.at_eof()


async def request(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout: float,
    body_limit: int,
) -> tuple[Attempt, Mapping[str, str]]:
    """One request within ``timeout`` (connect, send, bounded read), and the answer's headers (empty when none
    came); every failure an `Attempt`'s outcome."""
    started = time.monotonic()

    def failed(outcome: Outcome, error: str, status: int | None = None) -> tuple[Attempt, Mapping[str, str]]:
        return Attempt(outcome, status, time.monotonic() - started, error, b"", None), {}

    request_headers = CIMultiDict(headers)
    request_headers.setdefault("Content-Type", CLOUDEVENTS_JSON)
    status: int | None = None
    try:
        async with asyncio.timeout(timeout):
            async with session.request(
                method, url, data=body, headers=request_headers, allow_redirects=False
            ) as response:
                status = response.status
                received, complete = await _read_bounded(response.content, body_limit)
                if not complete:
                    # Drop the connection rather than drain an unbounded body to reuse it.
                    response.close()
                retry_after = None
                if status in (429, 503):
                    header = response.headers.get("Retry-After")
                    retry_after = parse_retry_after(header, datetime.now(UTC))
                duration = time.monotonic() - started
                answer = Attempt(outcome_for(status), status, duration, None, received, retry_after)
                return answer, response.headers
    except TimeoutError:
        return failed(Outcome.TIMEOUT, f"timeout after {timeout:g}s", status)
    except Exception as exc:
        forbidden = forbidden_cause(exc)
        if forbidden is not None:
            return failed(Outcome.SSRF_BLOCKED, str(forbidden))
        if isinstance(exc, aiohttp.ClientError | OSError | ValueError):
            return failed(Outcome.CONNECTION_ERROR, _describe(exc), status)
        raise
