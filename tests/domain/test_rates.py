"""A subscriber's rate: how it is written, and the pacing (GCRA) that holds it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from relay.domain.destinations import Rate, parse_rate

NOW = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)


@pytest.mark.parametrize(("written", "rate"), [("10/s", Rate(10, 1)), ("600/m", Rate(600, 60)), (" 1/m ", Rate(1, 60))])
def test_a_rate_is_a_count_per_second_or_minute(written: str, rate: Rate) -> None:
    assert parse_rate(written) == rate
    assert str(rate) == written.strip()


@pytest.mark.parametrize("written", ["10", "10/h", "0/s", "-1/s", "1.5/s", "10 / s", "20000/s", "ten/s", ""])
def test_anything_else_is_refused_naming_the_form(written: str) -> None:
    with pytest.raises(ValueError, match=r"rate"):
        parse_rate(written)


def test_up_to_ten_a_second_starts_are_evenly_spaced() -> None:
    rate = parse_rate("4/s")
    first = rate.pace(NOW, None, wanted=10)
    assert (first.allowed, first.free_at) == (1, NOW + timedelta(seconds=0.25))
    assert rate.pace(NOW + timedelta(seconds=0.2), first.free_at, wanted=10).allowed == 0
    assert rate.pace(NOW + timedelta(seconds=0.25), first.free_at, wanted=10).allowed == 1


def test_a_faster_rate_starts_a_tenth_of_a_second_at_once_then_keeps_pace() -> None:
    rate = parse_rate("100/s")
    burst = rate.pace(NOW, None, wanted=50)
    assert burst.allowed == 10
    later = rate.pace(NOW + timedelta(seconds=0.05), burst.free_at, wanted=50)
    assert later.allowed == 5


def test_a_quiet_spell_earns_no_more_than_the_burst() -> None:
    rate = parse_rate("100/s")
    spent = rate.pace(NOW, None, wanted=10)
    assert rate.pace(NOW + timedelta(hours=1), spent.free_at, wanted=1000).allowed == 10


def test_no_span_of_the_rates_period_holds_more_than_count_and_burst() -> None:
    rate = parse_rate("30/s")
    starts: list[datetime] = []
    free_at = None
    moment = NOW
    while moment < NOW + timedelta(seconds=5):
        pacing = rate.pace(moment, free_at, wanted=1000)
        starts += [moment] * pacing.allowed
        free_at = pacing.free_at if pacing.allowed else free_at
        moment += timedelta(milliseconds=7)
    most = max(sum(1 for start in starts if at <= start < at + timedelta(seconds=1)) for at in starts)
    assert rate.count <= most <= rate.count + rate.burst
    assert len(starts) <= 5 * rate.count + rate.burst
