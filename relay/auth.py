"""Tokens: generated once and kept in the database, always compared in constant time, never logged."""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from relay.domain.guessing import Guesses, retry_after, source_key
from relay.errors import Throttled
from relay.logs import Throttle
from relay.metrics import Metrics
from relay.settings import Settings
from relay.store import Store

logger = logging.getLogger(__name__)


def generate_token() -> str:
    return secrets.token_urlsafe(32)


def sole(values: Sequence[str]) -> str | None:
    """The one credential a request carries; None when it carries none or several.

    Two tokens (``?token=WRONG&token=<right>``, two Authorization headers) are ambiguous: which one a
    proxy or a framework takes differs, so neither is tried.
    """
    return values[0] if len(values) == 1 else None


def tokens_match(given: str | None, expected: str) -> bool:
    """Constant-time comparison; an absent or empty token never matches."""
    if not given:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


@dataclass
class Credentials:
    """The tokens one app instance checks. ``callback_token`` is None only with --insecure-no-token."""

    callback_token: str | None
    admin_token: str
    #: True when a token was generated on this start, so the CLI prints it once.
    generated: bool = False


def resolve_credentials(settings: Settings, store: Store, clock: Callable[[], datetime]) -> Credentials:
    """Use the configured tokens, else the ones kept in the database, else generate and keep new ones."""
    generated = False
    callback_token = settings.callback_token
    if callback_token is None and not settings.insecure_no_token:
        candidate = generate_token()
        callback_token = store.secret("callback_token", candidate, clock())
        generated = callback_token == candidate
    admin_token = settings.admin_token
    if admin_token is None:
        candidate = generate_token()
        admin_token = store.secret("admin_token", candidate, clock())
        generated = generated or admin_token == candidate
    if settings.insecure_no_token:
        logger.warning(
            "!!! --insecure-no-token: ANYONE who can reach %s can post callbacks. Never run this in production.",
            settings.base_url,
            extra={"action": "insecure_no_token"},
        )
    return Credentials(callback_token, admin_token, generated)


#: A line saying a source was throttled is logged at most once per this many seconds and check (the
#: metrics count every wrong token and every refusal).
THROTTLED_LOG_INTERVAL = 10.0


class Guessing:
    """The token checks' guard against guessing: the console login, the admin bearer token and the callback
    token each let a source address (a trusted proxy's X-Forwarded-For, else the peer) send a few wrong
    tokens a minute (`relay.domain.guessing`); past that the source gets 429 with Retry-After, whatever token
    it sends, so a throttled guesser cannot tell the right token from a wrong one."""

    def __init__(self, guesses: Guesses, metrics: Metrics, clock: Callable[[], datetime]) -> None:
        self._guesses = guesses
        self._metrics = metrics
        self._clock = clock
        self._log = Throttle(THROTTLED_LOG_INTERVAL, lambda: clock().timestamp())

    def wait(self, check: str, request: Request) -> float:
        """Seconds the request's source must wait before its token at ``check`` is compared (0: compare now)."""
        seconds = self._guesses.wait(check, _source(request), self._clock().timestamp())
        if seconds:
            self._metrics.throttled.labels(check).inc()
        return seconds

    def wrong(self, check: str, request: Request) -> None:
        """Count a wrong token the request's source sent at ``check``."""
        self._metrics.wrong_tokens.labels(check).inc()
        source = _source(request)
        if self._guesses.wrong(check, source, self._clock().timestamp()):
            held = self._log.allow(check)
            if held is not None:
                logger.warning(
                    "too many wrong tokens from %s at the %s check: it gets 429 for a while%s",
                    source,
                    check,
                    f" ({held} more like this since the last line, not logged)" if held else "",
                    extra={"action": "token_guessing_throttled", "outcome": check},
                )


def _source(request: Request) -> str:
    return source_key(request.client.host if request.client else None)


def too_many_guesses(seconds: float) -> Response:
    refusal = Throttled(seconds)
    return JSONResponse(refusal.body(), status_code=refusal.status, headers={"Retry-After": retry_after(seconds)})


class BearerAuth:
    """ASGI middleware: the wrapped routes need ``Authorization: Bearer <admin token>``."""

    def __init__(self, app: ASGIApp, credentials: Credentials, guessing: Guessing) -> None:
        self.app = app
        self.credentials = credentials
        self.guessing = guessing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope)
            response: Response | None = None
            if wait := self.guessing.wait("bearer", request):
                response = too_many_guesses(wait)
            else:
                header = sole(request.headers.getlist("authorization")) or ""
                scheme, _, token = header.partition(" ")
                if scheme.lower() != "bearer" or not tokens_match(token.strip(), self.credentials.admin_token):
                    if token.strip():
                        self.guessing.wrong("bearer", request)
                    response = JSONResponse(
                        {"error": "unauthorized", "detail": "a valid admin bearer token is required"},
                        status_code=401,
                        headers={"WWW-Authenticate": "Bearer"},
                    )
            if response is not None:
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
