"""The HTTP sender: one POST per attempt through an SSRF-guarded aiohttp session, every failure an Outcome."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import CIMultiDict

from relay.deliver.ssrf import AddressPolicy, ForbiddenDestination
from relay.domain.delivery import Attempt, Outcome

CLOUDEVENTS_JSON = "application/cloudevents+json"
_NUMERIC = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
#: URL verdicts kept (one per subscriber URL in practice); beyond this the cache starts over.
URL_CACHE = 1024


def outcome_for(status: int) -> Outcome:
    """2xx succeeds; 3xx fails (redirects are never followed); 410 and 429 get their own outcome."""
    if 200 <= status < 300:
        return Outcome.SUCCESS
    if 300 <= status < 400:
        return Outcome.HTTP_3XX
    if status == 410:
        return Outcome.HTTP_410
    if status == 429:
        return Outcome.HTTP_429
    if 400 <= status < 500:
        return Outcome.HTTP_4XX
    # 5xx, and anything non-standard (1xx as a final status, 6xx+): the server misbehaved, retry.
    return Outcome.HTTP_5XX


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date; None if absent or junk."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # HTTP-dates are GMT by definition
    return max(0.0, (when - now).total_seconds())


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


def _describe(exc: BaseException) -> str:
    """A short, secret-free description: class names only (aiohttp messages can include the URL)."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"DNS lookup failed ({type(exc.os_error).__name__})"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return type(exc.os_error).__name__
    return type(exc).__name__


def _forbidden_cause(exc: BaseException) -> ForbiddenDestination | None:
    """The guard's refusal, if it is anywhere in the exception chain (aiohttp may wrap it)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ForbiddenDestination):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


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


class Sender:
    """Sends delivery attempts over one keep-alive aiohttp session; `send` never raises for network errors."""

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        connector_limit: int = 256,
        body_limit: int = 4096,
        user_agent: str = "cos-relay",
    ) -> None:
        self._policy = policy
        self._connector_limit = connector_limit
        self._body_limit = body_limit
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None
        #: URL -> why the policy refuses it (None: allowed). The policy is fixed, so the verdict is too.
        self._verdicts: dict[str, str | None] = {}

    async def start(self) -> None:
        if self._session is not None:
            return
        connector = aiohttp.TCPConnector(limit=self._connector_limit, resolver=GuardedResolver(self._policy))
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),  # a subscriber's cookies must not reach another
            # The response body is stored, not interpreted: keep it raw, and a gzip bomb small.
            auto_decompress=False,
            headers={"User-Agent": self._user_agent, "Accept-Encoding": "identity"},
            timeout=aiohttp.ClientTimeout(total=None),  # `send` enforces its own deadline
            trust_env=False,  # no HTTP(S)_PROXY from the environment: the guard must see the real target
        )

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def __aenter__(self) -> Sender:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _refusal(self, url: str) -> str | None:
        """The URL check, remembered: IP-literal URLs never reach the resolver, so this is their only check."""
        if url not in self._verdicts:
            if len(self._verdicts) >= URL_CACHE:
                self._verdicts.clear()
            try:
                self._policy.check_url(url)
            except ForbiddenDestination as exc:
                self._verdicts[url] = str(exc)
            else:
                self._verdicts[url] = None
        return self._verdicts[url]

    # ASYNC109: the deadline is per subscriber and ends as an Outcome, not as the caller's cancellation.
    async def send(self, url: str, body: bytes, headers: Mapping[str, str], *, timeout: float) -> Attempt:
        """POST ``body`` to ``url``; the whole attempt (connect, send, bounded read) ends by ``timeout``."""
        attempt, _ = await self.exchange("POST", url, body, headers, timeout=timeout)
        return attempt

    async def exchange(
        self, method: str, url: str, body: bytes, headers: Mapping[str, str], *, timeout: float
    ) -> tuple[Attempt, Mapping[str, str]]:
        """One request and the answer's headers (empty when none came): `send`, and the CloudEvents handshake's
        OPTIONS, whose answer is in its headers."""
        if self._session is None:
            raise RuntimeError("Sender.send() before start()")
        started = time.monotonic()

        def attempt(
            outcome: Outcome, error: str | None, status: int | None = None
        ) -> tuple[Attempt, Mapping[str, str]]:
            return Attempt(outcome, status, time.monotonic() - started, error, b"", None), {}

        refusal = self._refusal(url)
        if refusal is not None:
            return attempt(Outcome.SSRF_BLOCKED, refusal)
        request_headers = CIMultiDict(headers)
        request_headers.setdefault("Content-Type", CLOUDEVENTS_JSON)
        status: int | None = None
        try:
            async with asyncio.timeout(timeout):
                async with self._session.request(
                    method, url, data=body, headers=request_headers, allow_redirects=False
                ) as response:
                    status = response.status
                    received, complete = await _read_bounded(response.content, self._body_limit)
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
            return attempt(Outcome.TIMEOUT, f"timeout after {timeout:g}s", status)
        except Exception as exc:
            forbidden = _forbidden_cause(exc)
            if forbidden is not None:
                return attempt(Outcome.SSRF_BLOCKED, str(forbidden))
            if isinstance(exc, aiohttp.ClientError | OSError | ValueError):
                return attempt(Outcome.CONNECTION_ERROR, _describe(exc), status)
            raise
