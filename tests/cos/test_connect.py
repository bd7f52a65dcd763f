"""``cos-relay cos connect`` and ``cos status`` against the COS stand-in: connect points each of the source's
queues at this gateway (its public URL and the callback token in force, on, TaskFinish and WorkflowFinish, XML);
status says, queue by queue, where the callback points and whether that is this gateway, never showing a token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from relay.cli import main
from relay.store import store_for
from tests.conftest import CALLBACK_TOKEN
from tests.cos.standin import CosStandIn, Queue
from tests.cos.test_client import CREDENTIALS
from tests.cos.test_reconcile_command import config

PUBLIC = "https://relay.example.com"


@pytest.fixture
def standin() -> Iterator[CosStandIn]:
    server = CosStandIn(CREDENTIALS).start()
    server.queues["p1"] = Queue("p1", "main")
    server.queues["p2"] = Queue(
        "p2",
        "bulk",
        notify={"State": "On", "Type": "Url", "Url": "https://other.example/cb?token=x", "Event": "TaskFinish"},
    )
    server.queues["a1"] = Queue("a1", "speech", family="speech")  # a family the source does not reconcile
    yield server
    server.stop()


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        main, ["cos", *args], env={"RELAY_PUBLIC_URL": PUBLIC, "RELAY_CALLBACK_TOKEN": CALLBACK_TOKEN}
    )
    return result.exit_code, result.stdout, result.stderr


def test_connect_points_every_queue_of_the_source_here_and_status_says_so(standin: CosStandIn, tmp_path: Path) -> None:
    file = config(tmp_path / "relay.toml", standin.url)
    db = tmp_path / "relay.db"
    with store_for(db):
        pass
    code, before, _ = run("status", "--config", str(file), "--db", str(db))
    assert code == 0
    assert "media queue p1 (main): Active, callback off: NOT this gateway" in before
    assert "media queue p2 (bulk): Active, callback https://other.example/cb: NOT this gateway" in before
    code, connected, _ = run("connect", "--source", "media", "--config", str(file), "--db", str(db))
    assert code == 0, connected
    assert "media queue p1 (main) now points here" in connected
    for queue in ("p1", "p2"):
        notify = standin.queues[queue].notify
        assert notify["Url"] == f"{PUBLIC}/cos/callback?token={CALLBACK_TOKEN}"
        assert (notify["State"], notify["Type"], notify["Event"], notify["ResultFormat"]) == (
            "On",
            "Url",
            "TaskFinish,WorkflowFinish",
            "XML",
        )
    assert standin.queues["a1"].notify["State"] == "Off"  # not the source's
    code, after, _ = run("status", "--config", str(file), "--db", str(db))
    assert after.count(": this gateway") == 2
    assert CALLBACK_TOKEN not in before + connected + after
    code, again, _ = run("connect", "--source", "media", "--config", str(file), "--db", str(db))
    assert again.count("already points here") == 2


def test_connect_without_a_public_url_or_with_cos_refusing_says_why_in_one_line(
    standin: CosStandIn, tmp_path: Path
) -> None:
    file = config(tmp_path / "relay.toml", standin.url, key="wrongSecretKey000000000000000000000")
    db = tmp_path / "relay.db"
    with store_for(db):
        pass
    code, _, error = run("connect", "--source", "media", "--config", str(file), "--db", str(db))
    assert code == 1
    assert error.strip().splitlines() == [
        "media: not connected: COS answered GET /queue with 403 SignatureDoesNotMatch: check the source's"
        " secret_id and secret_key"
    ]
    missing = CliRunner().invoke(main, ["cos", "connect", "--source", "media", "--config", str(file), "--db", str(db)])
    assert missing.exit_code == 2
    assert "set RELAY_PUBLIC_URL (or --public-url)" in missing.stderr
