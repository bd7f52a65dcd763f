"""Who gets in: the admin token at login, a signed session cookie that expires, same-origin forms with a CSRF token."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from relay.app.factory import create_app
from relay.console.login import safe_next
from relay.console.session import COOKIE
from relay.settings.table import Settings
from tests.conftest import ADMIN_TOKEN, callback_schema, job_body, job_id
from tests.console.conftest import Console
from tests.live import serving


@contextmanager
def browser(settings: Settings) -> Iterator[httpx.Client]:
    """A fresh gateway on ``settings`` and a client of it."""
    with (
        serving(create_app(settings, schema=callback_schema())) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        yield http


def signed_cookie(settings: Settings) -> str:
    with browser(settings) as http:
        origin = str(http.base_url).rstrip("/")
        http.post("/console/login", data={"token": ADMIN_TOKEN}, headers={"origin": origin})
        return http.cookies[COOKIE]


def session_works(settings: Settings, cookie: str) -> bool:
    with browser(settings) as http:
        http.cookies.set(COOKIE, cookie)
        return http.get("/console/", follow_redirects=False).status_code == 200


PAGES = [
    "/console/",
    "/console/jobs",
    f"/console/jobs/{job_id(1)}",
    "/console/callbacks",
    "/console/subscribers",
    "/console/subscribers/billing",
    "/console/deliveries/1",
]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_redirects_to_login_and_shows_no_data_without_a_session(console: Console, page: str) -> None:
    console.callback(job_body(1))
    answer = console.get(page)
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/console/login?next={page}"
    assert job_id(1) not in answer.text


def test_the_admin_token_signs_in_and_returns_to_the_page_asked_for(console: Console) -> None:
    console.callback(job_body(1))
    answer = console.http.post(
        "/console/login",
        data={"token": ADMIN_TOKEN, "next": "/console/jobs"},
        headers={"origin": console.origin},
        follow_redirects=False,
    )
    assert (answer.status_code, answer.headers["location"]) == (303, "/console/jobs")
    assert job_id(1) in console.get("/console/jobs").text


def test_a_wrong_token_gets_the_login_page_again_and_no_cookie(console: Console) -> None:
    answer = console.sign_in("not-the-token")
    assert answer.status_code == 401
    assert "That is not the admin token." in answer.text
    assert COOKIE not in answer.headers.get("set-cookie", "")


def test_the_session_cookie_is_httponly_strict_scoped_to_the_console_and_expires(console: Console) -> None:
    cookie = console.sign_in().headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert "path=/console/" in cookie
    assert "max-age=28800" in cookie
    assert "secure" not in cookie  # plain http: a Secure cookie would never come back


def test_the_session_cookie_is_secure_when_a_trusted_proxy_reports_https(console: Console) -> None:
    # The test server's uvicorn trusts 127.0.0.1 as a proxy (`cos-relay serve` only RELAY_FORWARDED_ALLOW_IPS:
    # tests/test_deploy_nginx.py proves both through nginx and a real `serve`).
    https = console.origin.replace("http://", "https://")
    answer = console.http.post(
        "/console/login",
        data={"token": ADMIN_TOKEN},
        headers={"origin": https, "x-forwarded-proto": "https"},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    assert "; secure" in answer.headers["set-cookie"].lower()


def test_a_session_ends_when_it_expires(signed_in: Console) -> None:
    assert signed_in.get("/console/jobs").status_code == 200
    signed_in.clock.advance(8 * 3600 + 1)
    assert signed_in.get("/console/jobs").status_code == 303


def test_a_forged_or_altered_cookie_is_no_session(signed_in: Console) -> None:
    value = signed_in.http.cookies[COOKIE]
    expires, nonce, signature = value.split(".")
    for forged in (f"{int(expires) + 3600}.{nonce}.{signature}", f"{expires}.{nonce}.{'0' * 64}", "garbage"):
        signed_in.http.cookies.clear()
        signed_in.http.cookies.set(COOKIE, forged)
        assert signed_in.get("/console/").status_code == 303


def test_signing_out_ends_the_session(signed_in: Console) -> None:
    answer = signed_in.post("/console/logout")
    assert (answer.status_code, answer.headers["location"]) == (303, "/console/login")
    assert signed_in.get("/console/").status_code == 303


def test_a_form_without_the_sessions_csrf_token_is_forbidden(signed_in: Console) -> None:
    signed_in.add_subscriber("billing", "/ok")
    answer = signed_in.http.post(
        "/console/subscribers/billing/pause", data={"csrf": "forged"}, headers={"origin": signed_in.origin}
    )
    assert answer.status_code == 403
    assert "CSRF" in answer.text
    assert signed_in.api("/api/subscribers/billing")["state"] == "enabled"


@pytest.mark.parametrize("origin", ["http://evil.example", "null", None, "https://own"])
def test_a_form_from_another_origin_or_none_is_forbidden(signed_in: Console, origin: str | None) -> None:
    signed_in.add_subscriber("billing", "/ok")
    if origin == "https://own":  # the console's own host, but not the scheme it is served on
        origin = signed_in.origin.replace("http://", "https://")
    answer = signed_in.post("/console/subscribers/billing/pause", origin=origin)
    assert answer.status_code == 403
    assert signed_in.api("/api/subscribers/billing")["state"] == "enabled"


def test_signing_in_from_another_origin_is_forbidden(console: Console) -> None:
    answer = console.http.post(
        "/console/login",
        data={"token": ADMIN_TOKEN},
        headers={"origin": "http://evil.example"},
        follow_redirects=False,
    )
    assert answer.status_code == 403
    assert COOKIE not in answer.headers.get("set-cookie", "")


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/console/jobs?state=Failed", "/console/jobs?state=Failed"),
        ("//evil.example/console/", "/console/"),
        ("/console//evil.example", "/console/"),
        ("/console/\\evil", "/console/"),
        ("https://evil.example/console/", "/console/"),
        (None, "/console/"),
    ],
)
def test_after_signing_in_the_console_only_returns_to_its_own_pages(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


def test_every_console_response_forbids_inline_script_framing_and_caching(signed_in: Console) -> None:
    for page in ("/console/", "/console/login", "/console/jobs?state=bogus", "/console/static/console.css"):
        headers = signed_in.get(page).headers
        policy = headers["content-security-policy"]
        assert "default-src 'none'" in policy
        assert "unsafe-inline" not in policy
        assert "frame-ancestors 'none'" in policy
        assert headers["cache-control"] == "no-store"
        assert headers["x-content-type-options"] == "nosniff"


def test_a_session_survives_a_restart_on_the_same_database(console_settings: Settings) -> None:
    assert session_works(console_settings, signed_cookie(console_settings))


def test_a_changed_admin_token_ends_every_session(console_settings: Settings) -> None:
    cookie = signed_cookie(console_settings)
    assert not session_works(
        console_settings.replace(admin_token="another-admin-f_7ANEPmdo7vX7eo9n-YZh92wrZ0LvY7DcIr7Zp6t_4"), cookie
    )


def test_the_login_page_sends_a_signed_in_browser_on(signed_in: Console) -> None:
    answer = signed_in.get("/console/login?next=/console/callbacks")
    assert (answer.status_code, answer.headers["location"]) == (303, "/console/callbacks")


def test_an_oversized_form_or_a_field_given_twice_is_a_400_page(signed_in: Console) -> None:
    signed_in.add_subscriber("billing", "/ok")
    csrf = signed_in.csrf()
    headers = {"origin": signed_in.origin, "content-type": "application/x-www-form-urlencoded"}
    for body in (f"csrf={csrf}&pad={'a' * 20000}", f"csrf={csrf}&csrf={csrf}"):
        answer = signed_in.http.post("/console/subscribers/billing/pause", content=body, headers=headers)
        assert answer.status_code == 400
        assert 'role="alert"' in answer.text
    assert signed_in.api("/api/subscribers/billing")["state"] == "enabled"


def test_an_unknown_console_path_is_a_404_page(signed_in: Console) -> None:
    answer = signed_in.get("/console/nothing-here")
    assert answer.status_code == 404
    assert 'role="alert"' in answer.text
    assert signed_in.get(f"/console/jobs/{job_id(99)}").status_code == 404
