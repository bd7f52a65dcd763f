"""Console sessions: a signed cookie that expires, the CSRF token bound to it, and the session's row in the database,
so that signing out, `cos-relay sessions end-all` and an admin token change end it on every replica."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import anyio.to_thread

from relay.store import Store

#: The session cookie, scoped to /console/ so it never travels with API or callback requests.
COOKIE = "cos_relay_console"
COOKIE_PATH = "/console/"


@dataclass(frozen=True)
class Session:
    nonce: str
    expires: int  # Unix seconds

    @property
    def id(self) -> str:
        """What the database keeps of it: a copy of the database cannot be turned back into a cookie."""
        return hashlib.sha256(self.nonce.encode()).hexdigest()


@dataclass
class SessionKey:
    """What sessions are signed with, set once the store is open.

    Derived from a random secret kept in the database, so every worker process and replica finds the same one.
    Until it is set, no session is valid.
    """

    value: bytes = b""

    def derive(self, stored_secret: str) -> None:
        self.value = hmac.digest(stored_secret.encode(), b"console-session", hashlib.sha256)


class Sessions:
    """Issues, checks and ends sessions of ``lifetime``; a cookie is ``<expires>.<nonce>.<signature>``, and is
    only good while its session's row is in the database."""

    def __init__(self, key: SessionKey, lifetime: timedelta, clock: Callable[[], datetime], store: Store) -> None:
        self._key = key
        self.lifetime = lifetime
        self._clock = clock
        self._store = store

    def _sign(self, purpose: str, value: str) -> str:
        return hmac.new(self._key.value, f"{purpose}\0{value}".encode(), hashlib.sha256).hexdigest()

    async def issue(self) -> str:
        now = self._clock()
        expires = int((now + self.lifetime).timestamp())
        session = Session(secrets.token_urlsafe(16), expires)
        await self._store.start_session(session.id, datetime.fromtimestamp(expires, UTC), now)
        value = f"{expires}.{session.nonce}"
        return f"{value}.{self._sign('session', value)}"

    async def check(self, cookie: str | None) -> Session | None:
        """The session a cookie carries, or None if it is absent, forged, expired or ended."""
        if not cookie or not self._key.value:
            return None
        value, _, signature = cookie.rpartition(".")
        expires, _, nonce = value.partition(".")
        if not nonce or not hmac.compare_digest(signature.encode(), self._sign("session", value).encode()):
            return None
        now = self._clock()
        if not expires.isdigit() or int(expires) <= now.timestamp():
            return None
        session = Session(nonce, int(expires))
        return session if await self._store.session_live(session.id, now) else None

    async def end(self, session: Session | None = None) -> int:
        """End ``session``, or every session (None): how many were live."""
        ending = None if session is None else session.id
        return await anyio.to_thread.run_sync(self._store.end_sessions, self._clock(), ending)

    def csrf_token(self, session: Session) -> str:
        return self._sign("csrf", session.nonce)

    def csrf_matches(self, session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(str(token).encode(), self.csrf_token(session).encode())
