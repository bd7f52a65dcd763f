"""The command line: serve's first start, validate, jobs, and an installed wheel."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from relay.cli import main
from relay.store import store_for
from relay.store.records import Target
from tests.conftest import ADMIN_TOKEN, CALLBACK_TOKEN, DATA
from tests.live import ProcessServer, db_text, free_port

SAMPLES = sorted((DATA / "samples").glob("*.xml"))
ROOT = Path(__file__).parent.parent


def stored_tokens(db: Target) -> tuple[str, str]:
    """The callback and admin tokens ``cos-relay tokens`` prints for ``db``."""
    shown = CliRunner().invoke(main, ["tokens", "--db", db_text(db)])
    assert shown.exit_code == 0, shown.output
    callback = re.search(r"^callback_token: (\S+)$", shown.output, re.MULTILINE)
    admin = re.search(r"^admin_token: (\S+)$", shown.output, re.MULTILINE)
    assert callback, shown.output
    assert admin, shown.output
    return callback.group(1), admin.group(1)


@pytest.mark.slow
def test_first_start_generates_tokens_keeps_them_and_prints_them_only_on_demand(database: Target) -> None:
    db = database
    server = ProcessServer(db).start()
    output = server.stop()
    # Not a terminal (a journal, a log file): the banner says where to read the tokens, not what they are.
    assert f"`cos-relay tokens --db {db}` prints them" in output, output
    assert "?token=<run `cos-relay tokens" in output
    token, admin = stored_tokens(db)
    assert token not in output
    assert admin not in output
    again = ProcessServer(db).start()
    try:
        body = SAMPLES[0].read_bytes()
        headers = {"Content-Type": "application/xml"}
        assert httpx.post(f"{again.url}/cos/callback?token={token}", content=body, headers=headers).status_code == 200
        assert httpx.post(f"{again.url}/cos/callback?token=x", content=body, headers=headers).status_code == 401
        api = httpx.get(f"{again.url}/api/callbacks", headers={"Authorization": f"Bearer {admin}"})
        assert api.status_code == 200
    finally:
        second_output = again.stop()
    assert token not in second_output  # later starts do not print the secret either
    assert "cos-relay tokens" in second_output


def test_tokens_command_shows_the_stored_tokens(database: Target) -> None:
    db = database
    with store_for(db):  # as serve leaves it: `tokens` never creates a database (issue 15)
        pass
    first = CliRunner().invoke(main, ["tokens", "--db", db_text(db)])
    second = CliRunner().invoke(main, ["tokens", "--db", db_text(db)])
    assert first.exit_code == 0
    assert first.output == second.output
    assert "callback_token: " in first.output


@pytest.mark.slow
def test_insecure_no_token_accepts_callbacks_without_a_token_and_warns(database: Target) -> None:
    server = ProcessServer(database, args=("--insecure-no-token",)).start()
    try:
        response = httpx.post(
            f"{server.url}/cos/callback", content=SAMPLES[0].read_bytes(), headers={"Content-Type": "text/xml"}
        )
        assert response.status_code == 200
    finally:
        output = server.stop()
    assert "insecure" in output.lower()


def test_validate_exits_zero_for_valid_files() -> None:
    result = CliRunner().invoke(main, ["validate", *map(str, SAMPLES)])
    assert result.exit_code == 0, result.output
    assert result.output.count(": valid") == len(SAMPLES)


def test_validate_exits_one_with_path_precise_errors() -> None:
    result = CliRunner().invoke(main, ["validate", str(DATA / "bad" / "invalid_state.xml"), str(SAMPLES[0])])
    assert result.exit_code == 1
    assert "invalid (422)" in result.output
    assert "/Response/JobsDetail" in result.output
    assert "Exploded" in result.output
    bad = CliRunner().invoke(main, ["validate", str(DATA / "bad" / "xxe_external_entity.xml")])
    assert bad.exit_code == 1
    assert "400" in bad.output


@pytest.mark.slow
def test_jobs_lists_and_shows_what_the_api_returns(database: Target) -> None:
    db = database
    server = ProcessServer(db, args=("--callback-token", CALLBACK_TOKEN, "--admin-token", ADMIN_TOKEN)).start()
    try:
        for sample in SAMPLES:
            httpx.post(f"{server.url}/cos/callback?token={CALLBACK_TOKEN}", content=sample.read_bytes())
        listing = CliRunner().invoke(main, ["jobs", "--db", db_text(db), "--state", "Failed"])
        assert listing.exit_code == 0, listing.output
        assert listing.output.splitlines()[0].split() == ["job_id", "state", "tag", "end_time", "object"]
        assert all(" Failed " in line for line in listing.output.splitlines()[1:])
        shown = CliRunner().invoke(main, ["jobs", "--db", db_text(db), "show", "j7c12d4be4c935a96bfe3fb23d1a491e9"])
        assert shown.exit_code == 0, shown.output
        assert "Success" in shown.output
        assert "history:" in shown.output
        missing = CliRunner().invoke(main, ["jobs", "--db", db_text(db), "show", "j0"])
        assert missing.exit_code == 1
    finally:
        server.stop()


@pytest.mark.slow
def test_on_a_terminal_the_first_start_prints_the_callback_url_with_its_token(tmp_path: Path) -> None:
    db = tmp_path / "relay.db"
    port = free_port()
    leader, follower = pty.openpty()
    args = ["serve", "--db", str(db), "--port", str(port), "--public-url", "https://relay.example.com"]
    process = subprocess.Popen([sys.executable, "-m", "relay", *args], stdout=follower, stderr=subprocess.DEVNULL)
    os.close(follower)
    printed = b""
    try:
        while b"Admin API token" not in printed:
            ready, _, _ = select.select([leader], [], [], 30)
            assert ready, printed
            printed += os.read(leader, 4096)
    finally:
        process.terminate()
        process.wait(timeout=30)
        os.close(leader)
    token, admin = stored_tokens(db)
    text = printed.decode()
    assert f"Callback URL for the COS console: https://relay.example.com/cos/callback?token={token}" in text
    assert admin in text
