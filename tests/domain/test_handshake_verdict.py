"""The CloudEvents handshake's verdict as the API shows it: granted, refused, or pending until the receiver answered
at the subscriber's current URL; never the URL asked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from relay.domain.destinations import Handshake, Rate, handshake_verdict

NOW = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
URL = "https://hooks.example/in?token=s3cr3t-0123456789"
PENDING = {"state": "pending", "checked_at": None, "expires_at": None, "allowed_rate": None, "detail": None}


def test_a_receiver_never_asked_is_pending() -> None:
    assert handshake_verdict(None, URL) == PENDING


def test_a_grant_shows_when_until_when_and_the_rate_allowed_but_not_the_url() -> None:
    grant = Handshake(7, URL, True, Rate(120, 60), "granted to *, at most 120/m", NOW, NOW + timedelta(days=1))
    shown = handshake_verdict(grant, URL)
    assert shown == {
        "state": "granted",
        "checked_at": "2026-12-07T06:00:00+00:00",
        "expires_at": "2026-12-08T06:00:00+00:00",
        "allowed_rate": "120/m",
        "detail": "granted to *, at most 120/m",
    }
    assert "s3cr3t" not in str(shown)


def test_a_refusal_has_no_expiry_it_is_asked_again_at_the_next_attempt() -> None:
    refusal = Handshake(7, URL, False, None, "refused: answered 403 without WebHook-Allowed-Origin", NOW, NOW)
    assert handshake_verdict(refusal, URL) == {
        "state": "refused",
        "checked_at": "2026-12-07T06:00:00+00:00",
        "expires_at": None,
        "allowed_rate": None,
        "detail": "refused: answered 403 without WebHook-Allowed-Origin",
    }


def test_a_verdict_for_a_url_since_changed_is_pending_again() -> None:
    grant = Handshake(7, URL, True, None, "granted to *", NOW, NOW + timedelta(days=1))
    assert handshake_verdict(grant, "https://hooks.example/new") == PENDING
