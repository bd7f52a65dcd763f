"""The token rules through their seams: a fake clock for the grace, a fake monotonic clock for how often a running
gateway reads the tokens again, a real store on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from relay.http.auth import DATABASE, Credentials, Tokens, fingerprint, resolve_credentials, rotate, rotation_refused
from relay.settings.table import Settings
from relay.store import Store, store_for
from relay.store.records import StoredToken, Target
from relay.store.sealing import PREFIX, Sealer, generate_key, parse_keys
from tests.conftest import ADMIN_TOKEN, CALLBACK_TOKEN
from tests.databases import rows
from tests.fakes import FakeClock

pytestmark = pytest.mark.anyio

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


class Ticks:
    """A monotonic clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(database: Target) -> Iterator[Store]:
    with store_for(database) as opened:
        yield opened


async def test_the_previous_callback_token_is_accepted_until_its_grace_ends_and_then_refused(
    store: Store, database: Target
) -> None:
    clock, ticks = FakeClock(START), Ticks()
    tokens = Tokens(resolve_credentials(Settings(db_path=database), store, clock), store, clock, ticks)
    old = tokens.credentials.callback_token
    assert await tokens.callback(old) == "current"
    new, _ = rotate(store, "callback_token", timedelta(minutes=10), clock())
    assert await tokens.callback(new) is None  # read less than a second ago: not yet
    ticks.now += 1.0
    assert await tokens.callback(new) == "current"
    assert await tokens.callback(old) == "previous"
    clock.advance(599)
    assert await tokens.callback(old) == "previous"
    clock.advance(1)
    assert await tokens.callback(old) is None
    assert await tokens.callback("") is None


async def test_a_rotation_without_grace_refuses_the_previous_callback_token_at_the_next_read(
    store: Store, database: Target
) -> None:
    clock, ticks = FakeClock(START), Ticks()
    tokens = Tokens(resolve_credentials(Settings(db_path=database), store, clock), store, clock, ticks)
    old = tokens.credentials.callback_token
    rotate(store, "callback_token", timedelta(0), clock())
    assert await tokens.callback(old) is None  # the first check reads them


async def test_the_admin_token_is_read_at_every_check_so_a_rotation_stops_the_old_one_at_once(
    store: Store, database: Target
) -> None:
    clock, ticks = FakeClock(START), Ticks()
    tokens = Tokens(resolve_credentials(Settings(db_path=database), store, clock), store, clock, ticks)
    old = tokens.credentials.admin_token
    assert await tokens.admin(old)
    new, _ = rotate(store, "admin_token", timedelta(days=7), clock())  # no grace for the admin token, whatever asked
    assert not await tokens.admin(old)
    assert await tokens.admin(new)


async def test_configured_tokens_are_never_read_from_the_database(store: Store, database: Target) -> None:
    clock = FakeClock(START)
    settings = Settings(db_path=database, callback_token=CALLBACK_TOKEN, admin_token=ADMIN_TOKEN)
    credentials = resolve_credentials(settings, store, clock, {"admin_token": "RELAY_ADMIN_TOKEN"})
    assert (credentials.callback_source, credentials.admin_source) == (
        "--callback-token or RELAY_CALLBACK_TOKEN",
        "RELAY_ADMIN_TOKEN",
    )
    stored = store.tokens(clock())
    assert stored["admin_token"] == StoredToken(source="RELAY_ADMIN_TOKEN", fingerprint=fingerprint(ADMIN_TOKEN))
    tokens = Tokens(credentials, store, clock)
    assert await tokens.admin(ADMIN_TOKEN)
    assert await tokens.callback(CALLBACK_TOKEN) == "current"


def test_only_a_token_kept_in_the_database_rotates_there(store: Store, database: Target) -> None:
    clock = FakeClock(START)
    assert rotation_refused("admin_token", StoredToken(), None) == (
        "there is no admin token in the database yet: `cos-relay serve` generates one at its first start"
    )
    resolve_credentials(
        Settings(db_path=database, admin_token=ADMIN_TOKEN), store, clock, {"admin_token": "--admin-token"}
    )
    stored = store.tokens(clock())
    assert rotation_refused("admin_token", stored["admin_token"], None) == (
        "the gateway last started with its admin token from --admin-token: change it there and restart the gateway"
        " instead"
    )
    assert rotation_refused("callback_token", stored["callback_token"], "RELAY_CALLBACK_TOKEN") == (
        "the callback token comes from RELAY_CALLBACK_TOKEN here: change it there, and where the gateway runs, instead"
    )
    assert rotation_refused("callback_token", stored["callback_token"], None) is None
    assert stored["callback_token"].source == DATABASE


async def test_starting_with_another_admin_token_ends_every_console_session(store: Store, database: Target) -> None:
    clock = FakeClock(START)
    resolve_credentials(Settings(db_path=database, admin_token=ADMIN_TOKEN), store, clock)
    await store.start_session("one", clock() + timedelta(hours=8), clock())
    resolve_credentials(Settings(db_path=database, admin_token=ADMIN_TOKEN), store, clock)
    assert await store.session_live("one", clock())  # the same token: the session goes on
    resolve_credentials(Settings(db_path=database), store, clock)  # the database's own admin token now
    assert not await store.session_live("one", clock())


async def test_sessions_end_one_or_all_and_expired_ones_are_removed_at_the_next_sign_in(store: Store) -> None:
    clock = FakeClock(START)
    for name in ("a", "b", "c"):
        await store.start_session(name, clock() + timedelta(hours=1), clock())
    assert store.end_sessions(clock(), "a") == 1
    assert not await store.session_live("a", clock())
    assert await store.session_live("b", clock())
    clock.advance(3600)
    assert not await store.session_live("b", clock())  # expired
    await store.start_session("d", clock() + timedelta(hours=1), clock())
    assert store.end_sessions(clock()) == 1  # only d was still live; b and c were removed when d began


def test_credentials_take_only_the_tokens_that_come_from_the_database() -> None:
    credentials = Credentials(CALLBACK_TOKEN, ADMIN_TOKEN, callback_source="RELAY_CALLBACK_TOKEN")
    credentials.take({"callback_token": StoredToken(value="other"), "admin_token": StoredToken(value="kept")})
    assert (credentials.callback_token, credentials.admin_token) == (CALLBACK_TOKEN, "kept")


async def test_a_rotated_token_is_sealed_at_rest_and_read_back_in_clear(database: Target) -> None:
    # A rotation writes the new token and keeps the old one for its grace: both sealed when a key is set.
    sealer = Sealer([parse_keys(generate_key())[0]])
    clock = FakeClock(START)
    with store_for(database, sealer=sealer) as store:
        old = resolve_credentials(Settings(db_path=database), store, clock).callback_token
        new, _ = rotate(store, "callback_token", timedelta(minutes=10), clock())
        stored = store.tokens(clock())["callback_token"]
        assert (stored.value, stored.previous) == (new, old)
    kept = rows(database, "SELECT value FROM secrets WHERE name IN ('callback_token', 'previous_callback_token')")
    assert len(kept) == 2
    assert all(row["value"].startswith(PREFIX) for row in kept)
