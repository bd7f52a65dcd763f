"""Issue 22, items 4 (throttling), 7 and 8, against a real ``cos-relay serve``: guessing a token at any of the
four checks (console login, admin bearer, callback, metrics) gets 429 with Retry-After past the limit (the right
token too), counted in /metrics with the refusal logs rate-limited; no Location is built from the Host header;
only allowed hosts are answered."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, CALLBACK_TOKEN, TRANSCODE, callback_url
from tests.live import ProcessServer

#: Slow tier: real gateway processes.
pytestmark = pytest.mark.slow

METRICS_TOKEN = "test-metrics-Zq3vN8xKpL2mR7tY4wB9cH6jF1dS5gA0eU8iO3nV"
TOKENS = ("--callback-token", CALLBACK_TOKEN, "--admin-token", ADMIN_TOKEN, "--metrics-token", METRICS_TOKEN)
#: The default RELAY_GUESS_LIMIT: the tests use the defaults, so today's main (which has no such setting) runs them.
LIMIT = 10
SECONDS = 10.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ProcessServer]:
    """A gateway of its own: the throttle's counts start afresh."""
    started = ProcessServer(tmp_path / "relay.db", args=TOKENS).start()
    yield started
    started.stop()


@pytest.fixture
def http(server: ProcessServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=SECONDS, follow_redirects=False) as client:
        yield client


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """One gateway with the default settings for the tests that send no wrong token."""
    started = ProcessServer(tmp_path_factory.mktemp("shared") / "relay.db", args=TOKENS).start()
    try:
        with httpx.Client(base_url=started.url, timeout=SECONDS, follow_redirects=False) as client:
            yield client
    finally:
        started.stop()


# -- item 4: guessing is throttled per source address -----------------------------------------------------------


def attempt_callback(http: httpx.Client, token: str) -> httpx.Response:
    return http.post(callback_url(token), content=TRANSCODE, headers={"content-type": "application/xml"})


def attempt_bearer(http: httpx.Client, token: str) -> httpx.Response:
    return http.get("/api/jobs", headers={"Authorization": f"Bearer {token}"})


def attempt_login(http: httpx.Client, token: str) -> httpx.Response:
    return http.post("/console/login", data={"token": token}, headers={"origin": str(http.base_url).rstrip("/")})


def attempt_metrics(http: httpx.Client, token: str) -> httpx.Response:
    return http.get("/metrics", headers={"Authorization": f"Bearer {token}"})


CHECKS: dict[str, tuple[Callable[[httpx.Client, str], httpx.Response], str]] = {
    "callback": (attempt_callback, CALLBACK_TOKEN),
    "bearer": (attempt_bearer, ADMIN_TOKEN),
    "login": (attempt_login, ADMIN_TOKEN),
    "metrics": (attempt_metrics, METRICS_TOKEN),
}


def metric(http: httpx.Client, name: str, **labels: str) -> float:
    """A sample of /metrics, scraped from another address (127.0.0.2): the one under test may be throttled."""
    selector = ",".join(f'{key}="{value}"' for key, value in labels.items())
    scraper = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(base_url=http.base_url, transport=scraper, timeout=SECONDS) as other:
        exposition = attempt_metrics(other, METRICS_TOKEN).text
    found = re.search(rf"^{name}\{{{selector}\}} (\S+)$", exposition, re.MULTILINE)
    assert found is not None, f"{name}{{{selector}}} is not exported"
    return float(found[1])


@pytest.mark.parametrize("check", CHECKS)
def test_guessing_a_token_gets_429_with_retry_after_past_the_limit_even_for_the_right_token(
    check: str, http: httpx.Client, server: ProcessServer
) -> None:
    attempt, right = CHECKS[check]
    statuses = [attempt(http, f"guess-{number:04d}").status_code for number in range(LIMIT)]
    assert statuses == [401] * LIMIT
    throttled = attempt(http, "guess-next")
    assert throttled.status_code == 429
    assert 1 <= int(throttled.headers["retry-after"]) <= 60
    # The right token from the throttled address is refused alike: a guesser cannot tell it apart.
    rightly = attempt(http, right)
    assert rightly.status_code == 429
    assert "set-cookie" not in rightly.headers
    # The other checks still answer this address: guessing one token does not lock out COS or the operator.
    for other, (other_attempt, other_right) in CHECKS.items():
        if other != check:
            assert other_attempt(http, other_right).status_code in (200, 303), other

    assert metric(http, "relay_wrong_tokens_total", check=check) == LIMIT
    assert metric(http, "relay_token_guesses_throttled_total", check=check) == 2
    if check == "callback":
        assert metric(http, "relay_callbacks_received_total", outcome="throttled") == 2
    output = server.stop()
    # One line says the address is throttled; the flood of refusals is not a line each.
    assert len(re.findall(rf"too many wrong tokens from 127\.0\.0\.1 at the {check} check", output)) == 1
    assert output.count("callback refused (401") <= 1
    assert right not in output


def test_a_request_without_a_token_is_not_counted_as_a_guess(shared: httpx.Client) -> None:
    for _ in range(LIMIT + 5):
        assert shared.get("/api/jobs").status_code == 401
        assert shared.post("/cos/callback", content=TRANSCODE).status_code == 401
    assert attempt_bearer(shared, ADMIN_TOKEN).status_code == 200
    assert attempt_callback(shared, CALLBACK_TOKEN).status_code == 200


# -- item 7: no Location from the Host header -----------------------------------------------------------------


@pytest.fixture(scope="module")
def any_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A gateway that answers every Host (RELAY_ALLOWED_HOSTS=*), so its redirects are what is tested."""
    db = tmp_path_factory.mktemp("any_host") / "relay.db"
    started = ProcessServer(db, args=TOKENS, env={"RELAY_ALLOWED_HOSTS": "*"}).start()
    try:
        with httpx.Client(base_url=started.url, timeout=SECONDS, follow_redirects=False) as client:
            yield client
    finally:
        started.stop()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/console/login/"),
        ("POST", "/console/login/"),
        ("GET", "/console/jobs/"),
        ("GET", "/console/"),
        ("GET", "/console"),
        ("GET", "/console/jobs"),
        ("GET", "/console/static/"),
    ],
)
def test_no_location_is_built_from_the_host_header(method: str, path: str, any_host: httpx.Client) -> None:
    response = any_host.request(
        method,
        path,
        data={"token": ADMIN_TOKEN} if method == "POST" else None,
        headers={"Host": "evil.example", "origin": "http://evil.example"},
    )
    location = response.headers.get("location", "")
    assert "evil.example" not in location
    assert location == "" or location.startswith("/"), location


def test_the_token_form_posted_to_a_stray_slash_is_not_sent_on(any_host: httpx.Client) -> None:
    response = any_host.post(
        "/console/login/", data={"token": ADMIN_TOKEN}, headers={"Host": "evil.example"}, follow_redirects=False
    )
    assert response.status_code == 404
    assert "location" not in response.headers


# -- item 8: only allowed hosts are answered ------------------------------------------------------------------

REBINDING = {"Host": "rebind.attacker.example", "Origin": "http://rebind.attacker.example"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("GET", "/console/login"),
        ("POST", "/console/login"),
        ("GET", "/api/jobs"),
        ("POST", callback_url()),
    ],
)
def test_a_rebound_host_name_gets_400(method: str, path: str, shared: httpx.Client) -> None:
    headers = {**REBINDING, "Authorization": f"Bearer {ADMIN_TOKEN}"}
    content = TRANSCODE if path.startswith("/cos/") else None
    data = {"token": ADMIN_TOKEN} if path == "/console/login" and method == "POST" else None
    response = shared.request(method, path, headers=headers, content=content, data=data)
    assert response.status_code == 400
    assert response.json()["error"] == "bad_host"
    assert "set-cookie" not in response.headers


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_the_probes_answer_any_host(path: str, shared: httpx.Client) -> None:
    assert shared.get(path, headers=REBINDING).status_code == 200


@pytest.fixture(scope="module")
def public(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessServer]:
    """A gateway whose RELAY_PUBLIC_URL is https://relay.example.com."""
    args = (*TOKENS, "--public-url", "https://relay.example.com")
    started = ProcessServer(tmp_path_factory.mktemp("public") / "relay.db", args=args).start()
    yield started
    started.stop()


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "LOCALHOST.", "relay.example.com"])
def test_the_public_url_host_and_the_loopback_names_are_answered(host: str, public: ProcessServer) -> None:
    port = "" if host == "relay.example.com" else f":{public.port}"
    response = httpx.get(f"{public.url}/openapi.json", headers={"Host": f"{host}{port}"}, timeout=SECONDS)
    assert response.status_code == 200
