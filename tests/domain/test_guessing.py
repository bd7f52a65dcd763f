"""The guessing rule, with time stepped by hand: a burst of ``limit`` wrong tokens, then one per share of the
window; sources and checks counted apart; memory bounded under a flood of distinct addresses."""

from __future__ import annotations

import pytest

from relay.domain.guessing import Guesses, retry_after, source_key


def test_a_source_gets_limit_wrong_tokens_then_waits_a_share_of_the_window() -> None:
    guesses = Guesses(limit=10, window=60.0)
    now = 1000.0
    throttled = [guesses.wrong("login", "192.0.2.1", now) for _ in range(10)]
    assert throttled == [False] * 9 + [True]
    assert guesses.wait("login", "192.0.2.1", now) == pytest.approx(6.0)
    assert guesses.wait("login", "192.0.2.1", now + 5.9) > 0
    assert guesses.wait("login", "192.0.2.1", now + 6.0) == 0
    # One more wrong token and it waits again: ten a minute in the long run.
    assert guesses.wrong("login", "192.0.2.1", now + 6.0)
    assert guesses.wait("login", "192.0.2.1", now + 6.0) == pytest.approx(6.0)


def test_a_quiet_source_is_forgiven_at_the_same_pace() -> None:
    guesses = Guesses(limit=10, window=60.0)
    for _ in range(10):
        guesses.wrong("bearer", "192.0.2.1", 0.0)
    # A minute later its whole allowance is back.
    assert [guesses.wrong("bearer", "192.0.2.1", 60.0) for _ in range(10)] == [False] * 9 + [True]


def test_sources_and_checks_are_counted_apart() -> None:
    guesses = Guesses(limit=3, window=60.0)
    for _ in range(3):
        guesses.wrong("bearer", "192.0.2.1", 0.0)
    assert guesses.wait("bearer", "192.0.2.1", 0.0) > 0
    # Someone guessing the admin token does not lock COS's callbacks out, nor another address.
    assert guesses.wait("callback", "192.0.2.1", 0.0) == 0
    assert guesses.wait("bearer", "192.0.2.2", 0.0) == 0


def test_memory_stays_bounded_under_a_flood_of_distinct_sources() -> None:
    guesses = Guesses(limit=10, window=60.0, capacity=1000)
    for number in range(5000):
        guesses.wrong("callback", f"10.{number >> 16}.{(number >> 8) & 255}.{number & 255}", 0.0)
    assert len(guesses) == 1000


def test_the_least_recently_wrong_source_is_forgotten_first() -> None:
    guesses = Guesses(limit=2, window=60.0, capacity=2)
    for _ in range(2):
        guesses.wrong("login", "192.0.2.1", 0.0)
    guesses.wrong("login", "192.0.2.2", 1.0)
    guesses.wrong("login", "192.0.2.1", 2.0)  # wrong again: the most recent now
    guesses.wrong("login", "192.0.2.3", 3.0)
    assert guesses.wait("login", "192.0.2.1", 3.0) > 0
    assert len(guesses) == 2


def test_limit_zero_never_throttles() -> None:
    guesses = Guesses(limit=0, window=60.0)
    assert not any(guesses.wrong("login", "192.0.2.1", 0.0) for _ in range(100))
    assert guesses.wait("login", "192.0.2.1", 0.0) == 0
    assert len(guesses) == 0


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("not an address", "unknown"),
        (None, "unknown"),
    ],
)
def test_an_ipv6_source_is_counted_by_its_64(address: str | None, key: str) -> None:
    assert source_key(address) == key


@pytest.mark.parametrize(("seconds", "header"), [(0.001, "1"), (5.2, "6"), (6.0, "6")])
def test_retry_after_is_whole_seconds_rounded_up(seconds: float, header: str) -> None:
    assert retry_after(seconds) == header
