"""Console sessions: a signed cookie that expires, and the CSRF token bound to it. Nothing is kept server-side."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

#: The session cookie, scoped to /console/ so it never travels with API or callback requests.
COOKIE = "cos_relay_console"
COOKIE_PATH = "/console/"


@dataclass(frozen=True)
class Session:
    nonce: str
    expires: int  # Unix seconds


@dataclass
class SessionKey:
    """What sessions are signed with, set once the store is open.

    Derived from a random secret kept in the database (every worker process finds the same one) and from
    the admin token, so changing the admin token ends every session. Until it is set, no session is valid.
    """

    value: bytes = b""

    def derive(self, stored_secret: str, admin_token: str) -> None:
        self.value = hmac.digest(stored_secret.encode(), b"console-session\0" + admin_token.encode(), hashlib.sha256)


class Sessions:
    """Issues and checks session cookies of ``lifetime``; a cookie is ``<expires>.<nonce>.<signature>``."""

    def __init__(self, key: SessionKey, lifetime: timedelta, clock: Callable[[], datetime]) -> None:
        self._key = key
        self.lifetime = lifetime
        self._clock = clock

    def _sign(self, purpose: str, value: str) -> str:
        return hmac.new(self._key.value, f"{purpose}\0{value}".encode(), hashlib.sha256).hexdigest()

    def issue(self) -> str:
        expires = int((self._clock() + self.lifetime).timestamp())
        value = f"{expires}.{secrets.token_urlsafe(16)}"
        return f"{value}.{self._sign('session', value)}"

    def check(self, cookie: str | None) -> Session | None:
        """The session a cookie carries, or None if it is absent, forged, or expired."""
        if not cookie or not self._key.value:
            return None
        value, _, signature = cookie.rpartition(".")
        expires, _, nonce = value.partition(".")
        if not nonce or not hmac.compare_digest(signature.encode(), self._sign("session", value).encode()):
            return None
        if not expires.isdigit() or int(expires) <= self._clock().timestamp():
            return None
        return Session(nonce, int(expires))

    def csrf_token(self, session: Session) -> str:
        return self._sign("csrf", session.nonce)

    def csrf_matches(self, session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(str(token).encode(), self.csrf_token(session).encode())
