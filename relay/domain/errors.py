"""Why a request was refused, a leaf per reason: what went wrong, in the words of the layer that knows. No HTTP
here: each edge maps these to its own answer, the HTTP edges to a status and a short JSON error
(`relay.http.errors`), the console to a page, the CLI to one line and an exit code (`relay.cli.refusals`).
The statuses below are those the HTTP table gives, for the reader.

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

    #: Bounded label for metrics, the ``callbacks.outcome`` column and the ``error`` of a JSON error.
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


class Unauthorized(Rejected):
    """Missing or wrong callback token."""

    outcome = "unauthorized"
    quarantined = False  # anyone can post; storing their bodies would let them fill the disk


class BodyTimeout(Rejected):
    """The request body did not arrive in time."""

    outcome = "timeout"
    quarantined = False


class TooLarge(Rejected):
    """The request body is larger than the configured limit."""

    outcome = "too_large"
    quarantined = False


class TooComplex(Rejected):
    """The body has more elements, attributes or values, or deeper nesting, than a callback can have."""

    # The same bounded label as the size cap: both say "too much for one callback".
    outcome = "too_large"
    # Quarantined (the default): unlike an oversized body it was read whole, and the quarantine keeps only
    # its first few KB.


class UnsupportedType(Rejected):
    """The body is neither XML nor JSON."""

    outcome = "unsupported_type"


class Malformed(Rejected):
    """The body is not a well-formed document."""

    outcome = "malformed"


class Invalid(Rejected):
    """The body is well-formed but is not a valid COS callback."""

    outcome = "invalid"


class Unavailable(Rejected):
    """The callback could not be stored; try again later."""

    outcome = "unavailable"
    quarantined = False


class Throttled(Rejected):
    """Too many wrong tokens from this address; try again later."""

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

    outcome = "bad_request"
    quarantined = False


class BadSubscriber(Rejected):
    """The subscriber definition is not valid."""

    outcome = "bad_request"
    quarantined = False


class Forbidden(Rejected):
    """A console form that did not come from a console page: another origin, or a stale or forged CSRF token."""

    outcome = "forbidden"
    quarantined = False


class NotFound(Rejected):
    """Nothing has that name or id."""

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

    outcome = "conflict"
    quarantined = False
