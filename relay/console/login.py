"""Signing in with the admin token, and out: this browser, or every session at once."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from relay.console.guard import check_origin, checked_form, read_form, session_of
from relay.console.render import Renderer
from relay.console.session import COOKIE, COOKIE_PATH, Sessions
from relay.domain.guessing import retry_after
from relay.http.auth import Guessing, Tokens

HOME = "/console/"


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a console path only (never another site: ``//evil``, ``/\\evil``)."""
    if not target or not target.startswith(HOME) or "//" in target or "\\" in target:
        return HOME
    return target


def login_routes(
    sessions: Sessions, tokens: Tokens, renderer: Renderer, public_url: str | None, guessing: Guessing
) -> list[BaseRoute]:
    async def form(request: Request) -> Response:
        target = safe_next(request.query_params.get("next"))
        if await sessions.check(request.cookies.get(COOKIE)) is not None:
            return RedirectResponse(target, status_code=303)
        return renderer.page(request, "login.html", next=target, error=None)

    async def sign_in(request: Request) -> Response:
        # Login CSRF: only this gateway's own login page may sign a browser in.
        check_origin(request, public_url)
        fields = await read_form(request)
        target = safe_next(fields.get("next"))
        # Before comparing: a throttled source is refused even with the right token, so it learns nothing.
        if wait := guessing.wait("login", request):
            page = renderer.page(
                request,
                "login.html",
                status=429,
                next=target,
                error=f"Too many wrong tokens from your address: try again in {retry_after(wait)} seconds.",
            )
            page.headers["Retry-After"] = retry_after(wait)
            return page
        token = fields.get("token")
        if not await tokens.admin(token):
            if token:
                guessing.wrong("login", request)
            return renderer.page(request, "login.html", status=401, next=target, error="That is not the admin token.")
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE,
            await sessions.issue(),
            max_age=int(sessions.lifetime.total_seconds()),
            path=COOKIE_PATH,
            httponly=True,
            samesite="strict",
            # https as the client sees it: directly, or as a trusted proxy (RELAY_FORWARDED_ALLOW_IPS) reports it.
            secure=request.url.scheme == "https",
        )
        return response

    async def sign_out(request: Request) -> Response:
        await checked_form(request, sessions, public_url)
        await sessions.end(session_of(request))
        return signed_out()

    async def end_every_session(request: Request) -> Response:
        await checked_form(request, sessions, public_url)
        await sessions.end()
        return signed_out()

    return [
        Route("/login", form, methods=["GET"]),
        Route("/login", sign_in, methods=["POST"]),
        Route("/logout", sign_out, methods=["POST"]),
        Route("/sessions/end-all", end_every_session, methods=["POST"]),
    ]


def signed_out() -> Response:
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
    return response
