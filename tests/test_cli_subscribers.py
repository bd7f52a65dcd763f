"""`cos-relay subscribers` and `cos-relay deliveries` on a real SQLite file, alone and next to a running server."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone

import click
import httpx
import pytest
from click.testing import CliRunner, Result
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from relay.app.factory import create_app
from relay.cli import main
from relay.cli.subscribers import SHOWN_ONCE
from relay.deliver.signing import generate_secret
from relay.deliver.ssrf import AddressPolicy
from relay.deliver.worker import LEASE_MARGIN
from relay.domain.clock import utc_now
from relay.domain.delivery import Attempt, Decision, Finished, Outcome
from relay.domain.destinations import Handshake
from relay.domain.subscribers import mask_secret
from relay.outbox.service import Subscribers
from relay.settings.table import Settings
from relay.store import Store, store_for
from relay.store.records import Target
from tests.conftest import (
    ADMIN_TOKEN,
    CALLBACK_TOKEN,
    SAMPLE_JOB_ID,
    TRANSCODE,
    callback_schema,
    ingest,
    job_body,
    job_id,
)
from tests.databases import rows
from tests.live import ProcessServer, ThreadServer, db_text, wait_until
from tests.sink import Sink, assert_unsigned_feishu_message, verify

#: A public IP literal: accepted without DNS, and nothing is ever sent to it (no server runs in these tests).
PUBLIC_URL = "https://8.8.8.8/hooks/cos"


@pytest.fixture
def db(database: Target) -> Target:
    """A database as `serve` leaves it: the other commands never create one (issue 15)."""
    with store_for(database):
        return database


def cli(db: Target, *args: str, env: Mapping[str, str | None] | None = None) -> Result:
    """Run ``cos-relay ARGS --db DB`` in-process; RELAY_ALLOW_NETWORKS is unset unless ``env`` sets it."""
    environment: dict[str, str | None] = {"RELAY_ALLOW_NETWORKS": None, "RELAY_DB": None, **(env or {})}
    return CliRunner().invoke(main, [*args, "--db", db_text(db)], env=environment)


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def failed(result: Result, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    return result.output


def field(output: str, name: str) -> str:
    """The value of ``name`` in `show`-style ``name  value`` output."""
    match = re.search(rf"^{re.escape(name)}\s+(.*)$", output, re.MULTILINE)
    assert match, f"no {name!r} in:\n{output}"
    return match.group(1).strip()


def fail_for_good(db: Target) -> list[int]:
    """Claim every due delivery and record one failed attempt that makes it dead; returns their ids."""
    attempt = Attempt(Outcome.HTTP_5XX, 500, 0.05, None, b"boom", None)

    def dead(store: Store) -> set[int]:
        return {d["id"] for d in store.list_deliveries(state="dead", limit=1000).items if d["id"] is not None}

    async def kill(store: Store) -> list[int]:
        before = dead(store)
        now = utc_now()
        pending = await store.claim(now, LEASE_MARGIN, 100)
        while pending:
            claim = pending.pop()
            [recorded] = await store.finish([Finished(claim, attempt, Decision("dead"), now, utc_now())], LEASE_MARGIN)
            pending += recorded.following
        # A first attempt from the event log has no row until it fails: the ones killed are rows now.
        return sorted(dead(store) - before)

    with store_for(db) as store:
        return asyncio.run(kill(store))


def addresses(output: str) -> list[list[str]]:
    """How `deliveries show/retry` name each delivery of `deliveries list` output: its id, or (no row: id ``-``)
    its subscriber and event id (the last column)."""
    found = []
    for line in output.splitlines()[1:]:
        cells = line.split()
        found.append([cells[0]] if cells[0] != "-" else ["--subscriber", cells[2], "--event-id", cells[-1]])
    return found


def add_hook(db: Target, *extra: str, name: str = "hook") -> str:
    return ok(cli(db, "subscribers", "add", name, "--url", PUBLIC_URL, *extra))


# -- add, list, show ---------------------------------------------------------------------------------


def test_add_prints_the_secret_once_and_list_and_show_only_mask_it(db: Target) -> None:
    output = add_hook(db, "--type", "cos.job.*", "--filter", "tag=Transcode", "--filter", "object_prefix=uploads/")
    secret = field(output, "secret")
    assert secret.startswith("whsec_")
    assert len(secret) > 40
    assert SHOWN_ONCE in output
    assert field(output, "url") == PUBLIC_URL
    assert field(output, "state") == "enabled"
    assert field(output, "types") == "cos.job.*"
    assert field(output, "filters") == "tag=Transcode,object_prefix=uploads/"
    assert field(output, "source") == "cli"

    listing = ok(cli(db, "subscribers", "list"))
    header, row = listing.splitlines()
    assert header.split() == ["name", "kind", "state", "url", "types", "filters", "secret"]
    assert row.split() == [
        "hook",
        "webhook",
        "enabled",
        PUBLIC_URL,
        "cos.job.*",
        "tag=Transcode,object_prefix=uploads/",
        f"{secret[:10]}…",
    ]

    shown = ok(cli(db, "subscribers", "show", "hook"))
    assert field(shown, "secret") == f"{secret[:10]}…"
    for output_without_secret in (listing, shown):
        assert secret not in output_without_secret
        assert secret[10:20] not in output_without_secret
        assert SHOWN_ONCE not in output_without_secret


def test_add_keeps_a_given_secret_and_the_delivery_settings(db: Target) -> None:
    secret = generate_secret()
    output = add_hook(
        db, "--secret", secret, "--max-in-flight", "1", "--timeout", "2.5", "--retry-schedule", "5,30,300"
    )
    assert field(output, "secret") == secret
    shown = ok(cli(db, "subscribers", "show", "hook"))
    assert field(shown, "max_in_flight") == "1"
    assert field(shown, "timeout") == "2.5"
    assert field(shown, "retry_schedule") == "5.0,30.0,300.0"
    assert field(shown, "types") == "*"
    assert field(shown, "filters") == "-"


def test_list_on_an_empty_database_says_so(db: Target) -> None:
    assert ok(cli(db, "subscribers", "list")).strip() == "no subscribers"


def test_adding_a_taken_name_fails_with_a_clear_message(db: Target) -> None:
    add_hook(db)
    output = failed(cli(db, "subscribers", "add", "hook", "--url", "https://8.8.4.4/other"))
    assert "Error: a subscriber named 'hook' already exists" in output
    assert field(ok(cli(db, "subscribers", "show", "hook")), "url") == PUBLIC_URL


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://8.8.8.8/hook", "scheme 'ftp' is not http or https"),
        ("http://10.0.0.1/", "10.0.0.1 is private"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is link-local"),
        ("http://127.0.0.1:9/hook", "127.0.0.1 is loopback"),
        ("http://user:pw@8.8.8.8/hook", "must not carry credentials"),
    ],
)
def test_urls_that_are_not_public_http_are_refused(db: Target, url: str, reason: str) -> None:
    output = failed(cli(db, "subscribers", "add", "hook", "--url", url))
    assert "Error: the URL is not allowed" in output
    assert reason in output
    assert ok(cli(db, "subscribers", "list")).strip() == "no subscribers"


@pytest.mark.parametrize(
    ("url", "networks"),
    [("http://10.0.0.1/", "10.0.0.0/8"), ("http://169.254.169.254/", "169.254.169.254/32, 10.0.0.0/8")],
)
def test_private_addresses_are_accepted_when_allow_networks_covers_them(db: Target, url: str, networks: str) -> None:
    assert (
        field(ok(cli(db, "subscribers", "add", "by-option", "--url", url, "--allow-networks", networks)), "url") == url
    )
    by_env = cli(db, "subscribers", "add", "by-env", "--url", url, env={"RELAY_ALLOW_NETWORKS": networks})
    assert field(ok(by_env), "url") == url


def test_allow_networks_that_does_not_cover_the_address_still_refuses(db: Target) -> None:
    output = failed(
        cli(db, "subscribers", "add", "hook", "--url", "http://10.0.0.1/", "--allow-networks", "10.1.0.0/16")
    )
    assert "10.0.0.1 is private" in output


def test_a_malformed_allow_list_is_a_usage_error(db: Target) -> None:
    output = failed(cli(db, "subscribers", "add", "hook", "--url", PUBLIC_URL, "--allow-networks", "10.0.0.1/8"), 2)
    assert "--allow-networks" in output
    assert "has host bits set" in output


@pytest.mark.parametrize(
    ("pair", "reason"),
    [
        ("tag", "filter 'tag' is not KEY=VALUE"),
        ("=Transcode", "filter '=Transcode' is not KEY=VALUE"),
        ("colour=red", "unknown filter key(s) ['colour']"),
    ],
)
def test_filters_that_do_not_parse_are_refused(db: Target, pair: str, reason: str) -> None:
    output = failed(cli(db, "subscribers", "add", "hook", "--url", PUBLIC_URL, "--filter", pair))
    assert f"Error: {reason}" in output
    assert ok(cli(db, "subscribers", "list")).strip() == "no subscribers"


@pytest.mark.parametrize(
    ("args", "code", "reason"),
    [
        (("--retry-schedule", "5,soon"), 2, "retry delay 'soon' is not a number of seconds"),
        (("--max-in-flight", "0"), 2, "Invalid value for '--max-in-flight': must be an integer from 1 to 256"),
        (("--timeout", "600"), 2, "Invalid value for '--timeout': must be a number from 0.1 to 120"),
        (("--secret", "not base64!"), 1, "webhook secret is not valid base64"),
    ],
)
def test_bad_delivery_settings_are_refused(db: Target, args: tuple[str, ...], code: int, reason: str) -> None:
    assert reason in failed(cli(db, "subscribers", "add", "hook", "--url", PUBLIC_URL, *args), code)


def test_a_bad_name_is_refused(db: Target) -> None:
    output = failed(cli(db, "subscribers", "add", "Bad Name", "--url", PUBLIC_URL))
    assert "a subscriber name is 1-63 characters" in output


# -- pause, resume, rotate, remove -------------------------------------------------------------------


def test_show_prints_the_handshake_verdict_of_a_subscriber_that_asks_for_one_and_a_dash_otherwise(db: Target) -> None:
    add_hook(db)
    assert field(ok(cli(db, "subscribers", "show", "hook")), "handshake_verdict") == "-"
    add_hook(db, "--handshake", name="asks")
    assert field(ok(cli(db, "subscribers", "show", "asks")), "handshake_verdict") == "state=pending"
    at = utc_now()
    with store_for(db) as store:
        asks = store.get_subscriber("asks")
        assert asks is not None
        refusal = "refused: answered 403 without WebHook-Allowed-Origin"
        asyncio.run(store.record_handshake(Handshake(asks.id, PUBLIC_URL, False, None, refusal, at, at)))
    shown = field(ok(cli(db, "subscribers", "show", "asks")), "handshake_verdict")
    assert shown == f"state=refused,checked_at={at.isoformat()},detail={refusal}"


def test_pause_and_resume_change_the_state_show_reports(db: Target) -> None:
    add_hook(db)
    assert ok(cli(db, "subscribers", "pause", "hook")).strip() == "hook: paused"
    assert field(ok(cli(db, "subscribers", "show", "hook")), "state") == "paused"
    assert " paused " in ok(cli(db, "subscribers", "list"))
    assert ok(cli(db, "subscribers", "resume", "hook")).strip() == "hook: enabled"
    assert field(ok(cli(db, "subscribers", "show", "hook")), "state") == "enabled"


@pytest.mark.parametrize("command", ["show", "pause", "resume", "remove", "rotate-secret"])
def test_commands_on_an_unknown_name_fail_with_exit_1(db: Target, command: str) -> None:
    assert "Error: no subscriber is named 'nope'" in failed(cli(db, "subscribers", command, "nope"))


def test_rotate_secret_prints_the_new_secret_once_and_when_the_old_one_stops_signing(db: Target) -> None:
    old = field(add_hook(db), "secret")
    before = utc_now()
    output = ok(cli(db, "subscribers", "rotate-secret", "hook"))
    new = field(output, "new secret:")
    assert new.startswith("whsec_")
    assert new != old
    assert SHOWN_ONCE in output
    until = field(output, "the previous secret keeps signing until")
    shown = ok(cli(db, "subscribers", "show", "hook"))
    assert field(shown, "previous_secret_expires_at") == until
    # The default grace: a day (generous bounds; only the order of magnitude matters).
    expires = datetime.fromisoformat(until.removesuffix(" UTC")).replace(tzinfo=UTC)  # printed readably (issue 15)
    assert timedelta(hours=23) < expires - before < timedelta(hours=25)
    assert field(shown, "secret") == f"{new[:10]}…"
    assert new not in shown
    assert old not in shown


def test_rotate_secret_accepts_a_given_secret_and_grace(db: Target) -> None:
    add_hook(db)
    secret = generate_secret()
    output = ok(cli(db, "subscribers", "rotate-secret", "hook", "--secret", secret, "--grace", "0"))
    assert field(output, "new secret:") == secret
    assert "not valid base64" in failed(cli(db, "subscribers", "rotate-secret", "hook", "--secret", "%%%"))


def test_rotate_secret_of_a_robot_takes_only_its_platforms_secret_in_one_line(db: Target) -> None:
    url = "https://8.8.8.8/robot"
    ok(cli(db, "subscribers", "add", "chat", "--url", url, "--kind", "slack"))
    output = failed(cli(db, "subscribers", "rotate-secret", "chat"))
    assert output == "Error: a slack robot does not sign its messages: it has no secret to rotate\n"
    ok(cli(db, "subscribers", "add", "lark", "--url", url, "--kind", "feishu"))
    output = failed(cli(db, "subscribers", "rotate-secret", "lark"))
    assert output == "Error: a feishu robot signs with the secret its platform shows: give that secret\n"
    assert field(ok(cli(db, "subscribers", "rotate-secret", "lark", "--secret", "SEC-platform")), "new secret:") == (
        "SEC-platform"
    )


def test_remove_reports_the_cancelled_deliveries_and_forgets_the_name(db: Target) -> None:
    add_hook(db)
    add_hook(db, name="other")
    ingest(db, job_body(1), job_body(2))
    assert ok(cli(db, "subscribers", "remove", "hook")).strip() == "removed hook; cancelled 2 pending deliveries"
    assert [line.split()[0] for line in ok(cli(db, "subscribers", "list")).splitlines()[1:]] == ["other"]
    assert len(addresses(ok(cli(db, "deliveries", "list", "--state", "cancelled")))) == 2
    assert len(addresses(ok(cli(db, "deliveries", "list", "--subscriber", "other", "--state", "pending")))) == 2
    # The name is free again.
    add_hook(db)


# -- deliveries --------------------------------------------------------------------------------------


def test_deliveries_list_filters_by_subscriber_state_and_event(db: Target) -> None:
    add_hook(db)
    add_hook(db, "--type", "cos.workflow.*", name="workflows-only")
    [result] = ingest(db, TRANSCODE)
    assert result.events == 1  # owed to "hook" alone: the listing below has its one row
    assert ok(cli(db, "deliveries", "list", "--subscriber", "workflows-only")).strip() == "no deliveries"

    listing = ok(cli(db, "deliveries", "list"))
    header, row = listing.splitlines()
    assert header.split() == [
        "id",
        "state",
        "subscriber",
        "event_type",
        "subject",
        "attempts",
        "last_status",
        "next_attempt_at",
        "event_id",
    ]
    assert row.split()[:7] == ["-", "pending", "hook", "cos.job.succeeded", SAMPLE_JOB_ID.decode(), "0", "-"]

    # Pending in the event log, it has no row (id -): it is named by subscriber and event.
    [address] = addresses(listing)
    event_id = field(ok(cli(db, "deliveries", "show", *address)), "event_id")
    assert address == ["--subscriber", "hook", "--event-id", event_id]
    assert addresses(ok(cli(db, "deliveries", "list", "--event-id", event_id))) == [address]
    assert ok(cli(db, "deliveries", "list", "--event-id", "nope")).strip() == "no deliveries"
    assert ok(cli(db, "deliveries", "list", "--state", "dead")).strip() == "no deliveries"


def test_deliveries_list_limit_takes_the_newest(db: Target) -> None:
    add_hook(db)
    ingest(db, *(job_body(number) for number in range(5)))
    listing = ok(cli(db, "deliveries", "list"))
    assert [line.split()[4] for line in listing.splitlines()[1:]] == [job_id(n) for n in reversed(range(5))]
    everything = addresses(listing)
    assert len(everything) == 5
    assert addresses(ok(cli(db, "deliveries", "list", "--limit", "2"))) == everything[:2]
    assert "--limit" in failed(cli(db, "deliveries", "list", "--limit", "0"), 2)
    assert "--state 'lost' is not a delivery state" in failed(cli(db, "deliveries", "list", "--state", "lost"), 1)


def test_deliveries_show_includes_the_attempts_log(db: Target) -> None:
    add_hook(db)
    ingest(db, TRANSCODE)
    [address] = addresses(ok(cli(db, "deliveries", "list")))
    fresh = ok(cli(db, "deliveries", "show", *address))
    assert field(fresh, "state") == "pending"
    assert "attempts: none yet" in fresh

    [delivery_id] = fail_for_good(db)  # failed: a row now
    assert ok(cli(db, "deliveries", "show", *address)) == ok(cli(db, "deliveries", "show", str(delivery_id)))
    shown = ok(cli(db, "deliveries", "show", str(delivery_id)))
    assert field(shown, "id") == str(delivery_id)
    assert field(shown, "state") == "dead"
    assert field(shown, "subscriber") == "hook"
    assert field(shown, "last_status") == "500"
    log = shown.split("attempts:\n", 1)[1].splitlines()
    assert log[0].split() == ["started_at", "trigger", "outcome", "status", "duration", "error"]
    # started_at is "date time UTC", the duration in human units (issue 15)
    assert log[1].split()[3:8] == ["first", "http_5xx", "500", "50", "ms"]


def test_deliveries_show_and_retry_of_an_unknown_id_fail(db: Target) -> None:
    add_hook(db)
    assert "Error: no delivery has id 42" in failed(cli(db, "deliveries", "show", "42"))
    assert "Error: no delivery has id 42" in failed(cli(db, "deliveries", "retry", "42"))
    assert "Invalid value for 'ID': must be an integer from 1 to" in failed(cli(db, "deliveries", "show", "x"), 2)
    assert "must be an integer from 1 to" in failed(cli(db, "deliveries", "retry", str(2**64)), 2)


def test_deliveries_retry_queues_a_dead_delivery_again(db: Target) -> None:
    add_hook(db)
    ingest(db, TRANSCODE)
    [delivery_id] = fail_for_good(db)
    output = ok(cli(db, "deliveries", "retry", str(delivery_id)))
    assert output.strip() == f"delivery {delivery_id} to hook queued again (pending)"
    assert addresses(ok(cli(db, "deliveries", "list", "--state", "pending"))) == [[str(delivery_id)]]

    # The next attempt will say it was asked for by hand.
    async def trigger(store: Store) -> str:
        [claim] = await store.claim(utc_now(), LEASE_MARGIN, 10)
        return claim.trigger

    with store_for(db) as store:
        assert asyncio.run(trigger(store)) == "manual"


def test_deliveries_retry_refuses_a_cancelled_delivery(db: Target) -> None:
    add_hook(db)
    ingest(db, TRANSCODE)
    [address] = addresses(ok(cli(db, "deliveries", "list")))
    # Pending in the event log (no row): queued again by hand, it gets its row (id) first.
    retried = ok(cli(db, "deliveries", "retry", *address))
    delivery_id = int(retried.split()[1])
    ok(cli(db, "subscribers", "remove", "hook"))
    output = failed(cli(db, "deliveries", "retry", str(delivery_id)))
    assert f"Error: delivery {delivery_id} is in flight, cancelled, or held for COS to confirm its job" in output


# -- recover -----------------------------------------------------------------------------------------


def test_recover_requeues_dead_deliveries_with_a_progress_bar(db: Target) -> None:
    add_hook(db)
    add_hook(db, name="other")
    ingest(db, *(job_body(number) for number in range(3)))
    assert len(fail_for_good(db)) == 6

    output = ok(cli(db, "subscribers", "recover", "hook", "--since", "2h"))
    assert "requeueing deliveries to hook" in output  # the progress bar's label (no tty: label only)
    assert re.search(r"^requeued 3 deliveries created since \d{4}-\d\d-\d\dT", output, re.MULTILINE)
    pending = ok(cli(db, "deliveries", "list", "--state", "pending"))
    assert len(addresses(pending)) == 3
    assert all(line.split()[2] == "hook" for line in pending.splitlines()[1:])
    assert len(addresses(ok(cli(db, "deliveries", "list", "--subscriber", "other", "--state", "dead")))) == 3


@pytest.mark.parametrize("since", ["90s", "30m", "7d", "2000-01-01T00:00:00Z", "2000-01-01T08:00:00+08:00"])
def test_recover_accepts_durations_and_iso_instants(db: Target, since: str) -> None:
    add_hook(db)
    ingest(db, TRANSCODE)
    fail_for_good(db)
    assert "requeued 1 deliveries" in ok(cli(db, "subscribers", "recover", "hook", "--since", since))


def test_recover_compares_an_instant_with_an_offset_in_utc(db: Target) -> None:
    add_hook(db)
    ingest(db, TRANSCODE)
    fail_for_good(db)
    # An hour ago, written in UTC+8: its local clock reads 7 hours *after* now in UTC.
    since = (utc_now() - timedelta(hours=1)).astimezone(timezone(timedelta(hours=8))).isoformat()
    assert "requeued 1 deliveries" in ok(cli(db, "subscribers", "recover", "hook", "--since", since))


def test_recover_leaves_deliveries_older_than_since_alone(db: Target) -> None:
    add_hook(db)
    ingest(db, TRANSCODE)
    fail_for_good(db)
    output = ok(cli(db, "subscribers", "recover", "hook", "--since", "2999-01-01T00:00:00Z"))
    assert "requeued 0 deliveries" in output
    assert ok(cli(db, "deliveries", "list", "--state", "pending")).strip() == "no deliveries"


def test_recover_refuses_a_since_it_cannot_read_and_unknown_names(db: Target) -> None:
    add_hook(db)
    output = failed(cli(db, "subscribers", "recover", "hook", "--since", "yesterday"), 2)
    assert "Invalid value for '--since'" in output
    assert "since must look like 2h, 30m, 7d or an ISO-8601 instant" in output
    assert "Missing option '--since'" in failed(cli(db, "subscribers", "recover", "hook"), 2)
    assert "no subscriber is named 'nope'" in failed(cli(db, "subscribers", "recover", "nope", "--since", "2h"))


# -- update ------------------------------------------------------------------------------------------

#: `update`'s refusal when no option is given: every option that changes something, as `--help` spells it.
NOTHING_TO_UPDATE = (
    "Error: nothing to update: give at least one of --url, --type, --filter, --no-filters, --max-in-flight,"
    " --timeout, --retry-schedule, --default-retry-schedule, --store-response/--no-store-response, --kind, --rate,"
    " --no-rate, --handshake/--no-handshake, --content-mode, --template, --default-template"
)


def fields(output: str) -> dict[str, str]:
    """Every ``name  value`` line of `show`-style output."""
    return dict(line.split(None, 1) for line in output.splitlines() if line.strip())


def add_full_hook(db: Target) -> dict[str, str]:
    """A webhook with something set for every option `update` can clear; `show`'s fields of it."""
    add_hook(db, "--type", "cos.job.*", "--filter", "tag=Transcode", "--rate", "10/s", "--retry-schedule", "5,30")
    return fields(ok(cli(db, "subscribers", "show", "hook")))


@pytest.mark.parametrize(
    ("args", "changed"),
    [
        (("--url", "https://8.8.4.4/moved"), {"url": "https://8.8.4.4/moved"}),
        (("--type", "cos.workflow.*", "--type", "cos.job.failed"), {"types": "cos.workflow.*,cos.job.failed"}),
        (
            ("--filter", "object_prefix=videos/", "--filter", "state=Failed"),
            {"filters": "object_prefix=videos/,state=Failed"},
        ),
        (("--no-filters",), {"filters": "-"}),
        (("--max-in-flight", "1"), {"max_in_flight": "1"}),
        (("--timeout", "2.5"), {"timeout": "2.5"}),
        (("--retry-schedule", "1m,1h"), {"retry_schedule": "60.0,3600.0"}),
        (("--default-retry-schedule",), {"retry_schedule": "-"}),
        (("--store-response",), {"store_response": "yes"}),
        (("--rate", "600/m"), {"rate": "600/m"}),
        (("--no-rate",), {"rate": "-"}),
        (("--handshake",), {"handshake": "yes", "handshake_verdict": "state=pending"}),
        (("--content-mode", "binary"), {"content_mode": "binary"}),
        (("--kind", "nats", "--url", "nats://8.8.4.4:4222"), {"kind": "nats", "url": "nats://8.8.4.4:4222"}),
    ],
)
def test_update_changes_only_the_options_given_and_prints_the_subscriber(
    db: Target, args: tuple[str, ...], changed: dict[str, str]
) -> None:
    before = add_full_hook(db)
    output = ok(cli(db, "subscribers", "update", "hook", *args))
    if "kind" in changed:
        # Another kind has another secret, the one add gives it (see the tests of a change of kind below).
        changed = {**changed, "secret": field(output, "secret")}
        assert changed["secret"] != before["secret"]
    assert fields(output) == {**before, **changed}
    assert fields(ok(cli(db, "subscribers", "show", "hook"))) == {**before, **changed}
    assert SHOWN_ONCE not in output


@pytest.mark.both_backends
def test_update_sets_and_clears_every_option_at_once_on_both_backends(db: Target) -> None:
    before = add_full_hook(db)
    changes = (
        *("--url", "https://8.8.4.4/moved", "--type", "cos.workflow.*", "--no-filters", "--max-in-flight", "2"),
        *("--timeout", "9", "--default-retry-schedule", "--store-response", "--no-rate", "--handshake"),
        *("--content-mode", "binary"),
    )
    updated = fields(ok(cli(db, "subscribers", "update", "hook", *changes)))
    assert updated == {
        **before,
        "url": "https://8.8.4.4/moved",
        "types": "cos.workflow.*",
        "filters": "-",
        "max_in_flight": "2",
        "timeout": "9.0",
        "retry_schedule": "-",
        "store_response": "yes",
        "rate": "-",
        "handshake": "yes",
        "handshake_verdict": "state=pending",
        "content_mode": "binary",
    }
    # And back: each flag's opposite, and the cleared options set again.
    again = ("--no-store-response", "--no-handshake", "--content-mode", "structured", "--rate", "10/s")
    back = fields(ok(cli(db, "subscribers", "update", "hook", *again, "--retry-schedule", "5,30")))
    assert back == {
        **updated,
        "store_response": "no",
        "handshake": "no",
        "handshake_verdict": "-",
        "content_mode": "structured",
        "rate": "10/s",
        "retry_schedule": "5.0,30.0",
    }
    assert fields(ok(cli(db, "subscribers", "show", "hook"))) == back


def test_update_sets_and_clears_a_robots_template_and_changes_its_kind(db: Target) -> None:
    ok(cli(db, "subscribers", "add", "chat", "--kind", "slack", "--url", "https://8.8.8.8/services/T0/B0/xyz"))
    before = fields(ok(cli(db, "subscribers", "show", "chat")))
    template = "{{ message.title }}"
    assert field(ok(cli(db, "subscribers", "update", "chat", "--template", template)), "template") == template
    assert field(ok(cli(db, "subscribers", "show", "chat")), "template") == template
    assert field(ok(cli(db, "subscribers", "update", "chat", "--default-template")), "template") == "-"
    # A robot of another platform at the same URL (shown masked its way) keeps the rest.
    moved = fields(ok(cli(db, "subscribers", "update", "chat", "--kind", "wecom")))
    assert moved.pop("kind") == "wecom"
    assert {**moved, "url": before["url"]} == {key: value for key, value in before.items() if key != "kind"}


def test_update_refuses_a_secret_naming_rotate_secret(db: Target) -> None:
    before = add_full_hook(db)
    result = cli(db, "subscribers", "update", "hook", "--secret", generate_secret())
    assert result.exit_code == 2
    assert result.output.splitlines() == ["Error: change a secret with `cos-relay subscribers rotate-secret hook`"]
    assert fields(ok(cli(db, "subscribers", "show", "hook"))) == before


def test_update_without_an_option_names_the_options_and_exits_2(db: Target) -> None:
    before = add_full_hook(db)
    result = cli(db, "subscribers", "update", "hook")
    assert result.exit_code == 2
    assert result.output.splitlines() == [NOTHING_TO_UPDATE]
    assert fields(ok(cli(db, "subscribers", "show", "hook"))) == before


@pytest.mark.parametrize(
    "args",
    [
        ("--filter", "tag=Transcode", "--no-filters"),
        ("--retry-schedule", "5", "--default-retry-schedule"),
        ("--rate", "1/s", "--no-rate"),
        ("--template", "hi", "--default-template"),
    ],
)
def test_update_refuses_an_option_and_its_clearing_flag_together(db: Target, args: tuple[str, ...]) -> None:
    before = add_full_hook(db)
    result = cli(db, "subscribers", "update", "hook", *args)
    assert result.exit_code == 2
    assert result.output.splitlines() == [f"Error: give {args[0]} or {args[-1]}, not both"]
    assert fields(ok(cli(db, "subscribers", "show", "hook"))) == before


@pytest.mark.parametrize(
    ("name", "args", "line"),
    [
        ("nope", ("--timeout", "3"), "Error: no subscriber is named 'nope' (known: hook)"),
        (
            "hook",
            ("--url", "http://10.0.0.1/"),
            "Error: the URL is not allowed: 10.0.0.1 is private; to allow it, add its network to RELAY_ALLOW_NETWORKS"
            " (--allow-networks)",
        ),
    ],
    ids=["unknown-name", "private-url"],
)
def test_update_of_an_unknown_name_or_to_a_refused_url_is_one_line_and_exit_1(
    db: Target, name: str, args: tuple[str, ...], line: str
) -> None:
    before = add_full_hook(db)
    result = cli(db, "subscribers", "update", name, *args)
    assert result.exit_code == 1
    assert result.output.splitlines() == [line]
    assert fields(ok(cli(db, "subscribers", "show", "hook"))) == before


@pytest.mark.parametrize(
    ("args", "code", "reason"),
    [
        (("--url", "ftp://8.8.8.8/hook"), 1, "Error: the URL is not allowed: scheme 'ftp' is not http or https"),
        (("--url", "http://127.0.0.1:9/hook"), 1, "127.0.0.1 is loopback"),
        (("--kind", "nats"), 1, "scheme 'https' is not nats or tls (a nats subscriber's url)"),
        (("--template", "hi"), 1, "Error: template is for robot subscribers (wecom, feishu, dingtalk, slack)"),
        (("--type", "cos.jbo.*"), 1, "Error: event type 'cos.jbo.*' matches no event type"),
        (("--filter", "colour=red"), 1, "Error: unknown filter key(s) ['colour']"),
        (("--rate", "fast"), 2, "Invalid value for '--rate': rate is a count per second or minute"),
        (("--retry-schedule", "5,soon"), 2, "retry delay 'soon' is not a number of seconds"),
        (("--max-in-flight", "0"), 2, "Invalid value for '--max-in-flight': must be an integer from 1 to 256"),
        (("--timeout", "600"), 2, "Invalid value for '--timeout': must be a number from 0.1 to 120"),
        (("--kind", "kafka"), 2, "Invalid value for '--kind': 'kafka' is not one of"),
    ],
)
def test_update_refuses_what_add_refuses_with_add_s_messages(
    db: Target, args: tuple[str, ...], code: int, reason: str
) -> None:
    before = add_full_hook(db)
    output = failed(cli(db, "subscribers", "update", "hook", *args), code)
    assert reason in output
    assert "Traceback" not in output
    assert fields(ok(cli(db, "subscribers", "show", "hook"))) == before


def test_update_of_a_config_file_subscriber_works_and_says_the_file_wins_at_the_next_start(db: Target) -> None:
    with store_for(db) as store:
        Subscribers(store, AddressPolicy(), utc_now).add("from-file", PUBLIC_URL, source="config")
    result = cli(db, "subscribers", "update", "from-file", "--timeout", "3")
    assert result.exit_code == 0, result.output
    assert field(result.stdout, "timeout") == "3.0"
    assert field(result.stdout, "source") == "config"
    assert result.stderr.splitlines() == [
        "note: from-file is defined in the config file; change it there too, or its next start undoes this"
    ]
    # One the CLI made gets no note.
    add_hook(db)
    assert cli(db, "subscribers", "update", "hook", "--timeout", "3").stderr == ""


@pytest.mark.both_backends
def test_update_is_what_the_api_s_patch_does_and_the_api_shows_it(db: Target, admin: httpx.Client) -> None:
    for name in ("by-cli", "by-api"):
        add_hook(db, "--type", "cos.job.*", "--rate", "10/s", "--retry-schedule", "5,30", name=name)
    ok(
        cli(
            db,
            "subscribers",
            "update",
            "by-cli",
            "--timeout",
            "4",
            "--filter",
            "tag=Transcode",
            "--no-rate",
            "--default-retry-schedule",
            "--store-response",
        )
    )
    patch = {
        "timeout": 4,
        "filters": {"tag": "Transcode"},
        "rate": None,
        "retry_schedule": None,
        "store_response": True,
    }
    assert admin.patch("/api/subscribers/by-api", json=patch).status_code == 200

    def compared(name: str) -> dict[str, object]:
        response = admin.get(f"/api/subscribers/{name}")
        assert response.status_code == 200, response.text
        shown: dict[str, object] = response.json()
        return {key: value for key, value in shown.items() if key not in ("name", "secret", "created_at")}

    by_cli = compared("by-cli")
    assert by_cli == compared("by-api")
    assert (by_cli["timeout"], by_cli["filters"], by_cli["rate"]) == (4.0, {"tag": "Transcode"}, None)
    assert (by_cli["retry_schedule"], by_cli["store_response"], by_cli["types"]) == (None, True, ["cos.job.*"])


# -- update: a change of kind and the secret ---------------------------------------------------------

LOOPBACK = {"RELAY_ALLOW_NETWORKS": "127.0.0.0/8"}


@pytest.fixture
def delivering(db: Target) -> Iterator[ThreadServer]:
    """A gateway on ``db`` that may send to loopback (the sink) and looks at the subscribers every 0.1 s."""
    settings = Settings(
        db_path=db,
        callback_token=CALLBACK_TOKEN,
        admin_token=ADMIN_TOKEN,
        allow_networks="127.0.0.0/8",
        poll_interval=0.1,
    )
    server = ThreadServer(create_app(settings, schema=callback_schema())).start()
    yield server
    server.stop()


def secret_lines(db: Target, name: str) -> list[str]:
    """What `subscribers secret NAME` prints: the secret, and the previous one while it signs too."""
    return ok(cli(db, "subscribers", "secret", name)).splitlines()


@pytest.mark.both_backends
def test_update_of_a_slack_robot_into_a_webhook_gives_it_a_secret_its_deliveries_verify_with(
    db: Target, sink: Sink, delivering: ThreadServer
) -> None:
    ok(cli(db, "subscribers", "add", "chat", "--kind", "slack", "--url", f"{sink.url}/ok", env=LOOPBACK))
    output = ok(cli(db, "subscribers", "update", "chat", "--kind", "webhook", env=LOOPBACK))
    [line] = secret_lines(db, "chat")
    secret = line.removeprefix("secret: ")
    assert secret.startswith("whsec_")
    # Shown masked, as show shows it; `subscribers secret` is where it is read.
    assert field(output, "secret") == mask_secret(secret) != "…"
    assert secret.removeprefix("whsec_")[4:] not in output
    assert field(output, "previous_secret_expires_at") == "-"
    ingest(db, TRANSCODE)
    [request] = sink.wait_for("/ok", 1)
    verify(request, secret)  # the official Standard Webhooks library


@pytest.mark.both_backends
def test_update_of_a_webhook_into_a_feishu_robot_keeps_neither_its_secret_nor_the_previous_one(
    db: Target, sink: Sink, delivering: ThreadServer
) -> None:
    first = field(ok(cli(db, "subscribers", "add", "hook", "--url", f"{sink.url}/ok", env=LOOPBACK)), "secret")
    second = ok(cli(db, "subscribers", "rotate-secret", "hook")).splitlines()[0].removeprefix("new secret: ")
    assert secret_lines(db, "hook")[1].startswith(f"previous_secret: {first} (signs too until ")
    output = ok(cli(db, "subscribers", "update", "hook", "--kind", "feishu", env=LOOPBACK))
    assert (field(output, "kind"), field(output, "secret")) == ("feishu", mask_secret(""))
    assert field(output, "previous_secret_expires_at") == "-"
    assert secret_lines(db, "hook") == ["secret: "]
    [row] = rows(db, "SELECT secret, previous_secret, previous_secret_expires_at FROM subscribers")
    assert row == {"secret": "", "previous_secret": None, "previous_secret_expires_at": None}
    # Its messages go out unsigned: neither whsec key signs them, the Feishu way or the Standard Webhooks way.
    ingest(db, TRANSCODE)
    [request] = sink.wait_for("/ok", 1)
    assert_unsigned_feishu_message(request, first, second)


@pytest.mark.both_backends
def test_update_that_keeps_the_kind_keeps_the_secret_and_the_previous_one(db: Target) -> None:
    add_hook(db)
    ok(cli(db, "subscribers", "rotate-secret", "hook"))
    before = secret_lines(db, "hook")
    assert len(before) == 2  # the secret, and the previous one in its grace period
    ok(cli(db, "subscribers", "update", "hook", "--timeout", "3"))
    # The kind given, but the one it has: no change of kind.
    ok(cli(db, "subscribers", "update", "hook", "--kind", "webhook", "--url", "https://8.8.4.4/moved"))
    assert secret_lines(db, "hook") == before


# -- the command line itself -------------------------------------------------------------------------


@pytest.mark.parametrize("group", ["subscribers", "deliveries"])
def test_every_command_and_option_is_documented(group: str) -> None:
    command_group = main.get_command(click.Context(main), group)
    assert isinstance(command_group, click.Group)
    for command in command_group.commands.values():
        assert command.help, command.name
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{group} {command.name} {param.opts}"
    assert ok(CliRunner().invoke(main, [group, "--help"]))


# -- next to a running server ------------------------------------------------------------------------


class Recorder:
    """A subscriber on loopback that answers 204 at any path and counts what it got, and where."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.paths: list[str] = []
        self._lock = threading.Lock()

        async def hook(request: Request) -> Response:
            body = await request.body()
            with self._lock:
                self.bodies.append(body)
                self.paths.append(request.url.path)
            return Response(status_code=204)

        self.server = ThreadServer(Starlette(routes=[Route("/{path}", hook, methods=["POST"])]))

    def count(self) -> int:
        with self._lock:
            return len(self.bodies)

    def where(self) -> list[str]:
        with self._lock:
            return list(self.paths)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    subscriber = Recorder()
    subscriber.server.start()
    yield subscriber
    subscriber.server.stop()


@pytest.mark.slow
def test_the_cli_manages_subscribers_while_the_server_runs_on_the_same_database(db: Target, recorder: Recorder) -> None:
    loopback = {"RELAY_ALLOW_NETWORKS": "127.0.0.0/8"}
    server = ProcessServer(
        db, args=("--callback-token", CALLBACK_TOKEN, "--admin-token", ADMIN_TOKEN), env=loopback
    ).start()
    try:
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        url = f"{recorder.server.url}/hook"

        def post(body: bytes) -> None:
            response = httpx.post(f"{server.url}/cos/callback?token={CALLBACK_TOKEN}", content=body, timeout=30)
            assert response.status_code == 200, response.text

        ok(cli(db, "subscribers", "add", "live", "--url", url, env=loopback))
        # The server sees the CLI's subscriber at once: its next callback fans out to it, and it is delivered.
        post(job_body(1))
        wait_until(lambda: recorder.count() == 1)
        wait_until(lambda: "delivered" in ok(cli(db, "deliveries", "list", "--subscriber", "live")))

        ok(cli(db, "subscribers", "pause", "live"))
        state = httpx.get(f"{server.url}/api/subscribers/live", headers=admin, timeout=30).json()["state"]
        assert state == "paused"
        # Paused: the next event is held, not sent.
        post(job_body(2))
        held = addresses(ok(cli(db, "deliveries", "list", "--state", "pending")))
        assert len(held) == 1
        # Resumed from the CLI: the running server notices within its poll interval and delivers it.
        ok(cli(db, "subscribers", "resume", "live"))
        wait_until(lambda: recorder.count() == 2)
        wait_until(lambda: field(ok(cli(db, "deliveries", "show", *held[0])), "state") == "delivered")
        # And a change made through the server's API shows in the CLI.
        patched = httpx.patch(
            f"{server.url}/api/subscribers/live", json={"types": ["cos.workflow.*"]}, headers=admin, timeout=30
        )
        assert patched.status_code == 200, patched.text
        assert field(ok(cli(db, "subscribers", "show", "live")), "types") == "cos.workflow.*"
    finally:
        server.stop()


@pytest.mark.slow
def test_a_running_server_delivers_as_the_cli_updated_the_subscriber(db: Target, recorder: Recorder) -> None:
    loopback = {"RELAY_ALLOW_NETWORKS": "127.0.0.0/8"}
    server = ProcessServer(
        db, args=("--callback-token", CALLBACK_TOKEN, "--admin-token", ADMIN_TOKEN), env=loopback
    ).start()
    try:

        def post(body: bytes) -> None:
            response = httpx.post(f"{server.url}/cos/callback?token={CALLBACK_TOKEN}", content=body, timeout=30)
            assert response.status_code == 200, response.text

        base = recorder.server.url
        ok(cli(db, "subscribers", "add", "live", "--url", f"{base}/old", "--type", "cos.workflow.*", env=loopback))
        post(job_body(1))  # a job's event: not of its types, owed nothing
        moved = ok(
            cli(db, "subscribers", "update", "live", "--url", f"{base}/new", "--type", "cos.job.*", env=loopback)
        )
        assert field(moved, "url") == f"{base}/new"
        # The server's API shows the change at once, and its worker sends the next job's event where it says.
        shown = httpx.get(
            f"{server.url}/api/subscribers/live", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30
        ).json()
        assert (shown["url"], shown["types"]) == (f"{base}/new", ["cos.job.*"])
        post(job_body(2))
        wait_until(lambda: recorder.count() == 1)
        wait_until(lambda: "delivered" in ok(cli(db, "deliveries", "list", "--subscriber", "live")))
        assert recorder.where() == ["/new"]
        assert job_id(2).encode() in recorder.bodies[0]
    finally:
        server.stop()
