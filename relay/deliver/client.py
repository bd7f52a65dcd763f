"""The HTTP sender: one POST per attempt through an SSRF-guarded aiohttp session (relay/deliver/session.py, made
at the first request), every failure an Outcome."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import TYPE_CHECKING

from relay.deliver.ssrf import AddressPolicy, ForbiddenDestination
from relay.domain.delivery import Attempt, Outcome

if TYPE_CHECKING:
    import aiohttp

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
    """The guard's refusal, if it is anywhere in the exception chain (aiohttp may wrap it)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ForbiddenDestination):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


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
        self._started = False
        self._session: aiohttp.ClientSession | None = None
        #: URL -> why the policy refuses it (None: allowed). The policy is fixed, so the verdict is too.
        self._verdicts: dict[str, str | None] = {}

    async def start(self) -> None:
        """Ready to send; the session itself is made at the first request (see relay/deliver/session.py)."""
        self._started = True

    async def close(self) -> None:
        self._started = False
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
        if not self._started:
            raise RuntimeError("Sender.send() before start()")
        refusal = self._refusal(url)
        if refusal is not None:
            return Attempt(Outcome.SSRF_BLOCKED, None, 0.0, refusal, b"", None), {}
        from relay.deliver import session

        if self._session is None:  # no await since the test: concurrent first requests share one session
            self._session = session.open_session(
                self._policy, connector_limit=self._connector_limit, user_agent=self._user_agent
            )
        return await session.request(
            self._session, method, url, body, headers, timeout=timeout, body_limit=self._body_limit
        )
