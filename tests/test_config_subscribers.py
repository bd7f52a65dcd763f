"""Declarative subscribers: a TOML file applied at every start, through the app factory and `cos-relay serve`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from relay.app.factory import create_app
from relay.cli import main
from relay.deliver.signing import generate_secret
from relay.domain.callback import Received
from relay.domain.clock import utc_now
from relay.domain.errors import BadSubscriber
from relay.domain.subscribers import Subscriber
from relay.ingest import Ingest, Reader
from relay.settings.table import Settings
from relay.store import store_for
from relay.store.records import Target
from tests.conftest import ADMIN_TOKEN, CALLBACK_TOKEN, DATA, callback_schema
from tests.live import ProcessServer, ThreadServer, db_text, free_port

TRANSCODE = (DATA / "samples" / "transcode_success.xml").read_bytes()
LOOPBACK = {"RELAY_ALLOW_NETWORKS": "127.0.0.0/8"}
SERVE_ARGS = ("--callback-token", CALLBACK_TOKEN, "--admin-token", ADMIN_TOKEN)


def nowhere() -> str:
    """A loopback URL nothing listens on."""
    return f"http://127.0.0.1:{free_port()}/hook"


def toml(value: Any) -> str:
    """``value`` as a TOML value (strings, numbers, arrays and inline tables are all the tests need)."""
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string of plain characters is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(toml(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{key} = {toml(item)}" for key, item in value.items()) + " }"
    return str(value)


def entry(name: str, url: str, **fields: Any) -> str:
    """One ``[[subscribers]]`` table."""
    table = {"name": name, "url": url, **fields}
    return "[[subscribers]]\n" + "".join(f"{key} = {toml(value)}\n" for key, value in table.items())


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return tmp_path / "subscribers.toml"


@pytest.fixture
def config_settings(settings: Settings, config: Path) -> Settings:
    return settings.replace(config_path=config, allow_networks="127.0.0.0/8")


@contextlib.contextmanager
def running(settings: Settings) -> Iterator[httpx.Client]:
    """The gateway on loopback for the duration of the block: one start, one stop."""
    server = ThreadServer(create_app(settings, schema=callback_schema())).start()
    try:
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30
        ) as client:
            yield client
    finally:
        server.stop()


def stored(db: Target) -> dict[str, Subscriber]:
    """What the database holds, secrets included."""
    with store_for(db) as store:
        return {subscriber.name: subscriber for subscriber in store.list_subscribers()}


def start_app(settings: Settings) -> None:
    """Run the app's lifespan (startup and shutdown), raising whatever startup raised."""
    app = create_app(settings, schema=callback_schema())

    async def lifespan() -> None:
        async with app.router.lifespan_context(app):
            pass

    asyncio.run(lifespan())


# -- the app factory ---------------------------------------------------------------------------------


def test_subscribers_in_the_file_are_created_at_start(config: Path, config_settings: Settings) -> None:
    billing_secret, search_secret = generate_secret(), generate_secret()
    billing_url, search_url = nowhere(), nowhere()
    config.write_text(
        entry(
            "billing",
            billing_url,
            secret=billing_secret,
            types=["cos.job.succeeded", "cos.job.failed"],
            filters={"tag": "Transcode", "object_prefix": "uploads/"},
            max_in_flight=1,
            timeout=3.5,
            retry_schedule=[1, 60, 600],
        )
        + entry("search", search_url, secret=search_secret)
    )
    with running(config_settings) as api:
        listed = {item["name"]: item for item in api.get("/api/subscribers").json()["items"]}
    assert set(listed) == {"billing", "search"}
    billing = listed["billing"]
    assert billing["url"] == billing_url
    assert billing["source"] == "config"
    assert billing["state"] == "enabled"
    assert billing["types"] == ["cos.job.succeeded", "cos.job.failed"]
    assert billing["filters"] == {"tag": "Transcode", "object_prefix": "uploads/"}
    assert billing["max_in_flight"] == 1
    assert billing["timeout"] == 3.5
    assert billing["retry_schedule"] == [1.0, 60.0, 600.0]
    assert billing["secret"] == f"{billing_secret[:10]}…"
    search = listed["search"]
    assert search["types"] == ["*"]
    assert search["filters"] == {}
    assert search["retry_schedule"] is None
    # The secrets are exactly the file's.
    secrets = {name: subscriber.secret for name, subscriber in stored(config_settings.db_path).items()}
    assert secrets == {"billing": billing_secret, "search": search_secret}


@pytest.mark.slow
def test_an_entry_without_a_secret_gets_one_that_survives_restarts(config: Path, config_settings: Settings) -> None:
    config.write_text(entry("hook", nowhere()))
    with running(config_settings):
        pass
    first = stored(config_settings.db_path)["hook"].secret
    assert first.startswith("whsec_")
    with running(config_settings):
        pass
    again = stored(config_settings.db_path)["hook"]
    assert again.secret == first
    assert again.previous_secret is None


def test_restarting_with_an_edited_file_updates_them(config: Path, config_settings: Settings) -> None:
    old_secret, new_secret = generate_secret(), generate_secret()
    config.write_text(entry("hook", nowhere(), secret=old_secret, types=["cos.job.*"], max_in_flight=2))
    with running(config_settings):
        pass
    created_at = stored(config_settings.db_path)["hook"].created_at

    url = nowhere()
    config.write_text(
        entry(
            "hook",
            url,
            secret=new_secret,
            types=["cos.workflow.*"],
            filters={"bucket": "examplebucket-1250000000"},
            max_in_flight=4,
            timeout=9,
            retry_schedule=[30],
        )
    )
    with running(config_settings) as api:
        shown = api.get("/api/subscribers/hook").json()
    assert shown["url"] == url
    assert shown["types"] == ["cos.workflow.*"]
    assert shown["filters"] == {"bucket": "examplebucket-1250000000"}
    assert shown["max_in_flight"] == 4
    assert shown["timeout"] == 9.0
    assert shown["retry_schedule"] == [30.0]
    hook = stored(config_settings.db_path)["hook"]
    assert hook.created_at == created_at  # updated in place, not recreated
    # A new secret in the file is a rotation: the old one keeps signing through the grace period.
    assert hook.secret == new_secret
    assert hook.previous_secret == old_secret
    assert hook.signing_secrets(utc_now()) == [new_secret, old_secret]


def test_the_file_wins_over_api_changes_at_the_next_start(config: Path, config_settings: Settings) -> None:
    url = nowhere()
    config.write_text(entry("hook", url, types=["cos.job.*"]))
    with running(config_settings) as api:
        patched = api.patch("/api/subscribers/hook", json={"url": nowhere(), "types": ["*"]})
        assert patched.status_code == 200, patched.text
    with running(config_settings) as api:
        shown = api.get("/api/subscribers/hook").json()
    assert shown["url"] == url
    assert shown["types"] == ["cos.job.*"]


def test_an_entry_removed_from_the_file_removes_only_what_the_file_created(
    config: Path, config_settings: Settings
) -> None:
    kept_url = nowhere()
    config.write_text(entry("kept", kept_url) + entry("dropped", nowhere()))
    with running(config_settings) as api:
        made_by_api = api.post("/api/subscribers", json={"name": "by-api", "url": nowhere()})
        assert made_by_api.status_code == 201, made_by_api.text
        assert len(api.get("/api/subscribers").json()["items"]) == 3

    config.write_text(entry("kept", kept_url))
    with running(config_settings) as api:
        names = [item["name"] for item in api.get("/api/subscribers").json()["items"]]
        assert api.get("/api/subscribers/dropped").status_code == 404
    assert names == ["by-api", "kept"]

    # An empty file removes every subscriber it made, and still nothing else.
    config.write_text("")
    with running(config_settings) as api:
        names = [item["name"] for item in api.get("/api/subscribers").json()["items"]]
    assert names == ["by-api"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("[[subscribers]\nname = 'x'", ":1:14: not valid TOML: "),
        ("subscribers = 'hook'", ":1: subscribers: must be an array of tables, [[subscribers]]"),
        ("[[subscribers]]\nname = 'hook'", ":1: subscribers[0]: url is required (a string)"),
        ("[[subscribers]]\nurl = 'http://127.0.0.1:9/'", ":1: subscribers[0]: name is required (a string)"),
        (
            "[[subscribers]]\nname = 'hook'\nurl = 'http://127.0.0.1:9/'\ncolour = 'red'",
            ":4: subscribers[0].colour: unknown key (known: name, url",
        ),
        ("[[subscribers]]\nname = 'hook'\nurl = 'http://10.0.0.1/'", "10.0.0.1 is private"),
        ("[[subscribers]]\nname = 'hook'\nurl = 'ftp://127.0.0.1/'", "scheme 'ftp' is not http or https"),
        ("[[subscribers]]\nname = 'hook'\nurl = 'http://127.0.0.1:9/'\nfilters = { colour = 'red' }", "colour"),
        ("[[subscribers]]\nname = 'hook'\nurl = 'http://127.0.0.1:9/'\nsecret = 'short'", "webhook secret"),
        ("[[subscribers]]\nname = 'Hook!'\nurl = 'http://127.0.0.1:9/'", "a subscriber name is 1-63 characters"),
        ("[[subscribers]]\nname = 'hook'\nurl = 'http://127.0.0.1:9/'\nmax_in_flight = 0", "max_in_flight must be"),
        ("[[subscribers]]\nname = 'hook'\nurl = 'http://127.0.0.1:9/'\nretry_schedule = []", "a retry schedule is"),
    ],
    ids=[
        "not-toml",
        "not-an-array",
        "no-url",
        "no-name",
        "unknown-key",
        "private-url",
        "bad-scheme",
        "bad-filter",
        "bad-secret",
        "bad-name",
        "bad-limit",
        "empty-schedule",
    ],
)
def test_a_bad_file_fails_the_start_with_the_reason(
    config: Path, config_settings: Settings, content: str, reason: str
) -> None:
    config.write_text(content)
    with pytest.raises(BadSubscriber) as refused:
        start_app(config_settings)
    assert reason in str(refused.value)
    assert stored(config_settings.db_path) == {}


def test_a_missing_file_fails_the_start(tmp_path: Path, config_settings: Settings) -> None:
    with pytest.raises(BadSubscriber, match=r"missing\.toml: cannot read it: No such file or directory$"):
        start_app(config_settings.replace(config_path=tmp_path / "missing.toml"))


# -- cos-relay serve ---------------------------------------------------------------------------------


def api_get(server: ProcessServer, path: str) -> Any:
    response = httpx.get(f"{server.url}{path}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.slow
def test_serve_config_creates_the_subscribers_with_the_allow_list_from_the_environment(
    database: Target, config: Path
) -> None:
    url = nowhere()
    config.write_text(entry("hook", url, types=["cos.job.*"]))
    server = ProcessServer(database, args=("--config", str(config), *SERVE_ARGS), env=LOOPBACK).start()
    try:
        [hook] = api_get(server, "/api/subscribers")["items"]
    finally:
        server.stop()
    assert hook["name"] == "hook"
    assert hook["url"] == url
    assert hook["source"] == "config"
    assert hook["types"] == ["cos.job.*"]


@pytest.mark.slow
def test_serve_config_refuses_loopback_subscribers_without_the_allow_list(database: Target, config: Path) -> None:
    config.write_text(entry("hook", nowhere()))
    server = ProcessServer(database, args=("--config", str(config), *SERVE_ARGS), env={"RELAY_ALLOW_NETWORKS": ""})
    with pytest.raises(RuntimeError, match=r"127\.0\.0\.1 is loopback"):
        server.start()
    server.stop()


@pytest.mark.slow
def test_serve_with_several_workers_applies_the_config_once_before_they_start(database: Target, config: Path) -> None:
    config.write_text(entry("one", nowhere()) + entry("two", nowhere()))
    args = ("--workers", "2", "--config", str(config), *SERVE_ARGS)
    server = ProcessServer(database, args=args, env=LOOPBACK).start()
    try:
        names = [item["name"] for item in api_get(server, "/api/subscribers")["items"]]
    finally:
        output = server.stop()
    assert names == ["one", "two"]
    assert "Traceback" not in output


def test_serve_with_several_workers_and_a_bad_config_exits_with_the_reason(database: Target, config: Path) -> None:
    config.write_text(entry("hook", "http://10.0.0.1/"))
    args = ["serve", "--db", db_text(database), "--workers", "2", "--config", str(config), *SERVE_ARGS]
    result = CliRunner().invoke(main, args, env={"RELAY_ALLOW_NETWORKS": None})
    assert result.exit_code == 1, result.output
    assert f"Error: {config}:3: subscribers[0].url: the URL is not allowed: 10.0.0.1 is private" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--config", "/nonexistent/subscribers.toml"), "does not exist"),
        (("--retry-schedule", "5,soon"), "retry delay 'soon' is not a number of seconds"),
        (("--allow-networks", "10.0.0.1/8"), "has host bits set"),
    ],
)
def test_serve_refuses_bad_options_before_starting(database: Target, args: tuple[str, ...], message: str) -> None:
    result = CliRunner().invoke(main, ["serve", "--db", db_text(database), *args, *SERVE_ARGS])
    assert result.exit_code == 2, result.output
    assert message in result.output


def wait_for(fetch: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := fetch()):
        if time.monotonic() > deadline:
            raise AssertionError("nothing came in time")
        time.sleep(0.05)
    return value


@pytest.mark.slow
def test_serve_takes_its_config_and_retry_schedule_from_the_environment(database: Target, config: Path) -> None:
    db = database
    config.write_text(entry("hook", nowhere()))  # refused at once; no schedule of its own
    env = {**LOOPBACK, "RELAY_CONFIG": str(config), "RELAY_RETRY_SCHEDULE": "3600,7200"}
    server = ProcessServer(db, args=SERVE_ARGS, env=env).start()
    try:
        assert [item["name"] for item in api_get(server, "/api/subscribers")["items"]] == ["hook"]
        with store_for(db) as store:
            ingest = Ingest(store, Reader(callback_schema()))
            asyncio.run(ingest.ingest(Received(utc_now(), None, None, TRANSCODE, "xml")))
        failed = wait_for(
            lambda: next(
                (d for d in api_get(server, "/api/deliveries?subscriber=hook")["items"] if d["failures"] == 1), None
            )
        )
    finally:
        server.stop()
    # The first retry waits about an hour (3600 s ± jitter), not the built-in schedule's 5 seconds.
    wait = datetime.fromisoformat(failed["next_attempt_at"]) - datetime.fromisoformat(failed["updated_at"])
    assert wait > timedelta(minutes=30)
