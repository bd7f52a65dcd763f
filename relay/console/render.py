"""Rendering console pages: the Jinja environment (autoescaped: COS and subscriber values are attacker-controlled)
and the filters the templates use for times, states and JSON."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import anyio.to_thread
import jinja2
import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse

from relay.console.session import Sessions

TEMPLATES = Path(__file__).parent / "templates"

#: Which colour a state is drawn in; the state's name is always written next to it (colour is never alone).
TONES = {
    "success": "good",
    "delivered": "good",
    "accepted": "good",
    "enabled": "good",
    "failed": "bad",
    "dead": "bad",
    "dropped": "bad",
    "disabled": "bad",
    "malformed": "bad",
    "invalid": "bad",
    "too_large": "bad",
    "unsupported_type": "bad",
    "error": "bad",
    "timeout": "bad",
    "http_3xx": "bad",
    "http_4xx": "bad",
    "http_429": "bad",
    "http_410": "bad",
    "http_5xx": "bad",
    "connection_error": "bad",
    "ssrf_blocked": "bad",
    "handshake_refused": "bad",
    "robot_gone": "bad",
    "manual": "busy",
    "running": "busy",
    "submitted": "busy",
    "pending": "busy",
    "in_flight": "busy",
    "paused": "held",
    "pause": "held",
    "confirmed": "good",
    "active": "good",
    "released": "good",
    "unconfirmed": "bad",
    "waiting": "busy",
    "confirming": "busy",
    "discarded": "muted",
    "duplicate": "muted",
    "cancel": "muted",
    "cancelled": "muted",
}


def instant(value: str | datetime | None) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def ago(value: str | datetime | None, now: datetime) -> str:
    """``3 min ago``, ``in 2 h``, ``just now``: the relative half of every time the console shows."""
    moment = instant(value)
    if moment is None:
        return ""
    seconds = (now - moment).total_seconds()
    span = abs(seconds)
    if span < 5:
        return "just now"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min"), (1, "s")):
        if span >= size:
            amount = f"{int(span // size)} {unit}"
            break
    return f"{amount} ago" if seconds > 0 else f"in {amount}"


def absolute(value: str | datetime | None) -> str:
    """The absolute half: UTC to the second, as people read it."""
    moment = instant(value)
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def tone(value: object) -> str:
    return TONES.get(str(value).lower(), "muted")


def pretty(value: object) -> str:
    """JSON with indentation, as text: the template escapes it like every other value."""
    if isinstance(value, bytes | str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


def _shown(value: Any) -> Any:
    """What a template prints: a missing value (None) as a dash, never as Python's ``None``."""
    return "—" if value is None else value


class Renderer:
    """Renders a template with what every page needs: the time now, the CSRF token, the current section."""

    def __init__(self, sessions: Sessions, clock: Callable[[], datetime]) -> None:
        self._sessions = sessions
        self._clock = clock
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            finalize=_shown,
        )
        self._env.filters.update(absolute=absolute, tone=tone, pretty=pretty)

    def page(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        session = getattr(request.state, "session", None)
        now = self._clock()
        html = self._env.get_template(template).render(
            now=now,
            ago=lambda value: ago(value, now),
            csrf=self._sessions.csrf_token(session) if session else "",
            signed_in=session is not None,
            section=request.url.path.removeprefix("/console/").partition("/")[0],
            **context,
        )
        return HTMLResponse(html, status_code=status)

    async def render(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        """`page` in a worker thread: a page of stored rows at the field bounds is megabytes of HTML, and Jinja
        writing it on the event loop held every other request meanwhile."""
        return await anyio.to_thread.run_sync(partial(self.page, request, template, status, **context))
