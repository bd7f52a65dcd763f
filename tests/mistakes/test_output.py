"""What commands print: the public callback URL, human units, options after the subcommand, the allow-list."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from relay.cli import main
from relay.cli.units import duration, instant
from relay.store.records import Target
from tests.conftest import ingest, job_body, job_id
from tests.live import ProcessServer, db_text
from tests.mistakes.commands import cos_relay


def _made(db: Target) -> Target:
    ProcessServer(db).start().stop()
    return db


@pytest.mark.slow
def test_tokens_prints_the_callback_url_on_relay_public_url(database: Target) -> None:
    db = _made(database)
    result = cos_relay("tokens", "--db", db_text(db), env={"RELAY_PUBLIC_URL": "https://relay.example.com/"})
    assert result.returncode == 0, result.stderr
    assert "callback URL: https://relay.example.com/cos/callback?token=" in result.stdout
    flag = CliRunner().invoke(main, ["tokens", "--db", db_text(db), "--public-url", "https://cos.example.org"])
    assert "callback URL: https://cos.example.org/cos/callback?token=" in flag.output


@pytest.mark.slow
def test_serve_banner_prints_the_callback_url_on_the_public_url(database: Target) -> None:
    server = ProcessServer(database, args=("--public-url", "https://relay.example.com"))
    output = server.start().stop()
    assert "Callback URL for the COS console: https://relay.example.com/cos/callback?token=<run" in output


@pytest.mark.slow
def test_jobs_show_takes_db_after_the_subcommand(database: Target) -> None:
    db = _made(database)
    ingest(db, job_body(7))
    after = cos_relay("jobs", "show", job_id(7), "--db", db_text(db))
    assert after.returncode == 0, after.stderr
    assert f"job_id     {job_id(7)}" in after.stdout
    before = CliRunner().invoke(main, ["jobs", "--db", db_text(db), "show", job_id(7)])
    assert before.exit_code == 0, before.output
    assert before.output == after.stdout


@pytest.mark.slow
def test_jobs_show_prints_received_times_readably(database: Target) -> None:
    db = _made(database)
    ingest(db, job_body(8))
    result = CliRunner().invoke(main, ["jobs", "show", job_id(8), "--db", db_text(db)])
    history = result.output.split("history:")[1]
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC  ", history.splitlines()[2]), history


def test_durations_are_printed_in_human_units() -> None:
    assert duration(8.385999990423443e-06) == "8.386 µs"
    assert duration(0.0012) == "1.2 ms"
    assert duration(3.5) == "3.5 s"
    assert duration(0.0) == "0 s"
    assert duration(None) == "-"


def test_instants_are_printed_to_the_millisecond_in_utc() -> None:
    assert instant("2024-11-05T10:00:00.123456Z") == "2024-11-05 10:00:00.123 UTC"
    assert instant(None) == "-"


@pytest.mark.slow
def test_a_loopback_subscriber_url_is_refused_naming_the_allow_list_setting(database: Target) -> None:
    db = _made(database)
    result = cos_relay("subscribers", "add", "local", "--url", "http://127.0.0.1:9/hook", "--db", db_text(db))
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "127.0.0.1 is loopback" in result.stderr
    assert "RELAY_ALLOW_NETWORKS (--allow-networks)" in result.stderr


@pytest.mark.slow
def test_serve_logs_the_allow_list_at_start(database: Target) -> None:
    output = ProcessServer(database, args=("--allow-networks", "10.0.0.0/8")).start().stop()
    assert "subscriber URLs may reach non-public networks: 10.0.0.0/8" in output
    default = ProcessServer(database).start().stop()
    assert "subscriber URLs may reach non-public networks: none (set RELAY_ALLOW_NETWORKS" in default


@pytest.mark.slow
def test_tokens_says_the_callback_url_is_local_until_a_public_url_is_given(database: Target) -> None:
    db = _made(database)
    local = cos_relay("tokens", "--db", db_text(db), env={"RELAY_PUBLIC_URL": ""})
    assert "set RELAY_PUBLIC_URL or --public-url to the one COS reaches" in local.stdout
    public = cos_relay("tokens", "--db", db_text(db), env={"RELAY_PUBLIC_URL": "https://relay.example.com"})
    assert "set RELAY_PUBLIC_URL" not in public.stdout
