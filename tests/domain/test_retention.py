"""The retention rules as plain functions: what may go and when, at a clock that only moves when told."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from relay.domain.retention import (
    FINISHED,
    KINDS,
    OWED,
    Pruned,
    Windows,
    callback_may_go,
    delivery_may_go,
    event_may_go,
    job_record_may_go,
)
from relay.settings.durations import Duration
from tests.fakes import FakeClock

DAY = 86400.0


def test_the_cutoffs_are_the_windows_back_from_now() -> None:
    clock = FakeClock()
    cutoffs = Windows.of_seconds(30 * DAY, 90 * DAY).cutoffs(clock())
    assert cutoffs.raw == clock.now - timedelta(days=30)
    assert cutoffs.jobs == clock.now - timedelta(days=90)


def test_a_zero_window_keeps_its_kinds_forever() -> None:
    clock = FakeClock()
    cutoffs = Windows.of_seconds(math.inf, math.inf).cutoffs(clock())
    clock.advance(3650 * DAY)
    assert (cutoffs.raw, cutoffs.jobs) == (None, None)
    assert not callback_may_go(clock.now - timedelta(days=3000), cutoffs)
    assert not job_record_may_go(clock.now - timedelta(days=3000), cutoffs)


@pytest.mark.parametrize("state", FINISHED)
def test_a_finished_delivery_goes_once_created_before_the_window(state: str) -> None:
    clock = FakeClock()
    created = clock()
    windows = Windows.of_seconds(30 * DAY, 90 * DAY)
    clock.advance(30 * DAY - 1)
    assert not delivery_may_go(state, created, windows.cutoffs(clock()))
    clock.advance(2)
    assert delivery_may_go(state, created, windows.cutoffs(clock()))


@pytest.mark.parametrize("state", OWED)
def test_a_delivery_still_owed_never_goes_whatever_its_age(state: str) -> None:
    clock = FakeClock()
    created = clock()
    clock.advance(3650 * DAY)
    assert not delivery_may_go(state, created, Windows.of_seconds(1, 1).cutoffs(clock()))


def test_an_event_goes_only_once_old_and_no_delivery_is_left_to_need_it() -> None:
    clock = FakeClock()
    created = clock()
    clock.advance(31 * DAY)
    cutoffs = Windows.of_seconds(30 * DAY, 90 * DAY).cutoffs(clock())
    assert not event_may_go(created, 1, cutoffs)
    assert event_may_go(created, 0, cutoffs)
    assert not event_may_go(clock(), 0, cutoffs)


def test_job_records_follow_the_job_window_not_the_raw_one() -> None:
    clock = FakeClock()
    stamped = clock()
    windows = Windows.of_seconds(30 * DAY, 90 * DAY)
    clock.advance(60 * DAY)
    assert callback_may_go(stamped, windows.cutoffs(clock()))
    assert not job_record_may_go(stamped, windows.cutoffs(clock()))
    clock.advance(31 * DAY)
    assert job_record_may_go(stamped, windows.cutoffs(clock()))


def test_pruned_adds_batches_up_per_kind() -> None:
    pruned = Pruned()
    pruned.add({"callbacks": 2, "events": 1})
    pruned.add({"callbacks": 3})
    assert (pruned.counts["callbacks"], pruned.total) == (5, 6)
    assert list(pruned.counts) == list(KINDS)


@pytest.mark.parametrize(
    ("text", "seconds"), [("30d", 30 * DAY), ("12h", 43200), ("45m", 2700), ("90s", 90), ("1.5h", 5400), ("7", 7)]
)
def test_a_duration_is_written_with_its_unit(text: str, seconds: float) -> None:
    assert Duration().parse(text) == seconds


@pytest.mark.parametrize("text", ["-1d", "1w", "٣d", "1e3d", "nan", "3651d", "d", ""])
def test_a_duration_refuses_what_it_does_not_mean(text: str) -> None:
    with pytest.raises(ValueError, match="a duration like 30d"):
        Duration().parse(text)


def test_zero_and_forever_are_durations_only_where_they_are_allowed() -> None:
    assert Duration(zero=True).parse("0s") == 0
    assert Duration(forever=True).parse("Forever") == math.inf
    with pytest.raises(ValueError, match="more than 0"):
        Duration().parse("0d")
    with pytest.raises(ValueError, match="is not"):
        Duration().parse("forever")


def test_a_zero_window_keeps_nothing_older_than_now() -> None:
    clock = FakeClock()
    assert Windows.of_seconds(0, 0).cutoffs(clock()).raw == clock()


def test_a_duration_is_shown_in_its_largest_whole_unit() -> None:
    kind = Duration(zero=True, forever=True)
    shown = [kind.show(v) for v in (30 * DAY, 7200, 90, 0, 1.5, math.inf)]
    assert shown == ["30d", "2h", "90s", "0s", "1.5s", "forever"]
