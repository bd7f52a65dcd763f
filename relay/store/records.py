"""Plain values that cross the store's interface."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from relay.deliver.client import Attempt

Outcome = Literal["accepted", "duplicate"]
#: Every state a delivery can be in (the ``deliveries.state`` column).
DELIVERY_STATES = ("pending", "in_flight", "delivered", "dead", "cancelled")


@dataclass(frozen=True)
class Received:
    """A request body and where it came from."""

    received_at: datetime
    source_addr: str | None
    content_type: str | None
    body: bytes
    format: str  # xml | json | unknown


@dataclass(frozen=True)
class IngestResult:
    """What recording one callback did."""

    callback_id: int
    outcome: Outcome
    #: Dedup keys of the items this callback added (empty for a pure duplicate).
    new_items: tuple[str, ...]
    #: Deliveries the new items created (one per event and matching subscriber).
    deliveries: int


@dataclass(frozen=True)
class Page:
    """One page of a newest-first listing; ``cursor`` fetches the next page, ``None`` at the end."""

    items: list[dict[str, Any]]
    cursor: str | None


@dataclass(frozen=True)
class Claim:
    """A delivery leased to this worker: everything needed to make one attempt and record it."""

    delivery_id: int
    event_id: str
    body: bytes
    subscriber_id: int
    subscriber: str
    url: str
    secrets: tuple[str, ...]
    timeout: float
    retry_schedule: tuple[float, ...] | None
    #: Failed attempts since it was last queued (indexes the retry schedule).
    failures: int
    #: first | retry | manual
    trigger: str
    created_at: datetime


@dataclass(frozen=True)
class Decision:
    """What to do with a delivery after an attempt."""

    #: delivered | pending | dead
    state: str
    next_attempt_at: datetime | None = None
    #: Disable the subscriber now, with this reason (410 Gone).
    disable_reason: str | None = None
    #: Disable the subscriber if it has been failing since before this instant.
    disable_if_failing_since: datetime | None = None


@dataclass(frozen=True)
class Finished:
    """One attempt to record: the claim it used, how it went and what that means for the delivery."""

    claim: Claim
    attempt: Attempt
    decision: Decision
    started_at: datetime
    finished_at: datetime


@dataclass(frozen=True)
class Recorded:
    """What recording an attempt did."""

    #: Why it disabled the subscriber, if it did.
    disabled: str | None
    #: The subscriber's next due delivery, leased to the lane that made the attempt.
    following: Claim | None
