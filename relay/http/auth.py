"""Tokens: configured, or generated once and kept in the database (where they rotate); always compared in constant
time, never logged."""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from relay.domain.errors import Throttled
from relay.domain.guessing import Guesses, retry_after, source_key
from relay.domain.tokens import tokens_match
from relay.http.errors import error_response
from relay.logs import Throttle
from relay.metrics.counters import Metrics
from relay.settings.table import Settings, setting_named
from relay.store import Store
from relay.store.failures import StoreError
from relay.store.records import StoredToken

logger = logging.getLogger(__name__)


def generate_token() -> str:
    return secrets.token_urlsafe(32)


def sole(values: Sequence[str]) -> str | None:
    """The one credential a request carries; None when it carries none or several.

    Two tokens (``?token=WRONG&token=<right>``, two Authorization headers) are ambiguous: which one a
    proxy or a framework takes differs, so neither is tried.
    """
    return values[0] if len(values) == 1 else None


def fingerprint(token: str) -> str:
    """What the database keeps to recognise a configured token: its SHA-256, never the token (one of at least 128
    random bits cannot be found from it)."""
    return hashlib.sha256(token.encode()).hexdigest()


#: Where a token kept in the database comes from, as `cos-relay tokens` says it.
DATABASE = "database"
#: What a running gateway without a callback token records as the callback token's source.
INSECURE = "--insecure-no-token"


@dataclass
class Credentials:
    """The tokens one app instance checks and where each comes from (``DATABASE``, or the option or variable
    that configured it). ``callback_token`` is None only with --insecure-no-token. ``previous_callback_token``
    is accepted until ``previous_until``: a rotation's grace."""

    callback_token: str | None
    admin_token: str
    #: True when a token was generated on this start, so the CLI prints it once.
    generated: bool = False
    callback_source: str = DATABASE
    admin_source: str = DATABASE
    previous_callback_token: str | None = None
    previous_until: datetime | None = None

    def take(self, stored: Mapping[str, StoredToken]) -> None:
        """Take on the tokens kept in the database, for those that come from there."""
        callback, admin = stored["callback_token"], stored["admin_token"]
        if self.callback_source == DATABASE and callback.value is not None:
            self.callback_token = callback.value
            self.previous_callback_token, self.previous_until = callback.previous, callback.previous_until
        if self.admin_source == DATABASE and admin.value is not None:
            self.admin_token = admin.value


def configured_source(field: str) -> str:
    """Where a token given in `Settings` came from, when no command line said which of the two it was."""
    setting = setting_named(field)
    return f"{setting.option} or {setting.env}"


def resolve_credentials(
    settings: Settings, store: Store, clock: Callable[[], datetime], sources: Mapping[str, str] | None = None
) -> Credentials:
    """Use the configured tokens, else the ones kept in the database, else generate and keep new ones.

    ``sources`` says where each configured token came from (the option or the variable). Each token's source
    and fingerprint are recorded, so that `cos-relay tokens` shows only the one in force; an admin token other
    than at the last start ends every console session.
    """
    now = clock()
    sources = sources or {}
    recorded = store.tokens(now)
    credentials = Credentials(
        settings.callback_token,
        settings.admin_token or "",
        callback_source=sources.get("callback_token") or configured_source("callback_token"),
        admin_source=sources.get("admin_token") or configured_source("admin_token"),
    )
    if settings.callback_token is None:
        credentials.callback_source = INSECURE if settings.insecure_no_token else DATABASE
    if credentials.callback_source == DATABASE:
        candidate = generate_token()
        credentials.callback_token = store.secret("callback_token", candidate, now)
        credentials.generated = credentials.callback_token == candidate
    if settings.admin_token is None:
        candidate = generate_token()
        credentials.admin_source = DATABASE
        credentials.admin_token = store.secret("admin_token", candidate, now)
        credentials.generated = credentials.generated or credentials.admin_token == candidate
    credentials.take(recorded)
    admin = fingerprint(credentials.admin_token)
    # Ended before the new fingerprint is recorded: a crash in between ends them again at the next start.
    if recorded["admin_token"].fingerprint not in (None, admin):
        ended = store.end_sessions(now)
        logger.info("the admin token changed: %d console session(s) ended", ended, extra={"action": "sessions_ended"})
    callback = "" if credentials.callback_token is None else fingerprint(credentials.callback_token)
    store.record_token_source("callback_token", credentials.callback_source, callback, now)
    store.record_token_source("admin_token", credentials.admin_source, admin, now)
    if settings.insecure_no_token:
        logger.warning(
            "!!! --insecure-no-token: ANYONE who can reach %s can post callbacks. Never run this in production.",
            settings.base_url,
            extra={"action": "insecure_no_token"},
        )
    return credentials


#: A callback token kept in the database is read again at most this often (seconds): a rotation reaches every
#: running gateway within it, and COS's requests never wait on more than one read in it.
CALLBACK_TOKEN_MAX_AGE = 1.0


class Tokens:
    """The tokens a running app checks, read again from the database where they are kept there: the admin token
    at every check (a rotation stops the old one at once, on every replica), the callback token at most every
    `CALLBACK_TOKEN_MAX_AGE` seconds."""

    def __init__(
        self,
        credentials: Credentials,
        store: Store,
        clock: Callable[[], datetime],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.credentials = credentials
        self._store = store
        self._clock = clock
        self._monotonic = monotonic
        self._read_at = -math.inf
        self._lock = anyio.Lock()

    async def _refresh(self, source: str, max_age: float) -> None:
        """Read the tokens again if the one about to be checked is kept in the database and was read longer than
        ``max_age`` seconds ago."""
        if source != DATABASE or self._monotonic() - self._read_at < max_age:
            return
        async with self._lock:
            if self._monotonic() - self._read_at < max_age:
                return  # another request read them meanwhile
            try:
                self.credentials.take(await anyio.to_thread.run_sync(self._store.tokens, self._clock()))
            except StoreError as error:
                # The ones read last stay in force until the database answers again.
                logger.warning("cannot read the tokens: %s", error, extra={"action": "tokens_unreadable"})
            self._read_at = self._monotonic()

    async def callback(self, given: str | None) -> str | None:
        """Which callback token ``given`` is: ``current``, ``previous`` (in a rotation's grace), or None."""
        credentials = self.credentials
        await self._refresh(credentials.callback_source, CALLBACK_TOKEN_MAX_AGE)
        if credentials.callback_token is None:
            return "current"  # --insecure-no-token
        if tokens_match(given, credentials.callback_token):
            return "current"
        previous, until = credentials.previous_callback_token, credentials.previous_until
        if previous is not None and until is not None and until > self._clock() and tokens_match(given, previous):
            return "previous"
        return None

    async def admin(self, given: str | None) -> bool:
        await self._refresh(self.credentials.admin_source, 0.0)
        return tokens_match(given, self.credentials.admin_token)


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

    def refusal(self, seconds: float) -> Response:
        """The answer to a throttled source: 429 with Retry-After."""
        return too_many_guesses(seconds)

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
    return error_response(Throttled(seconds), headers={"Retry-After": retry_after(seconds)})


class BearerAuth:
    """ASGI middleware: the wrapped routes need ``Authorization: Bearer <admin token>``."""

    def __init__(self, app: ASGIApp, tokens: Tokens, guessing: Guessing) -> None:
        self.app = app
        self.tokens = tokens
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
                if scheme.lower() != "bearer" or not await self.tokens.admin(token.strip()):
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


def rotation_refused(name: str, stored: StoredToken, configured_here: str | None) -> str | None:
    """Why the token ``name`` cannot be rotated in the database, as one line naming what to do; None if it can.

    Only a token kept in the database rotates there: one configured (here, or where the gateway last started)
    would stay in force whatever the database holds.
    """
    what = name.replace("_", " ")
    if configured_here is not None:
        return f"the {what} comes from {configured_here} here: change it there, and where the gateway runs, instead"
    if stored.source == INSECURE:
        return f"the gateway last started with {INSECURE}: start it without, and it keeps a {what} in the database"
    if stored.source not in (None, DATABASE):
        return (
            f"the gateway last started with its {what} from {stored.source}: change it there and restart the gateway"
            " instead"
        )
    if stored.value is None:
        return f"there is no {what} in the database yet: `cos-relay serve` generates one at its first start"
    return None


def rotate(store: Store, name: str, grace: timedelta, now: datetime) -> tuple[str, int]:
    """A new token ``name`` in the database (the callback token's predecessor accepted for ``grace``; a new admin
    token ends every console session): the token and how many sessions ended."""
    token = generate_token()
    previous_until = now + grace if name == "callback_token" and grace > timedelta(0) else None
    ended = store.rotate_token(
        name, token, fingerprint(token), now, previous_until=previous_until, end_sessions=name == "admin_token"
    )
    return token, ended
