"""The one error vocabulary: why a request was refused, a leaf per reason, each with its HTTP status and
rendered as a short JSON error. Lower layers raise these; only the edges (receive, api, cli) turn them into
responses or exit codes.

* Rejected            (the client's request cannot be taken)
  callbacks:
  + Unauthorized      401  missing or wrong token
  + BodyTimeout       408  the body did not finish arriving in time
  + TooLarge          413  over the size cap
  + TooComplex        413  within the size cap, but more nodes or deeper nesting than any callback has
  + UnsupportedType   415  neither XML nor JSON, or content-encoded
  + Malformed         400  not well-formed, DTD, bad UTF-8
  + Invalid           422  well-formed but not a COS callback
  + Unavailable       503  the store could not commit; COS should try again
  + Throttled         429  the source sent too many wrong tokens; it waits ``retry_after`` seconds
    + AtSizeBound          the database is at RELAY_MAX_DB_SIZE
  the admin API and the CLI:
  + BadParameter      400  a query, path or option value is not valid
  + BadSubscriber     400  a subscriber definition is not valid, or the change is not possible
  + Forbidden         403  a console form from another origin or without its CSRF token
  + NotFound          404  nothing has that name or id
    + UnknownSubscriber    no subscriber has that name
    + UnknownDelivery      no delivery has that id
  + SubscriberExists  409  the name is taken
"""

from __future__ import annotations

from collections.abc import Iterable


class Rejected(Exception):
    """The request was refused."""

    status: int = 400
    #: Bounded label for metrics and the ``callbacks.outcome`` column.
    outcome: str = "rejected"
    #: Whether the body is kept in quarantine for an operator to inspect.
    quarantined: bool = True

    def __init__(
        self,
        detail: str | None = None,
        *,
        path: str | None = None,
        rule: str | None = None,
        reasons: tuple[tuple[str, str], ...] = (),
    ):
        self.detail = detail or (self.__doc__ or "").strip()
        self.path = path
        self.rule = rule
        #: Every (path, rule) found wrong, when they were asked for (``cos-relay validate``).
        self.reasons = reasons
        super().__init__(self.detail)

    def body(self) -> dict[str, object]:
        error: dict[str, object] = {"error": self.outcome, "detail": self.detail}
        if self.path is not None:
            error["path"] = self.path
        if self.rule is not None:
            error["rule"] = self.rule
        return error


class Unauthorized(Rejected):
    """Missing or wrong callback token."""

    status = 401
    outcome = "unauthorized"
    quarantined = False  # anyone can post; storing their bodies would let them fill the disk


class BodyTimeout(Rejected):
    """The request body did not arrive in time."""

    status = 408
    outcome = "timeout"
    quarantined = False


class TooLarge(Rejected):
    """The request body is larger than the configured limit."""

    status = 413
    outcome = "too_large"
    quarantined = False


class TooComplex(Rejected):
    """The body has more elements, attributes or values, or deeper nesting, than a callback can have."""

    status = 413
    # The same bounded label as the size cap: both say "too much for one callback".
    outcome = "too_large"
    # Quarantined (the default): unlike an oversized body it was read whole, and the quarantine keeps only
    # its first few KB.


class UnsupportedType(Rejected):
    """The body is neither XML nor JSON."""

    status = 415
    outcome = "unsupported_type"


class Malformed(Rejected):
    """The body is not a well-formed document."""

    status = 400
    outcome = "malformed"


class Invalid(Rejected):
    """The body is well-formed but is not a valid COS callback."""

    status = 422
    outcome = "invalid"


class Unavailable(Rejected):
    """The callback could not be stored; try again later."""

    status = 503
    outcome = "unavailable"
    quarantined = False


class Throttled(Rejected):
    """Too many wrong tokens from this address; try again later."""

    status = 429
    outcome = "throttled"
    quarantined = False

    def __init__(self, retry_after: float) -> None:
        super().__init__()
        self.retry_after = retry_after


class AtSizeBound(Unavailable):
    """The database is at RELAY_MAX_DB_SIZE; COS should try again later."""

    outcome = "size_bound"


class BadParameter(Rejected):
    """A query parameter is not valid."""

    status = 400
    outcome = "bad_request"
    quarantined = False


class BadSubscriber(Rejected):
    """The subscriber definition is not valid."""

    status = 400
    outcome = "bad_request"
    quarantined = False


class Forbidden(Rejected):
    """A console form that did not come from a console page: another origin, or a stale or forged CSRF token."""

    status = 403
    outcome = "forbidden"
    quarantined = False


class NotFound(Rejected):
    """Nothing has that name or id."""

    status = 404
    outcome = "not_found"
    quarantined = False


class UnknownSubscriber(NotFound):
    """No subscriber has that name."""

    @classmethod
    def named(cls, name: str, known: Iterable[str]) -> UnknownSubscriber:
        """The refusal for ``name``, listing the names there are (a typo is the usual cause)."""
        return cls(f"no subscriber is named {name!r} (known: {', '.join(sorted(known)) or 'none yet'})")


class UnknownDelivery(NotFound):
    """No delivery has that id."""


class SubscriberExists(Rejected):
    """A subscriber with that name already exists."""

    status = 409
    outcome = "conflict"
    quarantined = False


class NoDatabase(NotFound):
    """A command that only reads or manages a database was pointed at a path with none."""

    def __init__(self, path: object) -> None:
        super().__init__(
            f"no database at {path}: start `cos-relay serve --db {path}` first, or pass --db (or RELAY_DB) "
            "naming the database the server uses"
        )
