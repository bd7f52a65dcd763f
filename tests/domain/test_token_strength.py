"""How strong a configured token must be: estimated from its text, conservatively, and never quoted."""

from __future__ import annotations

import secrets

import pytest

from relay.domain.tokens import MIN_BITS, estimated_bits, weakness
from relay.http.auth import generate_token


def test_generated_tokens_and_the_suggested_command_s_tokens_are_strong_enough() -> None:
    for _ in range(2000):
        assert weakness(generate_token()) is None
        assert weakness(secrets.token_hex(32)) is None  # `openssl rand -hex 32`, as the refusal suggests


@pytest.mark.parametrize(
    "token",
    [
        "7351",
        "admin",
        "test-admin-token",
        "correct horse battery staple",
        "a" * 100,
        "x7Qx7Q" * 12,
        "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "0123456789" * 8,
        "d41d8cd98f00b204e9800998ecf8427e",  # 32 hex digits, with a repeat: 124 bits at best
    ],
)
def test_short_repeated_or_patterned_tokens_are_too_weak(token: str) -> None:
    assert estimated_bits(token) < MIN_BITS
    reason = weakness(token)
    assert reason is not None
    assert reason.startswith("too weak: about ")
    assert "openssl rand -hex 32" in reason
    assert token not in reason


def test_the_estimate_of_a_pin_is_its_decimal_digits() -> None:
    assert round(estimated_bits("7351"), 1) == 13.3
    assert "about 13 bits" in str(weakness("7351"))
