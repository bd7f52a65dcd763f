"""Retry schedule: parsing, jittered delays, Retry-After within bounds, and the point of giving up."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, strategies as st

from relay.domain.retry import DEFAULT_SCHEDULE, RetryPolicy, parse_schedule


def midpoint() -> float:
    return 0.5


def lowest() -> float:
    return 0.0


def highest() -> float:
    return 1.0


def test_default_schedule_is_svix_five_seconds_to_ten_hours_seven_retries() -> None:
    assert DEFAULT_SCHEDULE == (5, 300, 1800, 7200, 18000, 36000, 36000)
    assert RetryPolicy().schedule == DEFAULT_SCHEDULE


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5,300,1800", (5.0, 300.0, 1800.0)),
        (" 5 , 300 ,1800 ", (5.0, 300.0, 1800.0)),
        ("0", (0.0,)),
        ("0.5,1.25", (0.5, 1.25)),
        ("1e3", (1000.0,)),
    ],
)
def test_parse_schedule_reads_comma_separated_seconds(text: str, expected: tuple[float, ...]) -> None:
    assert parse_schedule(text) == expected


@pytest.mark.parametrize(
    "text", ["", "   ", "5,,10", "5,", ",5", "five", "5;300", "-1", "5,-0.1", "nan", "inf", "5,1e400", "0x10"]
)
def test_parse_schedule_rejects_junk_negatives_and_empty(text: str) -> None:
    with pytest.raises(ValueError, match="retry"):
        parse_schedule(text)


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(1, 5.0), (2, 300.0), (3, 1800.0), (4, 7200.0), (5, 18000.0), (6, 36000.0), (7, 36000.0)],
)
def test_without_jitter_draw_the_nth_failure_waits_the_nth_delay(attempt: int, expected: float) -> None:
    assert RetryPolicy().next_delay(attempt, None, midpoint) == pytest.approx(expected)


@pytest.mark.parametrize("attempt", [8, 9, 100])
def test_after_the_schedule_is_exhausted_the_message_is_dead(attempt: int) -> None:
    assert RetryPolicy().next_delay(attempt, None, midpoint) is None


def test_a_dead_message_stays_dead_even_if_the_subscriber_asks_to_retry_later() -> None:
    assert RetryPolicy().next_delay(8, 10.0, midpoint) is None


@pytest.mark.parametrize("attempt", [0, -1])
def test_attempts_count_from_one(attempt: int) -> None:
    with pytest.raises(ValueError, match="from 1"):
        RetryPolicy().next_delay(attempt, None, midpoint)


@pytest.mark.parametrize(
    ("rand", "expected"),
    [(lowest, 240.0), (midpoint, 300.0), (highest, 360.0)],
)
def test_jitter_spreads_the_delay_by_plus_or_minus_twenty_percent(rand: Callable[[], float], expected: float) -> None:
    assert RetryPolicy().next_delay(2, None, rand) == pytest.approx(expected)


def test_zero_jitter_gives_the_exact_schedule() -> None:
    policy = RetryPolicy(schedule=(10, 20), jitter=0.0)
    assert [policy.next_delay(n, None, highest) for n in (1, 2, 3)] == [10.0, 20.0, None]


@pytest.mark.parametrize(
    ("attempt", "retry_after", "expected"),
    [
        (1, 7.0, 7.0),  # 429 with Retry-After: 7 after the first failure: wait 7 s, not 5 s
        (1, 2.0, 5.0),  # Retry-After shorter than the schedule: the schedule wins
        (2, 600.0, 600.0),
        (2, 86400.0, 3600.0),  # a day is capped to an hour
        (6, 60.0, 36000.0),  # never sooner than the schedule
        (6, 86400.0, 36000.0),  # cap below the schedule: the schedule still wins
        (1, 0.0, 5.0),
        (1, -30.0, 5.0),  # a date in the past
    ],
)
def test_retry_after_is_honoured_between_the_schedule_delay_and_the_cap(
    attempt: int, retry_after: float, expected: float
) -> None:
    assert RetryPolicy().next_delay(attempt, retry_after, midpoint) == pytest.approx(expected)


def test_retry_after_cap_is_configurable() -> None:
    policy = RetryPolicy(retry_after_cap=120.0)
    assert policy.next_delay(1, 1000.0, midpoint) == pytest.approx(120.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"schedule": (5.0, -1.0)},
        {"schedule": (float("nan"),)},
        {"jitter": -0.1},
        {"jitter": 1.5},
        {"retry_after_cap": -1.0},
        {"retry_after_cap": float("nan")},
    ],
)
def test_nonsensical_policies_are_refused_at_construction(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_an_empty_schedule_means_no_retries() -> None:
    assert RetryPolicy(schedule=()).next_delay(1, None, midpoint) is None


@given(
    attempt=st.integers(min_value=1, max_value=len(DEFAULT_SCHEDULE)),
    draw=st.floats(min_value=0.0, max_value=1.0),
    retry_after=st.none() | st.floats(min_value=-1e9, max_value=1e9),
)
def test_every_delay_lies_within_jitter_bounds_or_the_capped_retry_after(
    attempt: int, draw: float, retry_after: float | None
) -> None:
    policy = RetryPolicy()
    delay = policy.next_delay(attempt, retry_after, lambda: draw)
    base = DEFAULT_SCHEDULE[attempt - 1]
    assert delay is not None
    assert base * 0.8 - 1e-9 <= delay
    upper = base * 1.2 if retry_after is None else max(base * 1.2, min(retry_after, policy.retry_after_cap))
    assert delay <= upper + 1e-9


@pytest.mark.parametrize("text", ["1e308", "604800.5", "٣", "1_0", "5,\uff11", ",".join(["1"] * 21)])
def test_parse_schedule_refuses_delays_past_a_week_non_ascii_digits_and_more_than_twenty_steps(text: str) -> None:
    with pytest.raises(ValueError, match="retry"):
        parse_schedule(text)


def test_parse_schedule_takes_up_to_a_week_a_step_and_twenty_steps_and_no_more() -> None:
    assert parse_schedule("604800") == (604800.0,)
    assert parse_schedule(",".join(["1"] * 20)) == (1.0,) * 20
    with pytest.raises(ValueError, match="retry delay '604801' is not a number of seconds from 0 to 604800"):
        parse_schedule("604801")
    with pytest.raises(ValueError, match="a retry schedule is 1 to 20 delays, not 21"):
        parse_schedule(",".join(["1"] * 21))


def test_a_schedule_stored_before_steps_were_bounded_waits_at_most_a_week_and_a_fifth() -> None:
    # A step of 1e308 s once made the next attempt's time overflow, and the delivery loop on every lease.
    delay = RetryPolicy(schedule=(1e308,)).next_delay(1, None, highest)
    assert delay is not None
    assert delay <= 7 * 24 * 3600 * 1.2
