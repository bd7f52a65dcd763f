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


class BearerAuth:
    """ASGI middleware: the wrapped routes need ``Authorization: Bearer <admin token>``."""

    def __init__(self, app: ASGIApp, credentials: Credentials) -> None:
        self.app = app
        self.credentials = credentials

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            header = sole(Request(scope).headers.getlist("authorization")) or ""
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not tokens_match(token.strip(), self.credentials.admin_token):
                response: Response = JSONResponse(
                    {"error": "unauthorized", "detail": "a valid admin bearer token is required"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
