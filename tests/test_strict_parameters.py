"""Hostile numbers, times, ids and host names: a 400 (API) or a one-line error (CLI), never a 500 or a traceback.

Every value here once got past a check: ``'²'`` passes ``str.isdigit()`` but not ``int()``; ``int()`` and
``float()`` take ``'٣'``, ``'1_0'``, ``'nan'`` and ``'1e308'``; an offset pushes year 1 out of range; a
DNS label over 63 characters makes the IDNA codec raise. And two tokens in one request were tried in
whatever order the framework picked.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import httpx
import pytest
from click.testing import CliRunner, Result
from starlette.requests import Request

from relay.cli import main
from relay.deliver.ssrf import AddressPolicy
from relay.domain.clock import utc_now
from relay.domain.errors import BadSubscriber, TooLarge
from relay.outbox.config import apply_config
from relay.outbox.service import Subscribers
from relay.receive.body import read_body
from relay.store import store_for
from relay.store.records import Target
from tests.conftest import ADMIN_TOKEN, CALLBACK_TOKEN, DATA
from tests.live import ProcessServer, db_text, free_port

TRANSCODE = (DATA / "samples" / "transcode_success.xml").read_bytes()
SERVE_ARGS = ("--callback-token", CALLBACK_TOKEN, "--admin-token", ADMIN_TOKEN)
LONG_LABEL = "a" * 64
SEVEN_DAYS = 7 * 24 * 3600


# -- the admin API: every query and path parameter --------------------------------------------------


HOSTILE_QUERIES = [
    # cursor: past SQLite's INTEGER, or digits int() refuses
    ("GET", "/api/jobs?cursor=9223372036854775808:x", "cursor must be the value returned by the previous page"),
    ("GET", "/api/jobs?cursor=%C2%B2:x", "cursor must be the value returned by the previous page"),
    ("GET", "/api/callbacks?cursor=9223372036854775808", "cursor must be the value returned by the previous page"),
    ("GET", "/api/callbacks?cursor=%C2%B2", "cursor must be the value returned by the previous page"),
    ("GET", "/api/deliveries?cursor=99999999999999999999", "cursor must be the value returned by the previous page"),
    # limit
    ("GET", "/api/jobs?limit=%C2%B2", "limit must be an integer from 1 to 500"),
    ("GET", "/api/callbacks?limit=%C2%B2", "limit must be an integer from 1 to 500"),
    ("GET", "/api/deliveries?limit=%C2%B2", "limit must be an integer from 1 to 500"),
    # delivery ids
    ("GET", "/api/deliveries/%C2%B2", "a delivery id is a number: it must be an integer from 1 to"),
    ("POST", "/api/deliveries/%C2%B2/retry", "a delivery id is a number: it must be an integer from 1 to"),
    # since: an instant whose offset leaves the representable years, a span past them
    ("GET", "/api/jobs?since=0001-01-01T00:00:00%2B14:00", "since is out of range"),
    ("GET", "/api/jobs?since=9999-12-31T23:59:59-14:00", "since is out of range"),
    ("POST", "/api/subscribers/hook/recover?since=99999999999d", "since reaches back at most 36500d"),
    ("POST", "/api/subscribers/hook/recover?since=%C2%B2d", "since must look like 2h, 30m, 7d"),
    ("POST", "/api/subscribers/hook/recover?since=0001-01-01T00:00:00%2B14:00", "since is out of range"),
    # a parameter given twice is ambiguous
    ("GET", "/api/jobs?limit=1&limit=500", "limit is given 2 times; give it once"),
    ("GET", "/api/deliveries?subscriber=a&subscriber=b", "subscriber is given 2 times"),
    ("GET", "/api/callbacks?outcome=accepted&outcome=invalid", "outcome is given 2 times"),
    # a closed set of values
    ("GET", "/api/deliveries?state=sent", "state must be one of pending, in_flight, delivered, dead, cancelled"),
]


@pytest.mark.parametrize(("method", "path", "detail"), HOSTILE_QUERIES)
def test_hostile_api_parameters_are_400_naming_the_parameter_and_its_range(
    module_admin: httpx.Client, method: str, path: str, detail: str
) -> None:
    response = module_admin.request(method, path)
    assert response.status_code == 400, response.text
    assert detail in response.json()["detail"]
    assert module_admin.get("/healthz").status_code == 200


def test_recover_reaches_back_a_century_and_no_further(admin: httpx.Client) -> None:
    admin.post("/api/subscribers", json={"name": "hook", "url": "https://8.8.8.8/hook"}).raise_for_status()
    assert admin.post("/api/subscribers/hook/recover?since=36500d").json()["requeued"] == 0
    refused = admin.post("/api/subscribers/hook/recover?since=36501d")
    assert refused.status_code == 400, refused.text


def test_recover_since_an_instant_with_an_offset_is_taken_in_utc(admin: httpx.Client) -> None:
    admin.post("/api/subscribers", json={"name": "hook", "url": "https://8.8.8.8/hook"}).raise_for_status()
    answer = admin.post("/api/subscribers/hook/recover", params={"since": "2024-11-05T18:00:00+08:00"}).json()
    assert answer["since"] == "2024-11-05T10:00:00+00:00"


# -- subscriber definitions: retry schedules and host names -----------------------------------------


@pytest.mark.parametrize(
    ("schedule", "detail"),
    [
        ([1e308], "a retry schedule is a list of seconds from 0 to 604800 (7 days); 1e+308 is not"),
        ([SEVEN_DAYS + 1], "604801 is not"),
        ([1] * 21, "a retry schedule is 1 to 20 delays, not 21"),
    ],
)
def test_an_unbounded_retry_schedule_is_400_on_create_and_on_change(
    admin: httpx.Client, schedule: list[float], detail: str
) -> None:
    created = admin.post(
        "/api/subscribers", json={"name": "big", "url": "https://8.8.8.8/", "retry_schedule": schedule}
    )
    assert created.status_code == 400, created.text
    assert detail in created.json()["detail"]
    admin.post("/api/subscribers", json={"name": "hook", "url": "https://8.8.8.8/"}).raise_for_status()
    changed = admin.patch("/api/subscribers/hook", json={"retry_schedule": schedule})
    assert changed.status_code == 400, changed.text
    assert admin.get("/api/subscribers/hook").json()["retry_schedule"] is None
    bounds = admin.patch("/api/subscribers/hook", json={"retry_schedule": [0] * 19 + [SEVEN_DAYS]})
    assert bounds.status_code == 200, bounds.text


@pytest.mark.parametrize(
    ("host", "detail"),
    [
        (f"{LONG_LABEL}.example.com", "is 64 characters; DNS allows at most 63"),
        (LONG_LABEL, "is 64 characters; DNS allows at most 63"),
        (".".join(["a" * 63] * 4) + ".com", "the host name is 259 characters; DNS allows at most 253"),
        ("xn--zz.example.com", "not a valid internationalised (IDNA) name"),
    ],
)
def test_a_subscriber_host_beyond_dns_limits_is_400_with_the_reason(
    module_admin: httpx.Client, host: str, detail: str
) -> None:
    response = module_admin.post("/api/subscribers", json={"name": "hook", "url": f"https://{host}/hook"})
    assert response.status_code == 400, response.text
    assert detail in response.json()["detail"]


# -- credentials: one per request -------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        f"token=WRONG&token={CALLBACK_TOKEN}",
        f"token={CALLBACK_TOKEN}&token={CALLBACK_TOKEN}",
    ],
)
def test_a_callback_with_two_tokens_is_401_whichever_is_right(client: httpx.Client, query: str) -> None:
    response = client.post(f"/cos/callback?{query}", content=TRANSCODE, headers={"Content-Type": "application/xml"})
    assert response.status_code == 401, response.text
    assert client.post(f"/cos/callback?token={CALLBACK_TOKEN}", content=TRANSCODE).status_code == 200


@pytest.mark.parametrize("second", ["Bearer WRONG", f"Bearer {ADMIN_TOKEN}"])
def test_two_authorization_headers_on_the_admin_api_are_401(module_client: httpx.Client, second: str) -> None:
    right = ("Authorization", f"Bearer {ADMIN_TOKEN}")
    response = module_client.get("/api/jobs", headers=[right, ("Authorization", second)])
    assert response.status_code == 401, response.text
    assert module_client.get("/api/jobs", headers=[right]).status_code == 200


# -- Content-Length -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("declared", "too_large"), [(b"\xb2", False), (b"1" + b"0" * 5000, True)])
def test_a_content_length_of_non_ascii_or_endless_digits_is_no_500(declared: bytes, too_large: bool) -> None:
    """b'\\xb2' is '²' in latin-1, as Starlette decodes headers. uvicorn's parsers refuse both; others may not."""

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"<a/>", "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [(b"content-length", declared)]}

    async def read() -> bytes:
        return await read_body(Request(scope, receive), limit=1024, timeout=5)

    if too_large:
        with pytest.raises(TooLarge):
            anyio.run(read)
    else:
        assert anyio.run(read) == b"<a/>"


# -- settings from the environment -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "accepted"),
    [
        ("RELAY_PORT", "٣", "an integer from 0 to 65535"),
        ("RELAY_WORKERS", "1_0", "an integer from 1 to 64"),
        ("RELAY_MAX_BODY", "1e3", "an integer from 1 to 1073741824"),
        ("RELAY_BODY_TIMEOUT", "nan", "a number of seconds (or a duration like 90s, 5m or 2h) more than 0 to 1h"),
        ("RELAY_POLL_INTERVAL", "inf", "a number of seconds (or a duration like 90s, 5m or 2h) more than 0 to 1h"),
        ("RELAY_DISABLE_AFTER", "1e308", "a number of seconds (or a duration like 90s, 5m or 2h) more than 0 to 365d"),
        ("RELAY_SECRET_GRACE", "1e308", "a number of seconds (or a duration like 90s, 5m or 2h) from 0 to 30d"),
        ("RELAY_RETRY_SCHEDULE", "1e308", "retry delay '1e308' is not a number of seconds"),
        ("RELAY_RETRY_SCHEDULE", ",".join(["1"] * 21), "a retry schedule is 1 to 20 delays"),
    ],
)
def test_settings_from_the_environment_are_strict_and_name_the_variable(
    variable: str, value: str, accepted: str
) -> None:
    result = CliRunner().invoke(main, ["serve"], env={variable: value})
    assert result.exit_code == 2, result.output
    (error,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert variable in error
    assert accepted in error


def serve(db: Target, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m relay serve`` to the end; a refusal must come at once, not after serving."""
    command = [sys.executable, "-m", "relay", "serve", "--port", str(free_port()), "--db", db_text(db)]
    environment = {**os.environ, "RELAY_ALLOW_NETWORKS": "", **(env or {})}
    return subprocess.run(
        [*command, *args, *SERVE_ARGS], env=environment, capture_output=True, text=True, timeout=30, check=False
    )


@pytest.mark.parametrize(
    ("env", "detail"),
    [
        ({"RELAY_RETRY_SCHEDULE": "1e308"}, "retry delay '1e308' is not a number of seconds from 0 to 604800"),
        ({"RELAY_DISABLE_AFTER": "1e308"}, "a number of seconds (or a duration like 90s, 5m or 2h) more than 0"),
        ({"RELAY_WORKERS": "٣"}, "'٣' is not an integer from 1 to 64"),
    ],
)
@pytest.mark.slow
def test_serve_refuses_hostile_numbers_from_the_environment_in_one_line(
    tmp_path: Path, env: dict[str, str], detail: str
) -> None:
    finished = serve(tmp_path / "r.db", env=env)
    assert finished.returncode == 2, finished.stdout + finished.stderr
    assert detail in finished.stderr
    assert "Traceback" not in finished.stdout + finished.stderr


@pytest.mark.slow
def test_serve_with_a_config_naming_a_dns_label_over_63_characters_exits_with_one_line(
    tmp_path: Path, database: Target
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(f'[[subscribers]]\nname = "hook"\nurl = "https://{LONG_LABEL}.example.com/hook"\n')
    finished = serve(database, "--config", str(config))
    output = finished.stdout + finished.stderr
    assert finished.returncode == 1, output
    assert "Traceback" not in output
    assert finished.stderr.strip().splitlines() == [
        f"Error: {config}:3: subscribers[0].url: the URL is not allowed: the host name label {'a' * 20}..."
        " is 64 characters; DNS allows at most 63"
    ]


@pytest.mark.slow
def test_a_real_server_refuses_hostile_parameters_and_repeated_tokens(database: Target) -> None:
    server = ProcessServer(database, args=SERVE_ARGS).start()
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as api:
            schedule = api.post(
                "/api/subscribers", json={"name": "hook", "url": "https://8.8.8.8/", "retry_schedule": [1e308]}
            )
            cursor = api.get("/api/jobs?cursor=9223372036854775808:x")
            label = api.post("/api/subscribers", json={"name": "dns", "url": f"https://{LONG_LABEL}.example.com/"})
            tokens = api.post(f"/cos/callback?token=WRONG&token={CALLBACK_TOKEN}", content=TRANSCODE)
            healthy = api.get("/healthz")
    finally:
        output = server.stop()
    assert (schedule.status_code, cursor.status_code, label.status_code) == (400, 400, 400)
    assert "1e+308 is not" in schedule.json()["detail"]
    assert tokens.status_code == 401
    assert healthy.status_code == 200
    assert "Traceback" not in output


# -- the CLI: every option that takes a number, a duration, a time or an id -------------------------


def cli(db: Target, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--db", db_text(db)], env={"RELAY_ALLOW_NETWORKS": None, "RELAY_DB": None})


@pytest.mark.parametrize(
    ("args", "detail"),
    [
        (("deliveries", "show", "٣"), "Invalid value for 'ID': must be an integer from 1 to"),
        (("deliveries", "retry", "1_0"), "Invalid value for 'ID': must be an integer from 1 to"),
        (("deliveries", "list", "--limit", "٣"), "Invalid value for '--limit': must be an integer from 1 to 500"),
        (("jobs", "--limit", "0"), "Invalid value for '--limit': must be an integer from 1 to 500"),
        (("jobs", "--limit", "99999999999999999999"), "Invalid value for '--limit': must be an integer from 1 to 500"),
        (
            ("subscribers", "add", "hook", "--url", "https://8.8.8.8/", "--max-in-flight", "٣"),
            "Invalid value for '--max-in-flight': must be an integer from 1 to 256",
        ),
        (
            ("subscribers", "add", "hook", "--url", "https://8.8.8.8/", "--timeout", "nan"),
            "Invalid value for '--timeout': must be a number from 0.1 to 120",
        ),
        (
            ("subscribers", "add", "hook", "--url", "https://8.8.8.8/", "--retry-schedule", "1e308"),
            "retry delay '1e308' is not a number of seconds from 0 to 604800 (7 days)",
        ),
        (
            ("subscribers", "rotate-secret", "hook", "--grace", "nan"),
            "Invalid value for '--grace' (env var: 'RELAY_SECRET_GRACE'): ",
        ),
        (
            ("subscribers", "rotate-secret", "hook", "--grace", "1e308"),
            "Invalid value for '--grace' (env var: 'RELAY_SECRET_GRACE'): ",
        ),
        (("subscribers", "recover", "hook", "--since", "99999999999d"), "since reaches back at most 36500d"),
    ],
)
def test_cli_numbers_and_times_are_strict_with_a_one_line_error(
    module_database: Target, args: tuple[str, ...], detail: str
) -> None:
    """Refused while the options are read, before the database is opened: the module's database will do."""
    result = cli(module_database, *args)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert detail in result.output


# -- the TOML config -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "schedule", ["[nan]", "[inf]", "[1e308]", "[" + ", ".join(["1"] * 21) + "]", "[" + "9" * 400 + "]"]
)
def test_a_config_with_an_unbounded_retry_schedule_changes_nothing(
    tmp_path: Path, database: Target, schedule: str
) -> None:
    config = tmp_path / "subscribers.toml"
    config.write_text(
        '[[subscribers]]\nname = "good"\nurl = "http://127.0.0.1:9/"\n\n'
        f'[[subscribers]]\nname = "bad"\nurl = "http://127.0.0.1:9/"\nretry_schedule = {schedule}\n'
    )
    with store_for(database) as store:
        service = Subscribers(store, AddressPolicy.from_setting("127.0.0.0/8"), utc_now)
        with pytest.raises(
            BadSubscriber, match=r"subscribers\.toml:8: subscribers\[1\]\.retry_schedule: a retry schedule is"
        ):
            apply_config(service, config)
        assert service.all() == []
