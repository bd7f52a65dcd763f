"""One grammar of durations wherever a duration or a moment is accepted (issue 25, item 4): ``since=2h`` in the
API as in the console, ``RELAY_RETRY_SCHEDULE=5s,5m,2h`` as the retention settings take ``30d``, and a
subscriber's ``retry_schedule`` written as durations; each refusal says what it takes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from relay.api.params import parse_since
from relay.domain.retry import parse_schedule
from relay.settings.table import setting_named
from tests.conftest import TRANSCODE, callback_url


@pytest.mark.parametrize(
    ("written", "seconds"), [("5s,5m,2h", (5, 300, 7200)), ("5,300", (5, 300)), ("1.5h,1d", (5400, 86400))]
)
def test_a_retry_schedule_takes_durations_as_the_retention_settings_do(
    written: str, seconds: tuple[float, ...]
) -> None:
    assert parse_schedule(written) == seconds
    assert setting_named("retry_schedule").kind.parse(written) == seconds  # RELAY_RETRY_SCHEDULE, --retry-schedule


@pytest.mark.parametrize("written", ["5 minutes", "8d", "-5s", "5m,"])
def test_a_retry_schedule_out_of_the_grammar_or_range_says_what_it_takes(written: str) -> None:
    with pytest.raises(ValueError, match=r"like 5s, 5m or 2h|empty|retry delay"):
        parse_schedule(written)


def test_since_in_the_api_takes_a_duration_like_the_console(module_admin: httpx.Client) -> None:
    assert module_admin.post(callback_url(), content=TRANSCODE).status_code == 200
    recent = module_admin.get("/api/jobs", params={"since": "2h"})
    assert recent.status_code == 200, recent.text
    assert len(recent.json()["items"]) == 1
    assert module_admin.get("/api/jobs", params={"since": "2000-01-01T00:00:00Z"}).json()["items"]
    refused = module_admin.get("/api/jobs", params={"since": "two hours"})
    assert refused.status_code == 400
    assert "look like 2h, 30m, 7d or an ISO-8601 instant" in refused.json()["detail"]


def test_a_subscribers_retry_schedule_is_written_as_durations_and_answered_in_seconds(
    module_admin: httpx.Client,
) -> None:
    created = module_admin.post(
        "/api/subscribers",
        json={"name": "durations", "url": "https://8.8.8.8/hook", "retry_schedule": ["5s", "5m", 7200]},
    )
    assert created.status_code == 201, created.text
    assert created.json()["retry_schedule"] == [5, 300, 7200]
    refused = module_admin.post(
        "/api/subscribers", json={"name": "bad", "url": "https://8.8.8.8/hook", "retry_schedule": ["soon"]}
    )
    assert refused.status_code == 400
    assert "a list of delays (seconds, or durations like 5m)" in refused.json()["detail"]


def test_a_plain_number_of_seconds_is_a_duration_too() -> None:
    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    assert parse_since("90", now) == now - timedelta(seconds=90)
    assert parse_since("1.5h", now) == now - timedelta(minutes=90)
