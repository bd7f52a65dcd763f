"""The admin API's OpenAPI 3.1 document, served at ``GET /openapi.json``.

Each route module has its part here (`queries` for `relay.api.routes`, `outbox` for `relay.api.outbox`,
`edges` for the rest); tests/test_openapi.py fails when a route of the app and the document disagree.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import relay
from relay.api.openapi import edges, outbox, queries
from relay.api.openapi.schemas import PARAMETERS, RESPONSES, SCHEMAS, SECURITY_SCHEMES

_DESCRIPTION = """\
The admin API of cos-relay: jobs, workflow runs and callbacks as received, subscribers and their
deliveries. Every route under /api needs `Authorization: Bearer <admin token>`. Errors are JSON
objects `{"error": label, "detail": text}`; lists are pages of `items` with a `next_cursor` to pass
as `cursor` for the next page (null on the last one). See docs/api.md."""


def document() -> dict[str, Any]:
    """The OpenAPI document (a copy: changing it changes nothing else)."""
    return copy.deepcopy(
        {
            "openapi": "3.1.0",
            "info": {
                "title": "cos-relay",
                "version": relay.__version__,
                "description": _DESCRIPTION,
                "license": {"name": "MIT", "identifier": "MIT"},
            },
            "security": [{"adminToken": []}],
            "tags": [
                {"name": "jobs", "description": "What COS reported: jobs, workflow runs, callbacks as received."},
                {"name": "subscribers", "description": "Who gets the events, and how."},
                {"name": "deliveries", "description": "Every event sent to every subscriber, with its attempts."},
                {"name": "callbacks", "description": "The endpoint COS posts to."},
                {"name": "probes", "description": "Health, readiness, metrics and this document."},
            ],
            "paths": {**edges.PATHS, **queries.PATHS, **outbox.PATHS},
            "components": {
                "schemas": SCHEMAS,
                "parameters": PARAMETERS,
                "responses": RESPONSES,
                "securitySchemes": SECURITY_SCHEMES,
            },
        }
    )


def openapi_route() -> Route:
    """``GET /openapi.json``, without a token: the document describes the API and holds no secret."""
    rendered = orjson.dumps(document())

    async def serve(request: Request) -> Response:
        return Response(rendered, media_type="application/json")

    return Route("/openapi.json", serve, methods=["GET"])
