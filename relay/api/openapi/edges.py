"""The document of the routes outside /api: probes, the COS callback endpoint, /metrics, this document."""

from __future__ import annotations

from relay.api.openapi.operations import answer, operation
from relay.api.openapi.schemas import Schema

_OPEN: list[dict[str, list[str]]] = []  # no credentials


def _refusal(description: str) -> Schema:
    return answer(description, "Error")


_CALLBACK_BODY: Schema = {
    "description": "The callback as COS sends it: XML (or its JSON form). Other types are sniffed.",
    "required": True,
    "content": {"application/xml": {"schema": {"type": "string"}}, "application/json": {"schema": {}}},
}
_ACK: Schema = {
    "type": "object",
    "required": ["status"],
    "additionalProperties": False,
    "properties": {"status": {"enum": ["accepted", "duplicate"]}},
}

PATHS: dict[str, dict[str, Schema]] = {
    "/healthz": {
        "get": operation(
            "healthz", "Liveness: the process answers", {200: answer("Alive.", "Status")}, tag="probes", security=_OPEN
        )
    },
    "/readyz": {
        "get": operation(
            "readyz",
            "Readiness: the database takes a write",
            {200: answer("Ready.", "Status"), 503: answer("The database is not writable.", "Status")},
            tag="probes",
            security=_OPEN,
        )
    },
    "/cos/callback": {
        "post": operation(
            "receiveCallback",
            "Where COS posts job and workflow callbacks (200 only once the callback is committed)",
            {
                200: answer("Recorded (accepted), or already recorded (duplicate).", _ACK),
                400: _refusal("Not well-formed, a DTD, or not UTF-8 (kept in quarantine)."),
                401: _refusal("No valid callback token."),
                408: _refusal("The body did not arrive within RELAY_BODY_TIMEOUT."),
                413: _refusal("Over RELAY_MAX_BODY, or more nodes or depth than a callback has."),
                415: _refusal("Neither XML nor JSON, or content-encoded (kept in quarantine)."),
                422: _refusal("Well-formed but not a COS callback; path and rule say why (kept in quarantine)."),
                429: {
                    **_refusal("Too many wrong tokens from this address (RELAY_GUESS_LIMIT): try again later."),
                    "headers": {"Retry-After": {"schema": {"type": "string"}}},
                },
                503: {
                    **_refusal("The database could not commit, or is at RELAY_MAX_DB_SIZE: COS tries again."),
                    "headers": {"Retry-After": {"schema": {"type": "string"}}},
                },
            },
            request=_CALLBACK_BODY,
            tag="callbacks",
            security=[{"callbackToken": []}],
        )
    },
    "/metrics": {
        "get": operation(
            "metrics",
            "Prometheus exposition (gzip when accepted)",
            {
                200: {"description": "The exposition.", "content": {"text/plain": {"schema": {"type": "string"}}}},
                401: _refusal("RELAY_METRICS_TOKEN is set and the request does not carry it."),
            },
            tag="probes",
            security=[{}, {"metricsToken": []}],
        )
    },
    "/openapi.json": {
        "get": operation(
            "openapi",
            "This document (no token: it holds no secret)",
            {200: answer("The OpenAPI document.", {"type": "object"})},
            tag="probes",
            security=_OPEN,
        )
    },
}
