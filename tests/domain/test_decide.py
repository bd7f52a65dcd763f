"""The delivery decision as a table: retry, give up, deliver, and disable on 410 (or a chat robot gone) or a long
failure streak."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from relay.domain.delivery import GONE, Attempt, Claim, Decision, Outcome, decide, trigger_of
from relay.domain.retry import RetryPolicy

NOW = datetime(2024, 11, 5, 10, 0, tzinfo=UTC)
DAY = timedelta(days=1)
POLICY = RetryPolicy(schedule=(5, 300), jitter=0.0)


def claim(failures: int = 0, failing_since: datetime | None = None, schedule: tuple[float, ...] | None = None) -> Claim:
    return Claim(
        delivery_id=1,
        event_id="e",
        body=b"{}",
        subscriber_id=7,
        subscriber="hook",
        url="https://example.com/",
        secrets=("whsec_x",),
        timeout=15.0,
        retry_schedule=schedule,
        failures=failures,
        trigger="first",
        created_at=NOW,
        failing_since=failing_since,
    )


def attempt(outcome: Outcome, retry_after: float | None = None) -> Attempt:
    return Attempt(outcome, None, 0.01, None, b"", retry_after)


def never() -> float:
    return 0.5


@pytest.mark.parametrize(
    ("case", "outcome", "failures", "failing_since", "expected"),
    [
        ("success delivers", Outcome.SUCCESS, 0, None, Decision("delivered")),
        ("success ends a long streak", Outcome.SUCCESS, 1, NOW - 9 * DAY, Decision("delivered")),
        (
            "410 disables at once and holds the delivery",
            Outcome.HTTP_410,
            0,
            None,
            Decision("pending", next_attempt_at=NOW, disable_reason=GONE),
        ),
        (
            "first failure retries after the first delay and starts a streak",
            Outcome.HTTP_5XX,
            0,
            None,
            Decision("pending", next_attempt_at=NOW + timedelta(seconds=5), streak_since=NOW),
        ),
        (
            "second failure waits the second delay",
            Outcome.TIMEOUT,
            1,
            NOW - timedelta(minutes=1),
            Decision("pending", next_attempt_at=NOW + timedelta(seconds=300), streak_since=NOW - timedelta(minutes=1)),
        ),
        (
            "a failure past the schedule gives up",
            Outcome.CONNECTION_ERROR,
            2,
            NOW - timedelta(hours=1),
            Decision("dead", streak_since=NOW - timedelta(hours=1)),
        ),
        (
            "a failure continuing a streak as old as the limit disables",
            Outcome.HTTP_4XX,
            0,
            NOW - 5 * DAY,
            Decision(
                "pending",
                next_attempt_at=NOW + timedelta(seconds=5),
                disable_reason="failing continuously since 2024-10-31T10:00:00Z",
                streak_since=NOW - 5 * DAY,
            ),
        ),
        (
            "giving up on a streak past the limit also disables",
            Outcome.HTTP_5XX,
            2,
            NOW - 6 * DAY,
            Decision(
                "dead",
                disable_reason="failing continuously since 2024-10-30T10:00:00Z",
                streak_since=NOW - 6 * DAY,
            ),
        ),
    ],
)
def test_decide_follows_the_table(
    case: str, outcome: Outcome, failures: int, failing_since: datetime | None, expected: Decision
) -> None:
    assert decide(claim(failures, failing_since), attempt(outcome), NOW, POLICY, 5 * DAY, never) == expected, case


def test_a_robot_gone_disables_at_once_as_410_does_naming_the_robots_answer() -> None:
    answered = Attempt(Outcome.ROBOT_GONE, 200, 0.01, "wecom errcode 93000: invalid webhook url", b"", None)
    # Even in the middle of a streak, and with retries left: nothing the robot is sent can arrive.
    decision = decide(claim(1, NOW - DAY), answered, NOW, POLICY, 5 * DAY, never)
    assert decision == Decision(
        "pending", next_attempt_at=NOW, disable_reason="the robot answered: wecom errcode 93000: invalid webhook url"
    )


def test_a_streak_just_younger_than_the_limit_does_not_disable() -> None:
    decision = decide(
        claim(0, NOW - 5 * DAY + timedelta(seconds=1)), attempt(Outcome.HTTP_5XX), NOW, POLICY, 5 * DAY, never
    )
    assert decision.disable_reason is None


def test_the_subscribers_own_schedule_replaces_the_gateways() -> None:
    decision = decide(claim(0, schedule=(60,)), attempt(Outcome.HTTP_5XX), NOW, POLICY, 5 * DAY, never)
    assert decision.next_attempt_at == NOW + timedelta(seconds=60)
    assert decide(claim(1, schedule=(60,)), attempt(Outcome.HTTP_5XX), NOW, POLICY, 5 * DAY, never).state == "dead"


def test_retry_after_stretches_the_delay_of_a_429() -> None:
    decision = decide(claim(0), attempt(Outcome.HTTP_429, retry_after=120.0), NOW, POLICY, 5 * DAY, never)
    assert decision.next_attempt_at == NOW + timedelta(seconds=120)


def test_a_failure_with_a_zero_limit_disables_on_the_first_failure() -> None:
    decision = decide(claim(0), attempt(Outcome.HTTP_5XX), NOW, POLICY, timedelta(0), never)
    assert decision.disable_reason == "failing continuously since 2024-11-05T10:00:00Z"
    assert decision.streak_since == NOW


def test_an_attempt_is_the_first_a_retry_or_one_an_operator_asked_for() -> None:
    assert trigger_of(1, None) == "first"
    assert trigger_of(1, "manual") == "first"  # a requeued delivery never attempted: still its first
    assert trigger_of(3, "http_5xx") == "retry"
    assert trigger_of(3, "manual") == "manual"
