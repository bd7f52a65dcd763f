"""Security review, as tests: tokens and secrets stay secret, the admin API stays shut, no CORS, no SSRF."""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

import relay.domain.tokens
from relay.app.factory import create_app
from relay.settings.table import Settings
from relay.store.records import Target
from tests.conftest import ADMIN_TOKEN, CALLBACK_TOKEN, DATA, callback_schema, callback_url
from tests.live import ProcessServer, ThreadServer, wait_until
from tests.sink import Sink
from tests.test_cli import stored_tokens

TRANSCODE = (DATA / "samples" / "transcode_success.xml").read_bytes()
ROOT = Path(__file__).parent.parent
#: Every read-only route, with a path that names something (the outbox's are in test_api_subscribers.py).
QUERY_ROUTES = [
    "/api/jobs",
    "/api/jobs/j7c12d4be4c935a96bfe3fb23d1a491e9",
    "/api/workflows/icf43042c67ab601aa9e79a4f03b42e4c",
    "/api/callbacks",
    "/api/subscribers",
    "/api/deliveries",
]


# -- tokens ------------------------------------------------------------------------------------------


def test_both_tokens_are_checked_with_hmac_compare_digest(
    monkeypatch: pytest.MonkeyPatch, client: httpx.Client
) -> None:
    calls: list[tuple[bytes, bytes]] = []

    def compare_digest(given: bytes, expected: bytes) -> bool:
        calls.append((given, expected))
        return given == expected

    monkeypatch.setattr(relay.domain.tokens, "hmac", SimpleNamespace(compare_digest=compare_digest))
    assert client.post(callback_url(), content=TRANSCODE).status_code == 200
    assert client.post(callback_url("wrong"), content=TRANSCODE).status_code == 401
    assert client.get("/api/jobs", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 200
    assert client.get("/api/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert calls == [
        (CALLBACK_TOKEN.encode(), CALLBACK_TOKEN.encode()),
        (b"wrong", CALLBACK_TOKEN.encode()),
        (ADMIN_TOKEN.encode(), ADMIN_TOKEN.encode()),
        (b"wrong", ADMIN_TOKEN.encode()),
    ]


def exercise_everything(url: str, callback_token: str, admin_token: str) -> list[httpx.Response]:
    """Right and wrong tokens on every kind of request; returns every response."""
    wrong = "not-the-token-" + callback_token[:6]
    responses = []
    with httpx.Client(base_url=url, timeout=30) as client:
        admin = {"Authorization": f"Bearer {admin_token}"}
        responses += [
            client.post(f"/cos/callback?token={callback_token}", content=TRANSCODE),
            client.post(f"/cos/callback?token={callback_token}", content=TRANSCODE),  # duplicate
            client.post(f"/cos/callback?token={callback_token}", content=b"<Response><Bad/></Response>"),  # 422
            client.post(f"/cos/callback?token={callback_token}", content=b"<oops"),  # 400
            client.post(f"/cos/callback?token={wrong}", content=TRANSCODE),
            client.post(f"/cos/callback?token={admin_token}", content=TRANSCODE),
            client.get(f"/cos/callback?token={callback_token}"),
            client.get("/api/jobs", headers={"Authorization": f"Bearer {wrong}"}),
            client.get("/api/jobs", headers={"Authorization": f"Bearer {callback_token}"}),
            client.get(f"/api/jobs?token={admin_token}"),
            client.get("/healthz"),
            client.get("/readyz"),
            client.get("/metrics"),
        ]
        responses += [client.get(path, headers=admin) for path in QUERY_ROUTES]
        responses.append(client.get("/api/deliveries/1", headers=admin))
    return responses


@pytest.mark.slow
def test_tokens_appear_in_no_output_log_or_response_when_output_is_not_a_terminal(database: Target) -> None:
    db = database
    first = ProcessServer(db, args=("--log-level", "debug")).start()
    callback_token, admin_token = stored_tokens(db)
    responses = exercise_everything(first.url, callback_token, admin_token)
    output = first.stop()
    # A later start, logging JSON from two workers this time: the banner hides the token.
    again = ProcessServer(db, args=("--log-level", "debug", "--log-format", "json", "--workers", "2")).start()
    responses += exercise_everything(again.url, callback_token, admin_token)
    output += again.stop()

    # The first start's banner too: its output is a pipe here, as a journal or a log file would be.
    assert callback_token not in output
    assert admin_token not in output
    wrong = "not-the-token-" + callback_token[:6]
    assert wrong not in output
    assert "token=<hidden" in output  # the second banner
    for response in responses:
        assert response.status_code < 500, (response.request.url, response.text)
        seen = response.text + str(response.headers)
        assert callback_token not in seen, response.request.url
        assert admin_token not in seen, response.request.url


NOT_THE_ADMIN = {
    "no-header": {},
    "empty-header": {"Authorization": ""},
    "bearer-without-token": {"Authorization": "Bearer"},
    "bearer-two-spaces": {"Authorization": "Bearer  x"},
    "bearer-null": {"Authorization": "Bearer null"},
    "wrong": {"Authorization": "Bearer wrong"},
    "callback-token": {"Authorization": f"Bearer {CALLBACK_TOKEN}"},
    "prefix": {"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}"},
    "token-twice": {"Authorization": f"Bearer {ADMIN_TOKEN}{ADMIN_TOKEN}"},
    "cookie": {"Cookie": f"token={ADMIN_TOKEN}; Authorization=Bearer {ADMIN_TOKEN}"},
    "other-header": {"X-Admin-Token": ADMIN_TOKEN, "Proxy-Authorization": f"Bearer {ADMIN_TOKEN}"},
}


@pytest.mark.parametrize("case", sorted(NOT_THE_ADMIN))
def test_the_admin_api_refuses_missing_empty_and_wrong_tokens(case: str, module_client: httpx.Client) -> None:
    for path in QUERY_ROUTES:
        response = module_client.get(path, headers=NOT_THE_ADMIN[case])
        assert response.status_code == 401, (path, response.text)
        assert response.json()["error"] == "unauthorized"
        assert module_client.get(path, params={"token": ADMIN_TOKEN}).status_code == 401  # never from the query


# -- CORS and methods --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/cos/callback", "/api/jobs", "/api/subscribers", "/healthz", "/metrics"])
def test_cors_is_off_even_for_a_preflight(path: str, client: httpx.Client) -> None:
    origin = {"Origin": "https://evil.example"}
    preflight = {
        **origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    answers = [
        client.options(path, headers=preflight),
        client.get(path, headers={**origin, "Authorization": f"Bearer {ADMIN_TOKEN}"}),
        client.post(f"{path}?token={CALLBACK_TOKEN}", headers=origin, content=TRANSCODE),
    ]
    for response in answers:
        assert not [name for name in response.headers if name.lower().startswith("access-control-")], (
            response.request.method,
            dict(response.headers),
        )


@pytest.mark.parametrize("method", ["OPTIONS", "HEAD", "PATCH", "TRACE"])
def test_the_callback_endpoint_refuses_every_method_but_post(
    method: str, module_client: httpx.Client, module_admin: httpx.Client
) -> None:
    response = module_client.request(method, callback_url(), content=TRANSCODE)
    assert response.status_code == 405
    assert module_admin.get("/api/callbacks").json()["items"] == []


# -- subscriber secrets ------------------------------------------------------------------------------


@pytest.mark.slow
def test_subscriber_secrets_never_reach_logs_metrics_or_later_responses(database: Target, sink: Sink) -> None:
    subscriber = sink
    args = ("--callback-token", CALLBACK_TOKEN, "--admin-token", ADMIN_TOKEN, "--log-level", "debug")
    env = {"RELAY_ALLOW_NETWORKS": "127.0.0.0/8", "RELAY_RETRY_SCHEDULE": "0.1", "RELAY_POLL_INTERVAL": "0.1"}
    server = ProcessServer(database, args=args, env=env).start()
    later: list[httpx.Response] = []
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as api:
            secrets = [
                api.post("/api/subscribers", json={"name": "ok", "url": f"{subscriber.url}/ok"}).json()["secret"],
                api.post("/api/subscribers", json={"name": "bad", "url": f"{subscriber.url}/fail"}).json()["secret"],
            ]
            api.post(callback_url(), content=TRANSCODE).raise_for_status()
            sink.wait_for("/ok", 1)
            sink.wait_for("/fail", 2)  # the first attempt and the retry: errors logged
            secrets.append(api.post("/api/subscribers/ok/rotate-secret").json()["secret"])
            api.post(callback_url(), content=TRANSCODE.replace(b"j7c12d4", b"j0000000")).raise_for_status()
            sink.wait_for("/ok", 2)  # signed with the new and the old secret
            later += [api.get(path) for path in ("/api/subscribers", "/api/subscribers/ok", "/api/deliveries")]
            later += [api.get("/api/deliveries/1"), api.get("/api/deliveries/2"), api.get("/metrics")]
            later += [api.patch("/api/subscribers/bad", json={"timeout": 3}), api.post("/api/subscribers/ok/pause")]
    finally:
        output = server.stop()
    assert later[5].status_code == 200  # /metrics exists
    for secret in secrets:
        key = secret.removeprefix("whsec_")
        for text in [output, *(response.text + str(response.headers) for response in later)]:
            assert key[4:] not in text  # masked forms show at most the first 4 characters
            assert key[:12] not in text


# -- SSRF --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://10.1.2.3/hook",
        "http://172.16.0.1/hook",
        "http://192.168.0.1/hook",
        "http://127.0.0.1:8080/hook",
        "http://127.1/hook",
        "http://2130706433/hook",
        "http://0x7f000001/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/hook",
        "http://0.0.0.0:8080/hook",
        "http://[::1]/hook",
        "http://[::]/hook",
        "http://[fd00::1]/hook",
        "http://[fe80::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[::ffff:169.254.169.254]/hook",
        "http://[64:ff9b::7f00:1]/hook",
        "http://localhost:8080/hook",
        "http://LOCALHOST./hook",
        "http://user:pass@example.com/hook",
        "file:///etc/passwd",
    ],
)
def test_subscribers_on_non_public_addresses_are_refused_without_an_allow_list(
    url: str, module_admin: httpx.Client
) -> None:
    response = module_admin.post("/api/subscribers", json={"name": "inside", "url": url})
    assert response.status_code == 400, response.text
    assert module_admin.get("/api/subscribers").json()["items"] == []


def deliveries(url: str) -> list[dict[str, Any]]:
    """Every delivery with its attempts, by subscriber and event (one of the event log has a row, an id, only once
    its failure is recorded)."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as api:
        return [
            api.get(f"/api/subscribers/{item['subscriber']}/deliveries/{item['event_id']}").json()
            for item in api.get("/api/deliveries").json()["items"]
        ]


def test_a_subscriber_allowed_at_creation_is_blocked_at_delivery_by_a_gateway_without_the_allow_list(
    settings: Settings, sink: Sink
) -> None:
    subscriber = sink
    allowed = settings.replace(allow_networks="127.0.0.0/8", retry_schedule=(0.1,), poll_interval=0.1)
    first = ThreadServer(create_app(allowed, schema=callback_schema())).start()
    try:
        with httpx.Client(base_url=first.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as api:
            port = subscriber.port
            for name, url in (("literal", f"http://127.0.0.1:{port}/ok"), ("named", f"http://localhost:{port}/ok")):
                assert api.post("/api/subscribers", json={"name": name, "url": url}).status_code == 201
    finally:
        first.stop()
    second = ThreadServer(create_app(allowed.replace(allow_networks=""), schema=callback_schema())).start()
    try:
        with httpx.Client(base_url=second.url) as client:
            assert client.post(callback_url(), content=TRANSCODE).status_code == 200
        wait_until(lambda: {d["state"] for d in deliveries(second.url)} == {"dead"})
        found = deliveries(second.url)
    finally:
        second.stop()
    assert {attempt["outcome"] for d in found for attempt in d["attempts_log"]} == {"ssrf_blocked"}
    assert len(found) == 2
    assert sink.requests == []


def test_dns_rebinding_after_creation_is_blocked_at_connect_time(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, sink: Sink
) -> None:
    """The name resolves to a public address when the subscriber is created, then to loopback."""
    subscriber = sink
    real = socket.getaddrinfo
    answers: list[str] = []

    def rebinding(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "rebind.example":
            return real(host, port, *args, **kwargs)
        address = "93.184.216.34" if not answers else "127.0.0.1"
        answers.append(address)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port or 80)))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    server = ThreadServer(
        create_app(settings.replace(retry_schedule=(0.1,), poll_interval=0.1), schema=callback_schema())
    )
    server.server.config.loop = "asyncio"  # uvloop resolves in C, past the patched socket.getaddrinfo
    server.start()
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as api:
            url = f"http://rebind.example:{subscriber.port}/ok"
            assert api.post("/api/subscribers", json={"name": "rebound", "url": url}).status_code == 201
            assert api.post(callback_url(), content=TRANSCODE).status_code == 200
        wait_until(lambda: {d["state"] for d in deliveries(server.url)} == {"dead"})
        [found] = deliveries(server.url)
    finally:
        server.stop()
    assert answers[0] == "93.184.216.34"
    assert len(answers) >= 3  # asked again at each connection...
    assert set(answers[1:]) == {"127.0.0.1"}  # ...and refused every time
    assert [attempt["outcome"] for attempt in found["attempts_log"]] == ["ssrf_blocked", "ssrf_blocked"]
    assert "127.0.0.1 is loopback" in found["attempts_log"][0]["error"]
    assert sink.requests == []


# -- dependencies ------------------------------------------------------------------------------------


def test_the_lock_file_pins_every_installed_dependency_exactly() -> None:
    lines = [line for line in (ROOT / "requirements.lock").read_text().splitlines() if line and line[0] != "#"]
    assert lines
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[^=\s]+", line) for line in lines), lines
    names = {line.split("==")[0].lower().replace("_", "-") for line in lines}
    assert "cos-relay" not in names
    for needed in ("aiohttp", "lxml", "starlette", "uvicorn", "xmlschema", "orjson", "httpx"):
        assert needed in names


def test_the_audit_script_is_executable_and_checks_its_own_syntax() -> None:
    script = ROOT / "scripts" / "audit"
    assert script.stat().st_mode & 0o111
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
