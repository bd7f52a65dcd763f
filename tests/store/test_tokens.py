"""Stored secrets, tokens and console sessions, the same on both backends: a secret stored once and kept, a
rotated token's previous one accepted until its grace ends, sessions live until they expire or are ended."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from relay.domain.clock import utc_now
from relay.store import store_for
from relay.store.records import Target


def test_a_secret_is_stored_once_and_the_first_value_kept(database: Target) -> None:
    at = utc_now()
    with store_for(database) as store:
        assert store.secret("session_key", "first", at) == "first"
        assert store.secret("session_key", "second", at) == "first"


def test_a_rotated_tokens_previous_value_lasts_until_its_grace_ends(database: Target) -> None:
    at = utc_now()
    with store_for(database) as store:
        assert store.tokens(at)["callback_token"].value is None
        store.rotate_token("callback_token", "old", "f-old", at, previous_until=None, end_sessions=False)
        grace = at + timedelta(hours=1)
        store.rotate_token("callback_token", "new", "f-new", at, previous_until=grace, end_sessions=False)
        during = store.tokens(at)["callback_token"]
        assert (during.value, during.previous, during.previous_until) == ("new", "old", grace)
        after = store.tokens(grace + timedelta(seconds=1))["callback_token"]
        assert (after.value, after.previous) == ("new", None)
        store.record_token_source("callback_token", "database", "f-new", at)
        assert store.tokens(at)["callback_token"].source == "database"
        assert store.tokens(at)["admin_token"].value is None


def test_sessions_live_until_they_expire_or_end_and_a_rotation_can_end_them_all(database: Target) -> None:
    at, hour = utc_now(), timedelta(hours=1)
    with store_for(database) as store:

        async def start(*names: str) -> None:
            for name in names:
                await store.start_session(name, at + hour, at)

        asyncio.run(start("a", "b", "c"))
        assert asyncio.run(store.session_live("a", at))
        assert not asyncio.run(store.session_live("a", at + 2 * hour))
        assert not asyncio.run(store.session_live("unknown", at))
        assert store.end_sessions(at, "a") == 1
        assert not asyncio.run(store.session_live("a", at))
        assert store.rotate_token("admin_token", "t", "f", at, previous_until=None, end_sessions=True) == 2
        assert not asyncio.run(store.session_live("b", at))
        assert store.end_sessions(at) == 0
