"""One delivery attempt and what it means: the outcome, the leased work, and THE delivery decision.

`decide` is the only place that says whether a delivery is retried, given up or delivered, and whether
its subscriber is disabled (gone: 410, or a chat robot's "no such webhook"; or failing without a single success
for ``disable_after``). The store applies a `Decision` as it is; it judges nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from relay.domain.destinations import WEBHOOK, Route
from relay.domain.retry import RetryPolicy

#: Every state a delivery can be in (the ``deliveries.state`` column).
DELIVERY_STATES = (
    "pending",
    "in_flight",
    "delivered",
    "dead",
    "cancelled",
    "dropped",
    "confirming",  # its job is read back from COS first (a source with confirm = true): never claimed meanwhile
    "unconfirmed",  # COS did not confirm its job: held for good, unless an admin releases it
)


class Outcome(StrEnum):
    """How one delivery attempt ended; a bounded label for metrics and the attempt log."""

    SUCCESS = "success"
    HTTP_3XX = "http_3xx"
    HTTP_4XX = "http_4xx"
    HTTP_429 = "http_429"
    HTTP_410 = "http_410"
    HTTP_5XX = "http_5xx"
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    SSRF_BLOCKED = "ssrf_blocked"
    #: The receiver did not grant the CloudEvents handshake (a subscriber with handshake = true): not sent.
    HANDSHAKE_REFUSED = "handshake_refused"
    #: A chat robot answered that its webhook is no more (WeCom 93000, DingTalk 300001, Slack no_service, ...):
    #: as final as a 410, so it is treated as one (see `GONE_OUTCOMES`).
    ROBOT_GONE = "robot_gone"


@dataclass(frozen=True)
class Attempt:
    """The result of one delivery attempt."""

    outcome: Outcome
    #: HTTP status, if a status line arrived (also on TIMEOUT while the body was still trickling in).
    status: int | None
    #: Seconds from the start of `Sender.send` to the end of the attempt.
    duration: float
    #: Short description of a failure (exception class, "timeout after 15s", "10.0.0.1 is private"),
    #: never the URL or a header, so no secret can leak into the attempt log.
    error: str | None
    #: At most ``body_limit`` bytes of the response body.
    response_body: bytes
    #: Parsed Retry-After in seconds from now, for 429 and 503 only.
    retry_after: float | None


@dataclass(frozen=True)
class Claim:
    """A delivery leased to this worker: everything needed to make one attempt and record it."""

    #: Its row's id; None for a first attempt of an event of the log (no row: the subscriber's cursor leases it).
    delivery_id: int | None
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
    #: Since when the subscriber has failed without a success, as of the claim (None: its last attempt succeeded).
    failing_since: datetime | None = None
    #: Whether the subscriber keeps the first bytes of its answers with each attempt.
    store_response: bool = False
    #: How it is sent: the subscriber's kind and the receiver's options.
    route: Route = WEBHOOK
    #: For an event of the log (no row): the cursor's lease it is part of (one lease per lane: a run of events).
    lease: str | None = None
    #: For an event of the log: its position (a finish moves its lease's start past it).
    position: int | None = None


def trigger_of(attempts: int, last_outcome: str | None) -> str:
    """Why a claimed attempt is made (``attempts`` counts it): the first, a retry, or one an operator asked
    for (a requeue leaves ``manual`` as the last outcome)."""
    if attempts == 1:
        return "first"
    return "manual" if last_outcome == "manual" else "retry"


@dataclass(frozen=True)
class Decision:
    """What to do with a delivery (and its subscriber) after an attempt."""

    #: delivered | pending | dead
    state: str
    next_attempt_at: datetime | None = None
    #: Disable the subscriber, with this reason.
    disable_reason: str | None = None
    #: For a disable because of a failure streak: the streak start the verdict rests on. The store
    #: disables only while the subscriber's streak still starts there, so a success recorded by another
    #: attempt since the claim (which ends the streak) wins.
    streak_since: datetime | None = None


@dataclass(frozen=True)
class Finished:
    """One attempt to record: the claim it used, how it went and what that means for the delivery."""

    claim: Claim
    attempt: Attempt
    decision: Decision
    started_at: datetime
    finished_at: datetime
    #: The last attempt of its lane's run: the lane waits for this record, which leases it the next run.
    last: bool = True
    #: The lane stopped its run early (a failure, or the worker stopping): the rest of its lease is given back.
    gives_back: bool = False


@dataclass(frozen=True)
class Recorded:
    """What recording an attempt did."""

    #: Why it disabled the subscriber, if it did.
    disabled: str | None
    #: The subscriber's next due deliveries, leased to the lane that made the attempt (its last of a run): a run.
    following: tuple[Claim, ...] = ()


def runs(claims: Sequence[Claim]) -> list[tuple[Claim, ...]]:
    """The lanes' runs of a claim: the events of the log under one lease together, in order; each row alone."""
    grouped: dict[str, list[Claim]] = {}
    found: list[list[Claim]] = []
    for claim in claims:
        if claim.lease is not None and claim.lease in grouped:
            grouped[claim.lease].append(claim)
            continue
        found.append([claim])
        if claim.lease is not None:
            grouped[claim.lease] = found[-1]
    return [tuple(run) for run in found]


GONE = "the endpoint answered 410 Gone"
#: Outcomes after which nothing the subscriber is sent can arrive: it is disabled at once, the delivery held.
GONE_OUTCOMES = frozenset({Outcome.HTTP_410, Outcome.ROBOT_GONE})


def gone_reason(attempt: Attempt) -> str:
    """Why a gone outcome disabled the subscriber: the robot's own answer (its error names the platform and code,
    credentials already scrubbed), else 410 Gone."""
    if attempt.outcome is Outcome.ROBOT_GONE and attempt.error:
        return f"the robot answered: {attempt.error}"
    return GONE


def decide(
    claim: Claim,
    attempt: Attempt,
    now: datetime,
    policy: RetryPolicy,
    disable_after: timedelta,
    rand: Callable[[], float],
) -> Decision:
    """What an attempt's outcome means for its delivery and its subscriber (pure, so tests are tables).

    * success: delivered (and the subscriber's failure streak ends);
    * gone (410 Gone, or a chat robot saying its webhook is no more): the subscriber is disabled at once;
      the delivery is held, not dropped, in case an operator resumes it;
    * any other failure: retried after the schedule's next delay (the subscriber's own schedule, else
      ``policy``), or dead when the schedule is used up; and the subscriber is disabled when this
      failure continues a streak that began at least ``disable_after`` ago.
    """
    if attempt.outcome is Outcome.SUCCESS:
        return Decision("delivered")
    if attempt.outcome in GONE_OUTCOMES:
        return Decision("pending", next_attempt_at=now, disable_reason=gone_reason(attempt))
    schedule = policy if claim.retry_schedule is None else RetryPolicy(claim.retry_schedule, policy.jitter)
    delay = schedule.next_delay(claim.failures + 1, attempt.retry_after, rand)
    streak = claim.failing_since or now
    reason = None
    if streak <= now - disable_after:
        reason = f"failing continuously since {_moment(streak)}"
    if delay is None:
        return Decision("dead", disable_reason=reason, streak_since=streak)
    return Decision(
        "pending", next_attempt_at=now + timedelta(seconds=delay), disable_reason=reason, streak_since=streak
    )


def _moment(moment: datetime) -> str:
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="seconds") + "Z"
