"""Issue 22, items 4 to 6, against a real `cos-relay serve` on both backends: weak tokens refused at start, console
sessions that end (sign-out, every session at once, a new admin token), token rotation seen by running gateways,
and `cos-relay tokens` printing only the tokens in force."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from relay.console.session import COOKIE
from relay.store.records import Target
from tests.conftest import ADMIN_TOKEN, job_body
from tests.databases import values
from tests.live import ProcessServer, db_text, wait_until
from tests.mistakes.commands import cos_relay

PUBLIC_URL = "https://8.8.8.8/hooks/cos"  # a public literal: no DNS, and nothing is sent to it here


class Browser:
    """A browser on a gateway's console: its cookie jar, the forms it posts with the page's CSRF token."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=30, follow_redirects=False)
        self.origin = url

    def sign_in(self, token: str) -> httpx.Response:
        return self.http.post("/console/login", data={"token": token}, headers={"origin": self.origin})

    def signed_in(self) -> bool:
        return self.http.get("/console/").status_code == 200

    def csrf(self) -> str:
        found = re.search(r'name="csrf" value="([^"]+)"', self.http.get("/console/").text)
        assert found is not None, "not signed in"
        return found[1]

    def post(self, path: str, csrf: str) -> httpx.Response:
        return self.http.post(path, data={"csrf": csrf}, headers={"origin": self.origin})


@contextmanager
def gateway(db: Target, *args: str, env: dict[str, str] | None = None) -> Iterator[ProcessServer]:
    server = ProcessServer(db, args=args, env=env).start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def browsers(server: ProcessServer, count: int) -> Iterator[list[Browser]]:
    with ExitStack() as stack:
        found = [Browser(server.url) for _ in range(count)]
        for browser in found:
            stack.enter_context(browser.http)
        yield found


def shown_tokens(db: Target, env: dict[str, str] | None = None) -> dict[str, str]:
    """What `cos-relay tokens` prints, as name: value (the indented lines say where each comes from)."""
    result = cos_relay("tokens", "--db", db_text(db), env=env)
    assert result.returncode == 0, result.stderr
    return dict(line.split(": ", 1) for line in result.stdout.splitlines() if not line.startswith(" "))


def api_status(server: ProcessServer, token: str) -> int:
    return httpx.get(f"{server.url}/api/jobs", headers={"Authorization": f"Bearer {token}"}, timeout=30).status_code


def post_callback(server: ProcessServer, token: str) -> int:
    headers = {"Content-Type": "application/xml"}
    return httpx.post(f"{server.url}/cos/callback?token={token}", content=job_body(1), headers=headers).status_code


def answers(server: ProcessServer, token: str, status: int, what: str) -> None:
    """Wait until a callback with ``token`` gets ``status`` (a running gateway reads the tokens again within 1 s)."""
    wait_until(lambda: post_callback(server, token) == status, what=what)


def previous_token_uses(server: ProcessServer) -> float:
    scraped = httpx.get(f"{server.url}/metrics", timeout=30).text
    found = re.search(r"^relay_callback_previous_token_total ([0-9.e+]+)$", scraped, re.MULTILINE)
    assert found is not None, "the metric is missing"
    return float(found[1])


# -- item 4: weak tokens ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (("--admin-token", "7351"), {}, "RELAY_ADMIN_TOKEN"),
        ((), {"RELAY_ADMIN_TOKEN": "test-admin-token"}, "--admin-token"),
        ((), {"RELAY_CALLBACK_TOKEN": "x7Q" * 20}, "--callback-token"),
    ],
    ids=["pin-option", "words-variable", "repeated-callback"],
)
@pytest.mark.slow
def test_a_weak_configured_token_is_refused_at_start_with_one_line_and_exit_status_2(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], named: str
) -> None:
    db = tmp_path / "relay.db"
    result = cos_relay("serve", "--db", str(db), *args, env=env)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error: Invalid value for '--")
    assert named in line
    assert "too weak: about " in line
    assert "openssl rand -hex 32" in line
    for token in (*args[1:], *env.values()):
        assert token not in line
    assert not db.exists()  # refused before anything was opened


# -- item 5: sessions that end ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_signing_out_ends_the_session_so_its_cookie_and_csrf_token_are_refused(database: Target) -> None:
    with gateway(database, "--admin-token", ADMIN_TOKEN) as server, browsers(server, 2) as (browser, thief):
        bearer = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        added = httpx.post(f"{server.url}/api/subscribers", json={"name": "billing", "url": PUBLIC_URL}, headers=bearer)
        assert added.status_code == 201, added.text
        assert browser.sign_in(ADMIN_TOKEN).status_code == 303
        csrf = browser.csrf()
        thief.http.cookies.set(COOKIE, browser.http.cookies[COOKIE])  # a copy of the cookie, made before sign-out
        assert thief.signed_in()
        assert browser.post("/console/logout", csrf).headers["location"] == "/console/login"
        assert not thief.signed_in()
        refused = thief.post("/console/subscribers/billing/pause", csrf)
        assert refused.status_code == 303
        assert refused.headers["location"].startswith("/console/login")
        state = httpx.get(f"{server.url}/api/subscribers/billing", headers=bearer).json()["state"]
        assert state == "enabled"


@pytest.mark.slow
def test_every_session_ends_at_once_from_the_command_line_and_from_the_console(database: Target) -> None:
    with gateway(database, "--admin-token", ADMIN_TOKEN) as server, browsers(server, 2) as (one, two):
        for browser in (one, two):
            assert browser.sign_in(ADMIN_TOKEN).status_code == 303
        ended = cos_relay("sessions", "end-all", "--db", db_text(database))
        assert ended.returncode == 0, ended.stderr
        assert ended.stdout == "2 console session(s) ended\n"
        assert not one.signed_in()
        assert not two.signed_in()
        for browser in (one, two):
            assert browser.sign_in(ADMIN_TOKEN).status_code == 303
        assert one.post("/console/sessions/end-all", "forged").status_code == 403  # CSRF-protected
        assert two.signed_in()
        assert one.post("/console/sessions/end-all", one.csrf()).headers["location"] == "/console/login"
        assert not two.signed_in()
        assert not one.signed_in()


@pytest.mark.slow
def test_rotating_the_admin_token_stops_the_old_one_and_every_session_at_once(database: Target) -> None:
    with gateway(database) as server, browsers(server, 1) as (browser,):
        old = shown_tokens(database)["admin_token"]
        assert browser.sign_in(old).status_code == 303
        assert api_status(server, old) == 200
        rotated = cos_relay("tokens", "rotate", "--admin", "--db", db_text(database))
        assert rotated.returncode == 0, rotated.stderr
        assert "The previous admin token is refused from now on; 1 console session(s) ended." in rotated.stdout
        new = dict(line.split(": ", 1) for line in rotated.stdout.splitlines() if line.startswith("admin_token: "))
        new_token = new["admin_token"]
        assert new_token != old
        assert api_status(server, old) == 401  # no wait: the admin token is read at every check
        assert api_status(server, new_token) == 200
        assert not browser.signed_in()
        assert browser.sign_in(old).status_code == 401
        assert browser.sign_in(new_token).status_code == 303
        assert shown_tokens(database)["admin_token"] == new_token


# -- item 6: rotation and `cos-relay tokens` ---------------------------------------------------------------------


@pytest.mark.slow
def test_a_rotated_callback_token_reaches_running_gateways_and_the_old_one_lasts_its_grace(database: Target) -> None:
    with gateway(database) as first, gateway(database) as second:
        servers = (first, second)
        old = shown_tokens(database)["callback_token"]
        rotated = cos_relay("tokens", "rotate", "--callback", "--grace", "1h", "--db", db_text(database))
        assert rotated.returncode == 0, rotated.stderr
        assert "the previous callback token is still accepted until " in rotated.stdout
        new = shown_tokens(database)["callback_token"]
        assert new != old
        assert f"callback URL: http://127.0.0.1:8080/cos/callback?token={new}" in rotated.stdout
        for server in servers:
            answers(server, new, 200, "the new callback token works")
            assert post_callback(server, old) == 200  # COS may still use the old URL during the grace
            assert previous_token_uses(server) >= 1
        rotated = cos_relay("tokens", "rotate", "--callback", "--grace", "1s", "--db", db_text(database))
        assert rotated.returncode == 0, rotated.stderr
        newer = shown_tokens(database)["callback_token"]
        for server in servers:
            answers(server, newer, 200, "the newer callback token works")
            answers(server, new, 401, "a grace of 1 s ends")
            assert post_callback(server, old) == 401


@pytest.mark.slow
def test_tokens_prints_the_admin_token_of_relay_admin_token_and_stores_none(database: Target) -> None:
    configured = {"RELAY_ADMIN_TOKEN": ADMIN_TOKEN}
    with gateway(database, env=configured) as server:
        here = cos_relay("tokens", "--db", db_text(database), env=configured)
        assert here.returncode == 0, here.stderr
        assert f"admin_token: {ADMIN_TOKEN}\n  from RELAY_ADMIN_TOKEN\n" in here.stdout
        assert "callback_token: " in here.stdout
        elsewhere = cos_relay("tokens", "--db", db_text(database))
        assert elsewhere.returncode == 0, elsewhere.stderr
        assert "admin_token: not shown: the gateway takes it from its RELAY_ADMIN_TOKEN, which is not set here\n" in (
            elsewhere.stdout
        )
        assert values(database, "SELECT count(*) FROM secrets WHERE name = ?", "admin_token") == [(0,)]
        for env in (configured, {}):
            refused = cos_relay("tokens", "rotate", "--admin", "--db", db_text(database), env=env)
            assert refused.returncode == 1
            [line] = refused.stderr.strip().splitlines()
            assert "RELAY_ADMIN_TOKEN" in line
            assert ADMIN_TOKEN not in line
        assert values(database, "SELECT count(*) FROM secrets WHERE name = ?", "admin_token") == [(0,)]
        assert api_status(server, ADMIN_TOKEN) == 200
