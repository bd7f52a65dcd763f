"""The HTTP sender: one POST per attempt over the project's own SSRF-guarded HTTP/1.1 client (relay/deliver/wire/,
imported and made at the first request), every failure an Outcome."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import TYPE_CHECKING

from relay.deliver.ssrf import AddressPolicy, ForbiddenDestination
from relay.domain.delivery import Attempt, Outcome

if TYPE_CHECKING:
    from ssl import SSLContext

    from relay.deliver.wire.pool import Pool
    from relay.deliver.wire.target import Target

CLOUDEVENTS_JSON = "application/cloudevents+json"
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


def forbidden_cause(exc: BaseException) -> ForbiddenDestination | None:
    """The guard's refusal, if it is anywhere in the exception chain (a wrapper may hide it)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ForbiddenDestination):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class Sender:
    """Sends delivery attempts over one pool of keep-alive connections; `send` never raises for network errors.

    ``ssl_context`` is for tests (a local CA); the default verifies certificates against the system's store.
    """

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        connector_limit: int = 256,
        body_limit: int = 4096,
        user_agent: str = "cos-relay",
        ssl_context: SSLContext | None = None,
    ) -> None:
        self._policy = policy
        self._connector_limit = connector_limit
        self._body_limit = body_limit
        self._user_agent = user_agent
        self._ssl_context = ssl_context
        self._started = False
        self._pool: Pool | None = None
        #: URL -> where it goes, or why the policy refuses it. The policy is fixed, so the verdict is too.
        self._targets: dict[str, Target | str] = {}

    async def start(self) -> None:
        """Ready to send; the connection pool itself is made at the first request (see relay/deliver/wire/)."""
        self._started = True

    async def close(self) -> None:
        self._started = False
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.close()

    async def __aenter__(self) -> Sender:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _target(self, url: str) -> Target | str:
        """The URL checked and parsed once, remembered: where it goes, or why the policy refuses it. IP-literal URLs
        never reach the resolver, so the check is their only one."""
        known = self._targets.get(url)
        if known is None:
            # Imported here, not at the top: see relay/deliver/wire/__init__.py.
            from relay.deliver.wire import target

            if len(self._targets) >= URL_CACHE:
                self._targets.clear()
            try:
                self._policy.check_url(url)
            except ForbiddenDestination as exc:
                known = str(exc)
            else:
                known = target.parse(url)
            self._targets[url] = known
        return known

    # ASYNC109: the deadline is per subscriber and ends as an Outcome, not as the caller's cancellation.
    async def send(self, url: str, body: bytes, headers: Mapping[str, str], *, timeout: float) -> Attempt:
        """POST ``body`` to ``url``; the whole attempt (connect, send, bounded read) ends by ``timeout``."""
        attempt, _ = await self._request("POST", url, body, headers, timeout, answer=False)
        return attempt

    async def exchange(
        self, method: str, url: str, body: bytes, headers: Mapping[str, str], *, timeout: float
    ) -> tuple[Attempt, Mapping[str, str]]:
        """One request and the answer's headers (empty when none came; names case-insensitive): `send`, and the
        CloudEvents handshake's OPTIONS, whose answer is in its headers."""
        return await self._request(method, url, body, headers, timeout, answer=True)

    async def _request(
        self, method: str, url: str, body: bytes, headers: Mapping[str, str], timeout: float, *, answer: bool
    ) -> tuple[Attempt, Mapping[str, str]]:
        if not self._started:
            raise RuntimeError("Sender.send() before start()")
        where = self._target(url)
        if isinstance(where, str):
            return Attempt(Outcome.SSRF_BLOCKED, None, 0.0, where, b"", None), {}
        # Imported here, not at the top: see relay/deliver/wire/__init__.py.
        from relay.deliver.wire import exchange, pool

        if self._pool is None:  # no await since the test: concurrent first requests share one pool
            self._pool = pool.Pool(self._policy, limit=self._connector_limit, ssl_context=self._ssl_context)
        return await exchange.request(
            self._pool,
            where,
            method,
            body,
            headers,
            timeout=timeout,
            body_limit=self._body_limit,
            user_agent=self._user_agent,
            answer=answer,
        )
