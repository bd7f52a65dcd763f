"""How the store writes an instant: one form, whatever its zone, in text order that is time order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from relay.store.formats import iso, when


def test_an_instant_is_stored_in_one_form_whatever_zone_it_comes_in() -> None:
    moment = datetime(2025, 1, 6, 9, 0, 0, 120, tzinfo=UTC)
    forms = {
        iso(moment),
        iso(moment.astimezone(timezone(timedelta(hours=2)))),
        iso(moment.replace(tzinfo=None)),  # naive means UTC
    }
    assert forms == {"2025-01-06T09:00:00.000120Z"}
    assert when(iso(moment)) == moment
    assert iso(datetime(5, 1, 1, tzinfo=UTC)) == "0005-01-01T00:00:00.000000Z"  # fixed width: text order is time order
