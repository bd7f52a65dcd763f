"""How the HTTP edges answer a refusal: one table from each refusal to its status, and the short JSON error
(Svix's shape: ``error``, ``detail``, and where the body was wrong ``path`` and ``rule``) it is rendered as.
The console shows the same status on its error page; the CLI has its own table (`relay.cli.refusals`)."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.background import BackgroundTask
from starlette.responses import JSONResponse

from relay.domain.errors import (
    BadParameter,
    BadSubscriber,
    BodyTimeout,
    Forbidden,
    Invalid,
    Malformed,
    NotFound,
    Rejected,
    SubscriberExists,
    Throttled,
    TooComplex,
    TooLarge,
    Unauthorized,
    Unavailable,
    UnsupportedType,
)

#: A refusal's status is that of its class, or of the nearest class above it here (`AtSizeBound` is
#: `Unavailable`'s, `UnknownDelivery` `NotFound`'s).
STATUSES: Mapping[type[Rejected], int] = {
    Rejected: 400,
    Unauthorized: 401,
    BodyTimeout: 408,
    TooLarge: 413,
    TooComplex: 413,
    UnsupportedType: 415,
    Malformed: 400,
    Invalid: 422,
    Unavailable: 503,
    Throttled: 429,
    BadParameter: 400,
    BadSubscriber: 400,
    Forbidden: 403,
    NotFound: 404,
    SubscriberExists: 409,
}


def status_of(error: Rejected) -> int:
    """The HTTP status ``error`` is answered with."""
    return next(STATUSES[kind] for kind in type(error).__mro__ if kind in STATUSES)


def error_body(error: Rejected) -> dict[str, object]:
    """The JSON error for ``error``: its bounded label and its one line, and where the body was wrong."""
    body: dict[str, object] = {"error": error.outcome, "detail": error.detail}
    if error.path is not None:
        body["path"] = error.path
    if error.rule is not None:
        body["rule"] = error.rule
    return body


def error_response(
    error: Rejected, headers: Mapping[str, str] | None = None, background: BackgroundTask | None = None
) -> JSONResponse:
    """``error`` as an HTTP answer: its status and its JSON error."""
    return JSONResponse(error_body(error), status_code=status_of(error), headers=headers, background=background)
