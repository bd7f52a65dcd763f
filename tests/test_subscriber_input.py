"""What a subscriber definition may hold, and what answers about one carry (issue 22, items 9 and 10), against a
real `cos-relay serve` on both backends: one URL validation at every edge (no NUL, no control character),
`migrate-to` naming a row it cannot copy, ``Cache-Control: no-store`` on every answer with a secret, a timeout
of at least 0.1 s, and a subscriber's answers kept only when it asks."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from relay.deliver.signing import generate_secret
from relay.domain.filters import Filter
from relay.domain.subscribers import SubscriberSpec
from relay.store import store_for
from relay.store.records import Target
from tests.conftest import fresh_database
from tests.live import db_text, wait_until
from tests.mistakes.commands import cos_relay
from tests.postgres import Cluster
from tests.sink import Sink
from tests.test_retention_live import admin, post, serve

pytestmark = pytest.mark.slow

PUBLIC_URL = "https://8.8.8.8/hooks/cos"
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NEWER = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    [line] = stderr.strip().splitlines()[-1:]
    assert line.startswith("Error: ")
    return line


@pytest.mark.parametrize("character", ["\x00", "\x85"])
def test_a_subscriber_url_holding_a_nul_or_a_control_character_is_refused_at_every_edge(
    database: Target, tmp_path: Path, character: str
) -> None:
    bad = f"https://8.8.8.8/ok/{character}x"
    server = serve(database)
    try:
        with admin(server) as api:
            created = api.post("/api/subscribers", json={"name": "bad", "url": bad})
            assert created.status_code == 400, created.text
            assert f"U+{ord(character):04X}" in created.json()["detail"]
            assert api.post("/api/subscribers", json={"name": "good", "url": PUBLIC_URL}).status_code == 201
            changed = api.patch("/api/subscribers/good", json={"url": bad})
            assert changed.status_code == 400, changed.text
            assert api.get("/readyz").status_code == 200  # a refusal, not the store failing
            if character != "\x00":  # a command line cannot carry a NUL
                added = cos_relay("subscribers", "add", "cli", "--url", bad, "--db", db_text(database))
                assert added.returncode == 1
                assert "control character" in one_error_line(added.stderr)
            assert [(each["name"], each["url"]) for each in api.get("/api/subscribers").json()["items"]] == [
                ("good", PUBLIC_URL)
            ]
    finally:
        server.stop()
    config = tmp_path / "subscribers.toml"
    config.write_text(f'[[subscribers]]\nname = "toml"\nurl = "https://8.8.8.8/ok/\\u{ord(character):04x}x"\n')
    started = cos_relay("serve", "--db", db_text(database), "--config", str(config), "--port", "0")
    assert started.returncode == 1
    assert "control character" in one_error_line(started.stderr)


def test_migrate_to_names_the_row_it_cannot_copy_in_one_line_and_copies_nothing(
    tmp_path: Path, postgres: Cluster
) -> None:
    source = tmp_path / "relay.db"
    with store_for(source) as store:
        spec = SubscriberSpec(name="hook", url=PUBLIC_URL, secret=generate_secret(), filter=Filter(("*",), {}))
        store.add_subscriber(spec, datetime.now(UTC))
    # A URL with a NUL, as older releases stored it on SQLite.
    with sqlite3.connect(source) as conn:
        conn.execute("UPDATE subscribers SET url = 'https://8.8.8.8/ok/' || char(0) || 'x'")
    conn.close()
    target = fresh_database(postgres)
    moved = cos_relay("migrate-to", target.url, "--db", str(source))
    assert moved.returncode == 1
    assert one_error_line(moved.stderr) == (
        "Error: subscribers row id=1: url holds a NUL character, which PostgreSQL cannot store; correct or remove"
        " that row in the SQLite file, then run migrate-to again"
    )
    with store_for(target) as copy:
        assert copy.list_subscribers() == []


def test_every_answer_carrying_a_secret_says_cache_control_no_store(database: Target) -> None:
    server = serve(database)
    try:
        with admin(server) as api:
            answers = {
                "create": api.post("/api/subscribers", json={"name": "hook", "url": PUBLIC_URL, "secret": SECRET}),
                "secret": api.get("/api/subscribers/hook/secret"),
                "rotate-secret": api.post("/api/subscribers/hook/rotate-secret", json={"secret": NEWER}),
            }
            assert {what: answer.status_code // 100 for what, answer in answers.items()} == dict.fromkeys(answers, 2)
            assert {what: answer.headers.get("cache-control") for what, answer in answers.items()} == dict.fromkeys(
                answers, "no-store"
            )
            assert NEWER in answers["rotate-secret"].text
    finally:
        server.stop()


@pytest.mark.parametrize("timeout", [1e-320, 0.05])
def test_a_subscriber_timeout_outside_a_tenth_of_a_second_to_120_seconds_is_refused_at_every_edge(
    database: Target, timeout: float
) -> None:
    server = serve(database)
    try:
        with admin(server) as api:
            refused = api.post("/api/subscribers", json={"name": "hook", "url": PUBLIC_URL, "timeout": timeout})
            assert refused.status_code == 400, refused.text
            assert refused.json()["detail"] == "timeout must be from 0.1 to 120 seconds"
            assert api.post("/api/subscribers", json={"name": "hook", "url": PUBLIC_URL, "timeout": 0.1}).is_success
            assert api.patch("/api/subscribers/hook", json={"timeout": timeout}).status_code == 400
            assert api.get("/api/subscribers/hook").json()["timeout"] == 0.1
    finally:
        server.stop()
    added = cos_relay(
        "subscribers", "add", "cli", "--url", PUBLIC_URL, "--timeout", repr(timeout), "--db", db_text(database)
    )
    assert added.returncode == 2
    assert "must be a number from 0.1 to 120" in added.stderr


def test_a_subscribers_answers_are_kept_only_when_it_asks_for_it(database: Target, sink: Sink) -> None:
    server = serve(database)
    try:
        with admin(server) as api:
            for name, options in (("kept", {"store_response": True}), ("dropped", {})):
                body: dict[str, Any] = {"name": name, "url": f"{sink.url}/fail/{name}", "retry_schedule": [3600]}
                created = api.post("/api/subscribers", json={**body, **options})
                assert created.status_code == 201, created.text
                assert created.json()["store_response"] is (name == "kept")
            post(server, range(1))
            sink.wait_for("/fail/kept", 1)
            sink.wait_for("/fail/dropped", 1)

            def attempt(name: str) -> dict[str, Any] | None:
                [delivery] = api.get("/api/deliveries", params={"subscriber": name}).json()["items"]
                # By subscriber and event: a delivery of the event log has a row (an id) only once its failure is
                # recorded, which may come after the sink saw the attempt.
                path = f"/api/subscribers/{name}/deliveries/{delivery['event_id']}"
                log = api.get(path).json()["attempts_log"]
                return dict(log[0]) if log else None

            wait_until(lambda: attempt("kept") is not None and attempt("dropped") is not None)
            kept, dropped = attempt("kept"), attempt("dropped")
            assert kept is not None
            assert dropped is not None
            assert (kept["status"], kept["response_body"]) == (500, "boom")
            assert (dropped["status"], dropped["response_body"]) == (500, "")
            changed = api.patch("/api/subscribers/dropped", json={"store_response": "yes"})
            assert changed.status_code == 400
            assert changed.json()["detail"] == "store_response must be true or false"
    finally:
        server.stop()
