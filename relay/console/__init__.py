"""The web console under /console/: server-rendered pages over the same store and services as the admin API."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from relay.console.guard import ConsoleGuard
from relay.console.login import login_routes
from relay.console.outbox import outbox_console_routes
from relay.console.pages import page_routes
from relay.console.render import Renderer
from relay.console.session import SessionKey, Sessions
from relay.domain.errors import Rejected
from relay.http.auth import Guessing, Tokens
from relay.http.errors import status_of
from relay.outbox.service import Subscribers
from relay.settings.table import Settings
from relay.store import Store

STATIC = Path(__file__).parent / "static"


def console_app(
    settings: Settings,
    store: Store,
    subscribers: Subscribers,
    tokens: Tokens,
    key: SessionKey,
    clock: Callable[[], datetime],
    guessing: Guessing,
) -> Starlette:
    """The console, to mount at /console. ``key`` signs its sessions once the app factory has set it."""
    sessions = Sessions(key, timedelta(seconds=settings.console_session), clock, store)
    renderer = Renderer(sessions, clock)

    async def refused(request: Request, error: Exception) -> Response:
        """A refusal (bad filter, unknown job, forged form) as a page saying why, with its status: never a 500."""
        if isinstance(error, Rejected):
            return renderer.page(request, "error.html", status=status_of(error), message=error.detail)
        assert isinstance(error, HTTPException)
        return renderer.page(request, "error.html", status=error.status_code, message=error.detail)

    console = Starlette(
        routes=[
            *login_routes(sessions, tokens, renderer, settings.public_url, guessing),
            *page_routes(store, renderer, clock),
            *outbox_console_routes(store, subscribers, sessions, renderer, clock, settings.public_url),
            Mount("/static", app=StaticFiles(directory=STATIC)),
        ],
        middleware=[Middleware(ConsoleGuard, sessions=sessions)],
        exception_handlers={Rejected: refused, HTTPException: refused},
    )
    # As for the whole app (`relay.app.factory`): a slash redirect's Location comes from the Host header, and a
    # redirected login form would carry the admin token to that host.
    console.router.redirect_slashes = False
    return console
