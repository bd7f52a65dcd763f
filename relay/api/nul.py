"""No NUL character in a request's path or query: no name, id or filter value the gateway stores holds one.

SQLite would answer such a lookup "not found", but PostgreSQL refuses the character in text outright (an
error, which would be a 500), so the gateway answers it for both backends before any lookup: 404 for a
path (it names nothing), 400 for a query value.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Receive, Scope, Send

from relay.domain.errors import BadParameter, NotFound, Rejected
from relay.http.errors import error_response


class RefuseNul:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal: Rejected | None = None
        if scope["type"] == "http":
            if "\x00" in scope["path"]:
                refusal = NotFound("no name or id holds a NUL character")
            elif b"\x00" in unquote_to_bytes(scope["query_string"]):
                refusal = BadParameter("a query value holds a NUL character, which no name, id or filter can")
        if refusal is None:
            await self.app(scope, receive, send)
        else:
            await error_response(refusal)(scope, receive, send)
