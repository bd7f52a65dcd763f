"""Subscribers in the store, the same on both backends: added, changed, paused and resumed, their secret rotated
with a grace period, removed (their unfinished deliveries cancelled, their name free again)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from relay.deliver.signing import generate_secret
from relay.domain.clock import utc_now
from relay.domain.filters import Filter
from relay.domain.subscribers import SubscriberSpec, SubscriberState
from relay.store import store_for
from relay.store.records import Target
from tests.conftest import job_body, record


def spec(name: str) -> SubscriberSpec:
    return SubscriberSpec(name, "http://127.0.0.1:9/hook", generate_secret(), Filter())


def test_a_subscriber_is_added_listed_changed_and_its_state_set(database: Target) -> None:
    at = utc_now()
    with store_for(database) as store:
        added = store.add_subscriber(spec("hook"), at)
        store.add_subscriber(spec("other"), at)
        assert [subscriber.name for subscriber in store.list_subscribers()] == ["hook", "other"]
        assert added.state == SubscriberState.ENABLED
        changed = store.update_subscriber("hook", {"url": "http://127.0.0.1:9/moved", "max_in_flight": 3}, at)
        assert changed is not None
        assert (changed.url, changed.max_in_flight) == ("http://127.0.0.1:9/moved", 3)
        assert store.update_subscriber("nobody", {"url": "http://127.0.0.1:9/x"}, at) is None
        with pytest.raises(ValueError, match="cannot change"):
            store.update_subscriber("hook", {"secret": "mine"}, at)  # type: ignore[typeddict-unknown-key]
        paused = store.set_subscriber_state("hook", SubscriberState.PAUSED, at)
        assert paused is not None
        assert paused.state == SubscriberState.PAUSED
        disabled = store.set_subscriber_state("hook", SubscriberState.DISABLED, at, reason="gone")
        assert disabled is not None
        assert (disabled.state, disabled.disabled_reason) == (SubscriberState.DISABLED, "gone")
        assert store.set_subscriber_state("nobody", SubscriberState.PAUSED, at) is None


def test_a_rotated_secret_keeps_the_previous_one_until_its_grace_ends(database: Target) -> None:
    at = utc_now()
    with store_for(database) as store:
        first = store.add_subscriber(spec("hook"), at)
        new, grace = generate_secret(), at + timedelta(hours=1)
        rotated = store.rotate_secret("hook", new, grace, at)
        assert rotated is not None
        assert (rotated.secret, rotated.previous_secret) == (new, first.secret)
        assert rotated.signing_secrets(at) == [new, first.secret]
        assert rotated.signing_secrets(grace) == [new]
        assert store.rotate_secret("nobody", new, grace, at) is None


def test_removing_a_subscriber_cancels_its_unfinished_deliveries_and_frees_its_name(database: Target) -> None:
    at = utc_now()
    with store_for(database) as store:
        store.add_subscriber(spec("hook"), at)
        asyncio.run(record(store, job_body(1), job_body(2)))
        assert store.remove_subscriber("hook", at) == 2
        assert store.count_deliveries("cancelled") == 2
        assert store.get_subscriber("hook") is None
        assert store.remove_subscriber("hook", at) is None
        again = store.add_subscriber(spec("hook"), at)
        assert again.state == SubscriberState.ENABLED
        assert [subscriber.name for subscriber in store.list_subscribers()] == ["hook"]
