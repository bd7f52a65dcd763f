"""Subscribers in the store, the same on both backends: added, changed, paused and resumed, their secret rotated
with a grace period, removed (their unfinished deliveries cancelled, their name free again)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest

from relay.deliver.signing import generate_secret
from relay.deliver.worker import LEASE_MARGIN
from relay.domain.clock import utc_now
from relay.domain.delivery import Claim
from relay.domain.filters import Filter
from relay.domain.subscribers import SubscriberSpec, SubscriberState
from relay.store import Store, store_for
from relay.store.records import Target
from relay.store.sealing import PREFIX, Sealer, generate_key, parse_keys
from tests.conftest import job_body, record
from tests.databases import rows


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
            store.update_subscriber("hook", {"name": "mine"}, at)  # type: ignore[typeddict-unknown-key]
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


def test_a_secret_changed_outright_drops_the_previous_one_and_is_sealed_at_rest(database: Target) -> None:
    # A change of kind sets the secret outright: the one before it, in its grace or not, signs nothing after.
    at, sealer = utc_now(), Sealer([parse_keys(generate_key())[0]])
    with store_for(database, sealer=sealer) as store:
        first = store.add_subscriber(spec("hook"), at)
        second = generate_secret()
        store.rotate_secret("hook", second, at + timedelta(hours=1), at)
        third = generate_secret()
        changed = store.update_subscriber("hook", {"timeout": 3.0, "secret": third}, at)
        assert changed is not None
        assert (changed.secret, changed.previous_secret, changed.previous_secret_expires_at) == (third, None, None)
        assert changed.signing_secrets(at) == [third]
        assert changed.timeout == 3.0
        assert first.secret not in changed.signing_secrets(at)
        [claim] = asyncio.run(_claim_after(store, at))
        assert claim.secrets == (third,)
        # '' (a robot that does not sign) is stored as it is.
        unsigned = store.update_subscriber("hook", {"secret": ""}, at)
        assert unsigned is not None
        assert (unsigned.secret, unsigned.previous_secret) == ("", None)
        store.update_subscriber("hook", {"secret": third}, at)
    [row] = rows(database, "SELECT secret, previous_secret, previous_secret_expires_at FROM subscribers")
    assert row["secret"].startswith(PREFIX)
    assert (row["previous_secret"], row["previous_secret_expires_at"]) == (None, None)


async def _claim_after(store: Store, at: datetime) -> list[Claim]:
    """The claims of an event recorded now: what the delivery worker would sign with."""
    await record(store, job_body(1), at=at)
    return await store.claim(utc_now() + timedelta(seconds=1), LEASE_MARGIN, 10)


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
