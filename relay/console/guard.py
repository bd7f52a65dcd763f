"""What every console request goes through: a session (else the login page), same-origin POSTs carrying the
session's CSRF token, and headers that forbid inline script, framing and caching."""

from __future__ import annotations

from urllib.parse import parse_qsl, quote, urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from relay.console.session import COOKIE, Session, Sessions
from relay.domain.errors import BadParameter, Forbidden

#: No inline script or style, nothing from elsewhere, forms only to this origin, never in a frame.
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self';"
    " frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "content-security-policy": POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}
#: Paths (below /console) that need no session.
OPEN = ("/login", "/static/")
#: Console forms are a few short fields: a larger body is not one of them.
MAX_FORM = 16 * 1024


class ConsoleGuard:
    """ASGI middleware around the console app: session check and security headers."""

    def __init__(self, app: ASGIApp, sessions: Sessions) -> None:
        self.app = app
        self.sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        request = Request(scope)
        path = scope["path"][len(scope.get("root_path", "")) :]
        if not path.startswith(OPEN):
            session = await self.sessions.check(request.cookies.get(COOKIE))
            if session is None:
                # No data without a session: back to the login page, which returns here afterwards.
                target = quote(scope["path"] if request.method == "GET" else "/console/", safe="/")
                await RedirectResponse(f"/console/login?next={target}", status_code=303)(scope, receive, secured)
                return
            scope.setdefault("state", {})["session"] = session
        await self.app(scope, receive, secured)


def session_of(request: Request) -> Session:
    session: Session = request.state.session
    return session


def check_origin(request: Request, public_url: str | None) -> None:
    """A POST must come from a page of this gateway: its Origin (or Referer) names this host and scheme.

    Behind a proxy the Host header may have lost its port (nginx's ``$host``): then the host name must match.
    The scheme is https only when a trusted proxy said so (RELAY_FORWARDED_ALLOW_IPS).
    """
    claimed = request.headers.get("origin") or request.headers.get("referer")
    if not claimed or claimed == "null":
        raise Forbidden("a console form must be sent from a console page (the request has no Origin)")
    origin = urlsplit(claimed)
    host = request.headers.get("host", "")
    own = origin.scheme == request.url.scheme and (
        origin.netloc == host or (":" not in host and origin.hostname == host)
    )
    public = urlsplit(public_url) if public_url else None
    if not own and not (public and (origin.scheme, origin.netloc) == (public.scheme, public.netloc)):
        raise Forbidden(
            f"this form was sent from another origin ({origin.scheme}://{origin.netloc}); behind a TLS proxy,"
            " list it in RELAY_FORWARDED_ALLOW_IPS"
        )


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (each given once), without python-multipart."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            raise BadParameter(f"a console form is at most {MAX_FORM} bytes")
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise BadParameter("the form is not valid") from None
    fields = dict(pairs)
    if len(fields) != len(pairs):
        raise BadParameter("a form field is given twice")
    return fields


async def checked_form(request: Request, sessions: Sessions, public_url: str | None) -> dict[str, str]:
    """The form of a state-changing POST, after the Origin and the session's CSRF token were checked."""
    check_origin(request, public_url)
    fields = await read_form(request)
    if not sessions.csrf_matches(session_of(request), fields.get("csrf")):
        raise Forbidden("the form is stale or forged (CSRF token mismatch): reload the page and try again")
    return fields
