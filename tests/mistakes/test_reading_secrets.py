"""An operator can read a subscriber's current secret(s) on purpose; lists, shows and logs never carry them."""

from __future__ import annotations

import httpx
import pytest

from relay.store import store_for
from relay.store.records import Target
from tests.live import db_text
from tests.mistakes.commands import cos_relay

PUBLIC_URL = "https://8.8.8.8/hooks/cos"
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NEWER = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"


@pytest.mark.slow
def test_subscribers_secret_prints_the_current_and_the_previous_secret(database: Target) -> None:
    db = database
    with store_for(db):
        pass
    assert (
        cos_relay("subscribers", "add", "hook", "--url", PUBLIC_URL, "--secret", SECRET, "--db", db_text(db)).returncode
        == 0
    )
    shown = cos_relay("subscribers", "secret", "hook", "--db", db_text(db))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == [f"secret: {SECRET}"]
    rotated = cos_relay("subscribers", "rotate-secret", "hook", "--secret", NEWER, "--db", db_text(db))
    assert rotated.returncode == 0, rotated.stderr
    both = cos_relay("subscribers", "secret", "hook", "--db", db_text(db)).stdout.splitlines()
    assert both[0] == f"secret: {NEWER}"
    assert both[1].startswith(f"previous_secret: {SECRET} (signs too until ")
    for listing in (("subscribers", "list"), ("subscribers", "show", "hook")):
        printed = cos_relay(*listing, "--db", db_text(db)).stdout
        assert SECRET not in printed
        assert NEWER not in printed


@pytest.mark.slow
def test_subscribers_secret_of_an_unknown_name_exits_1(database: Target) -> None:
    db = database
    with store_for(db):
        pass
    result = cos_relay("subscribers", "secret", "nope", "--db", db_text(db))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["Error: no subscriber is named 'nope' (known: none yet)"]


def test_api_secret_endpoint_needs_the_admin_token_and_lists_never_show_it(
    admin: httpx.Client, client: httpx.Client
) -> None:
    admin.post("/api/subscribers", json={"name": "hook", "url": PUBLIC_URL, "secret": SECRET}).raise_for_status()
    assert client.get("/api/subscribers/hook/secret").status_code == 401
    response = admin.get("/api/subscribers/hook/secret")
    assert response.status_code == 200
    assert response.json() == {
        "name": "hook",
        "secret": SECRET,
        "previous_secret": None,
        "previous_secret_expires_at": None,
    }
    assert SECRET not in admin.get("/api/subscribers").text
    assert SECRET not in admin.get("/api/subscribers/hook").text
    assert admin.get("/api/subscribers/nope/secret").status_code == 404
