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
