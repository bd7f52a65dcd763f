"""One replica reconciles a COS source an interval: the claim, on both backends."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from relay.store import store_for
from relay.store.records import Target

AT = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def test_a_source_is_claimed_once_an_interval_and_each_source_apart(database: Target) -> None:
    with store_for(database) as store:

        def claim(source: str, at: datetime) -> bool:
            return asyncio.run(store.claim_reconcile(source, at, 300))

        assert claim("media", AT)
        assert not claim("media", AT)  # another replica, the same moment
        assert not claim("media", AT + timedelta(seconds=299))
        assert claim("docs", AT)  # each source has its own interval
        assert claim("media", AT + timedelta(seconds=300))


def test_a_sources_jobs_in_flight_are_replaced_at_each_run_and_listed_oldest_first(database: Target) -> None:
    with store_for(database) as store:
        first = [
            ("j2", "Running", "Transcode", "2026-12-06T11:00:00+0800"),
            ("j1", "Submitted", "Snapshot", "2026-12-06T10:00:00+0800"),
        ]
        asyncio.run(store.replace_in_flight("media", first, AT))
        asyncio.run(store.replace_in_flight("docs", [("d1", "Running", "DocProcess", "2026-12-06T12:00:00+0800")], AT))
        listed = asyncio.run(store.list_in_flight())
        assert [(job["source"], job["job_id"]) for job in listed] == [("media", "j1"), ("media", "j2"), ("docs", "d1")]
        asyncio.run(store.replace_in_flight("media", [], AT + timedelta(minutes=5)))  # all finished since
        assert [job["job_id"] for job in asyncio.run(store.list_in_flight())] == ["d1"]


def test_a_sources_queues_are_replaced_at_each_check_and_listed_by_source(database: Target) -> None:
    with store_for(database) as store:
        checked = [
            ("p2", "media", "bulk", "Paused", "off", False),
            ("p1", "media", "main", "Active", "https://r/cb", True),
        ]
        asyncio.run(store.replace_queues("media", checked, AT))
        asyncio.run(store.replace_queues("docs", [("d1", "documents", "doc", "Active", "off", False)], AT))
        listed = asyncio.run(store.list_queues())
        assert [(queue["source"], queue["queue_id"], queue["here"]) for queue in listed] == [
            ("docs", "d1", False),
            ("media", "p1", True),
            ("media", "p2", False),
        ]
        assert listed[1]["callback"] == "https://r/cb"
        assert listed[1]["checked_at"] == "2026-12-06T12:00:00.000000Z"
        asyncio.run(store.replace_queues("media", [], AT + timedelta(minutes=5)))  # every queue gone since
        assert [queue["queue_id"] for queue in asyncio.run(store.list_queues())] == ["d1"]
