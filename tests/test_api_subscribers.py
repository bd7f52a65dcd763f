"""The admin API for subscribers and deliveries, over real HTTP against uvicorn on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from relay.api.outbox import MAX_BODY
from relay.deliver.signing import generate_secret
from relay.domain.clock import utc_now
from relay.domain.subscribers import mask_secret
from relay.settings.table import Settings
from relay.store.records import Target
from tests.conftest import ADMIN_TOKEN, TRANSCODE, ingest, job_body
from tests.databases import rows
from tests.live import ThreadServer, free_port, wait_until
from tests.sink import Sink, assert_unsigned_feishu_message, verify

#: Every admin route of the outbox API, with a path that names something.
ROUTES = [
    ("GET", "/api/subscribers"),
    ("POST", "/api/subscribers"),
    ("GET", "/api/subscribers/hook"),
    ("PATCH", "/api/subscribers/hook"),
    ("DELETE", "/api/subscribers/hook"),
    ("POST", "/api/subscribers/hook/pause"),
    ("POST", "/api/subscribers/hook/resume"),
    ("POST", "/api/subscribers/hook/rotate-secret"),
    ("POST", "/api/subscribers/hook/recover?since=2h"),
    ("GET", "/api/deliveries"),
    ("GET", "/api/deliveries/1"),
    ("POST", "/api/deliveries/1/retry"),
]


# -- a gateway whose subscribers may live on loopback ------------------------------------------------


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared gateway with subscribers on loopback and a quick poll."""
    return settings.replace(allow_networks="127.0.0.0/8", poll_interval=0.1)


@pytest.fixture
def api(admin: httpx.Client) -> httpx.Client:
    """The admin client on the shared gateway."""
    return admin


@pytest.fixture(scope="module")
def module_settings(module_settings: Settings) -> Settings:
    """As `settings`: a loopback URL is refused for its other faults."""
    return module_settings.replace(allow_networks="127.0.0.0/8")


@pytest.fixture
def refusing_api(module_admin: httpx.Client) -> httpx.Client:
    """The admin client of the module's gateway for refusals (they change nothing), with its one subscriber,
    ``hook``, for the routes that name one."""
    if not module_admin.get("/api/subscribers").json()["items"]:
        create(module_admin, url="https://8.8.8.8/hook")
    return module_admin


def unchanged(api: httpx.Client) -> None:
    """The module gateway's one subscriber is as `refusing_api` made it."""
    [hook] = api.get("/api/subscribers").json()["items"]
    assert (hook["name"], hook["url"], hook["state"]) == ("hook", "https://8.8.8.8/hook", "enabled")


class Endpoint:
    """A subscriber on loopback answering every POST with a fixed status."""

    def __init__(self, status: int) -> None:
        async def hook(request: Request) -> Response:
            await request.body()
            return Response(status_code=status)

        self.server = ThreadServer(Starlette(routes=[Route("/hook", hook, methods=["POST"])]))

    @property
    def url(self) -> str:
        return f"{self.server.url}/hook"


@pytest.fixture
def gone() -> Iterator[Endpoint]:
    endpoint = Endpoint(410)
    endpoint.server.start()
    yield endpoint
    endpoint.server.stop()


def nowhere() -> str:
    """A loopback URL nothing listens on: every attempt is refused at once."""
    return f"http://127.0.0.1:{free_port()}/hook"


def create(api: httpx.Client, name: str = "hook", url: str | None = None, **fields: Any) -> dict[str, Any]:
    response = api.post("/api/subscribers", json={"name": name, "url": url or nowhere(), **fields})
    assert response.status_code == 201, response.text
    return dict(response.json())


def deliveries(api: httpx.Client, **query: str) -> list[dict[str, Any]]:
    response = api.get("/api/deliveries", params=query)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def masked(secret: str) -> str:
    return f"{secret[:10]}…"


def refused(response: httpx.Response, status: int, detail: str) -> None:
    assert response.status_code == status, response.text
    assert detail in response.json()["detail"]


# -- create and read ---------------------------------------------------------------------------------


def test_create_returns_201_with_the_full_secret_and_reads_only_mask_it(api: httpx.Client) -> None:
    url = nowhere()
    created = create(api, url=url)
    secret = created["secret"]
    assert secret.startswith("whsec_")
    assert len(secret) > 40
    assert created["name"] == "hook"
    assert created["url"] == url
    assert created["state"] == "enabled"
    assert created["types"] == ["*"]
    assert created["filters"] == {}
    assert created["source"] == "api"

    listed = api.get("/api/subscribers").json()["items"]
    one = api.get("/api/subscribers/hook").json()
    assert listed == [one]
    assert one["secret"] == masked(secret)
    assert {key: value for key, value in one.items() if key != "secret"} == {
        key: value for key, value in created.items() if key != "secret"
    }


def test_create_keeps_every_setting_given(api: httpx.Client) -> None:
    secret = generate_secret()
    created = create(
        api,
        secret=secret,
        types=["cos.job.*", "cos.workflow.failed"],
        filters={"tag": "Transcode", "bucket": "examplebucket-1250000000"},
        max_in_flight=1,
        timeout=2.5,
        retry_schedule=[1, 10, 100],
    )
    assert created["secret"] == secret
    one = api.get("/api/subscribers/hook").json()
    assert one["types"] == ["cos.job.*", "cos.workflow.failed"]
    assert one["filters"] == {"tag": "Transcode", "bucket": "examplebucket-1250000000"}
    assert one["max_in_flight"] == 1
    assert one["timeout"] == 2.5
    assert one["retry_schedule"] == [1.0, 10.0, 100.0]


def test_filters_may_also_be_key_value_strings(api: httpx.Client) -> None:
    created = create(api, filters=["tag=Snapshot", "object_prefix=uploads/"])
    assert created["filters"] == {"tag": "Snapshot", "object_prefix": "uploads/"}


def test_a_taken_name_is_409(api: httpx.Client) -> None:
    create(api)
    response = api.post("/api/subscribers", json={"name": "hook", "url": nowhere()})
    refused(response, 409, "a subscriber named 'hook' already exists")
    assert response.json()["error"] == "conflict"
    assert len(api.get("/api/subscribers").json()["items"]) == 1


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"not json", "the request body must be a JSON object"),
        (b"[1, 2]", "the request body must be a JSON object"),
        (b"{}", "name and url are required strings"),
        (b'{"name": "hook"}', "name and url are required strings"),
        (b'{"name": 7, "url": "http://127.0.0.1:9/"}', "name and url are required strings"),
        (b'{"name": "hook", "url": "http://127.0.0.1:9/", "state": "paused"}', "unknown field(s): state"),
        (
            b'{"name": "hook", "url": "http://127.0.0.1:9/", "id": 1, "source": "config"}',
            "unknown field(s): id, source",
        ),
        (b'{"name": "Hook!", "url": "http://127.0.0.1:9/"}', "a subscriber name is 1-63 characters"),
        (b'{"name": "hook", "url": "http://127.0.0.1:9/", "filters": {"colour": "red"}}', "unknown filter key(s)"),
        (b'{"name": "hook", "url": "http://127.0.0.1:9/", "filters": ["tag"]}', "filter 'tag' is not KEY=VALUE"),
        (b'{"name": "hook", "url": "http://127.0.0.1:9/", "max_in_flight": 0}', "max_in_flight must be from 1"),
        (b'{"name": "hook", "url": "http://127.0.0.1:9/", "timeout": 0}', "timeout must be from 0.1 to 120"),
        (b'{"name": "hook", "url": "http://127.0.0.1:9/", "retry_schedule": [-1]}', "a retry schedule is"),
        (b'{"name": "hook", "url": "http://127.0.0.1:9/", "secret": "short"}', "webhook secret"),
        (b'{"name": "hook", "url": "ftp://127.0.0.1/"}', "scheme 'ftp' is not http or https"),
    ],
)
def test_bad_bodies_are_400_and_create_nothing(refusing_api: httpx.Client, body: bytes, detail: str) -> None:
    response = refusing_api.post("/api/subscribers", content=body, headers={"Content-Type": "application/json"})
    refused(response, 400, detail)
    assert response.json()["error"] == "bad_request"
    unchanged(refusing_api)


def test_a_body_over_the_limit_is_413_and_creates_nothing(refusing_api: httpx.Client) -> None:
    padding = "x" * MAX_BODY
    response = refusing_api.post("/api/subscribers", json={"name": "hook", "url": "http://127.0.0.1:9/", "p": padding})
    refused(response, 413, f"over the {MAX_BODY} byte limit")
    assert response.json()["error"] == "too_large"
    unchanged(refusing_api)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://10.0.0.1/", "10.0.0.1 is private"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is link-local"),
        ("http://[::1]:8080/", "::1 is loopback"),
        ("http://192.168.1.20/hook", "192.168.1.20 is private"),
    ],
)
def test_private_urls_outside_the_allow_list_are_400(api: httpx.Client, url: str, reason: str) -> None:
    refused(api.post("/api/subscribers", json={"name": "hook", "url": url}), 400, reason)
    create(api)
    refused(api.patch("/api/subscribers/hook", json={"url": url}), 400, reason)
    assert api.get("/api/subscribers/hook").json()["url"] != url


@pytest.mark.parametrize(
    ("method", "path"),
    [(method, path) for method, path in ROUTES if "/subscribers/hook" in path],
)
def test_unknown_subscriber_names_are_404(refusing_api: httpx.Client, method: str, path: str) -> None:
    response = refusing_api.request(method, path.replace("/hook", "/nobody"), json={})
    refused(response, 404, "no subscriber is named 'nobody'")
    assert response.json()["error"] == "not_found"
    unchanged(refusing_api)


# -- change ------------------------------------------------------------------------------------------


def test_patch_changes_url_types_and_filters_and_keeps_the_rest(api: httpx.Client) -> None:
    secret = create(api, types=["cos.job.*"], max_in_flight=3)["secret"]
    url = nowhere()
    response = api.patch(
        "/api/subscribers/hook", json={"url": url, "types": ["cos.workflow.*"], "filters": {"bucket": "b-1"}}
    )
    assert response.status_code == 200, response.text
    changed = response.json()
    assert changed["url"] == url
    assert changed["types"] == ["cos.workflow.*"]
    assert changed["filters"] == {"bucket": "b-1"}
    assert changed["max_in_flight"] == 3
    assert changed["secret"] == masked(secret)
    assert api.get("/api/subscribers/hook").json() == changed

    # Only filters: the types stay.
    only_filters = api.patch("/api/subscribers/hook", json={"filters": {"tag": "Transcode"}}).json()
    assert only_filters["types"] == ["cos.workflow.*"]
    assert only_filters["filters"] == {"tag": "Transcode"}
    limits = api.patch("/api/subscribers/hook", json={"timeout": 30, "retry_schedule": [2, 4]}).json()
    assert limits["timeout"] == 30.0
    assert limits["retry_schedule"] == [2.0, 4.0]


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"name": "other"}, "unknown field(s): name"),
        ({"secret": generate_secret()}, "rotate-secret"),
        ({"state": "paused"}, "unknown field(s): state"),
        ({"filters": {"colour": "red"}}, "unknown filter key(s)"),
        ({"max_in_flight": 1000}, "max_in_flight must be from 1 to 256"),
        ({"url": "gopher://127.0.0.1/"}, "scheme 'gopher' is not http or https"),
    ],
)
def test_patch_refuses_unknown_fields_and_bad_values(api: httpx.Client, body: dict[str, Any], detail: str) -> None:
    before = create(api, filters={"tag": "Transcode"})
    refused(api.patch("/api/subscribers/hook", json=body), 400, detail)
    after = api.get("/api/subscribers/hook").json()
    assert {key: value for key, value in after.items() if key != "secret"} == {
        key: value for key, value in before.items() if key != "secret"
    }


def test_pause_and_resume_set_the_state_field(api: httpx.Client) -> None:
    create(api)
    paused = api.post("/api/subscribers/hook/pause")
    assert paused.status_code == 200, paused.text
    assert paused.json()["state"] == "paused"
    assert api.get("/api/subscribers/hook").json()["state"] == "paused"
    resumed = api.post("/api/subscribers/hook/resume")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["state"] == "enabled"
    assert api.get("/api/subscribers").json()["items"][0]["state"] == "enabled"


def test_a_subscriber_the_gateway_disabled_shows_disabled_until_resumed(
    api: httpx.Client, gone: Endpoint, settings: Settings
) -> None:
    create(api, url=gone.url)
    ingest(settings.db_path, TRANSCODE)
    wait_until(lambda: api.get("/api/subscribers/hook").json()["state"] == "disabled")
    disabled = api.get("/api/subscribers/hook").json()
    assert "410" in disabled["disabled_reason"]
    # Held, not dropped.
    assert [delivery["state"] for delivery in deliveries(api, subscriber="hook")] == ["pending"]
    resumed = api.post("/api/subscribers/hook/resume").json()
    assert resumed["state"] == "enabled"
    assert resumed["disabled_reason"] is None


def test_delete_removes_the_subscriber_and_reports_cancelled_deliveries(api: httpx.Client, settings: Settings) -> None:
    create(api)
    create(api, "other")
    for name in ("hook", "other"):
        api.post(f"/api/subscribers/{name}/pause")  # keeps their deliveries pending
    ingest(settings.db_path, job_body(1), job_body(2))
    response = api.delete("/api/subscribers/hook")
    assert response.status_code == 200, response.text
    assert response.json() == {"removed": "hook", "cancelled_deliveries": 2}
    assert api.get("/api/subscribers/hook").status_code == 404
    assert [subscriber["name"] for subscriber in api.get("/api/subscribers").json()["items"]] == ["other"]
    assert [delivery["state"] for delivery in deliveries(api, state="cancelled")] == ["cancelled", "cancelled"]
    assert len(deliveries(api, subscriber="other", state="pending")) == 2
    # The name may be used again, and the new subscriber inherits nothing.
    create(api)
    assert deliveries(api, subscriber="hook") == []


# -- secrets -----------------------------------------------------------------------------------------


def test_rotate_secret_returns_the_new_secret_once_with_the_grace_deadline(api: httpx.Client) -> None:
    old = create(api)["secret"]
    response = api.post("/api/subscribers/hook/rotate-secret")
    assert response.status_code == 200, response.text
    rotated = response.json()
    new = rotated["secret"]
    assert new.startswith("whsec_")
    assert new != old
    assert rotated["previous_secret_expires_at"] is not None
    one = api.get("/api/subscribers/hook").json()
    assert one["secret"] == masked(new)
    assert one["previous_secret_expires_at"] == rotated["previous_secret_expires_at"]

    chosen = generate_secret()
    assert api.post("/api/subscribers/hook/rotate-secret", json={"secret": chosen}).json()["secret"] == chosen
    refused(api.post("/api/subscribers/hook/rotate-secret", json={"secret": "%%%"}), 400, "not valid base64")


def test_secrets_appear_only_in_the_creation_and_rotation_responses(api: httpx.Client, settings: Settings) -> None:
    created = api.post("/api/subscribers", json={"name": "hook", "url": nowhere(), "retry_schedule": [0]})
    first = created.json()["secret"]
    api.post("/api/subscribers/hook/pause")
    ingest(settings.db_path, TRANSCODE)
    delivery_id = deliveries(api)[0]["id"]
    rotated = api.post("/api/subscribers/hook/rotate-secret")
    second = rotated.json()["secret"]
    assert first in created.text
    assert second in rotated.text
    assert first not in rotated.text

    others = [
        api.get("/api/subscribers"),
        api.get("/api/subscribers/hook"),
        api.patch("/api/subscribers/hook", json={"types": ["cos.job.*"]}),
        api.post("/api/subscribers/hook/resume"),
        api.post("/api/subscribers/hook/pause"),
        api.post("/api/subscribers/hook/recover", params={"since": "2h"}),
        api.get("/api/deliveries"),
        api.get(f"/api/deliveries/{delivery_id}"),
        api.post(f"/api/deliveries/{delivery_id}/retry"),
        api.post("/api/subscribers", json={"name": "hook", "url": nowhere(), "secret": first}),  # 409
        api.delete("/api/subscribers/hook"),
        api.get("/api/subscribers/hook"),
    ]
    for response in others:
        assert response.status_code < 500, response.text
        for secret in (first, second):
            body = secret.removeprefix("whsec_")
            # Not the secret, nor any part of it longer than the 4 characters the mask shows.
            assert body[4:20] not in response.text, response.request.url
            assert body[:4] + body[4:8] not in response.text, response.request.url


# -- a change of kind: the secret the new kind gets ---------------------------------------------------


def secrets_of(api: httpx.Client, name: str = "hook") -> dict[str, Any]:
    response = api.get(f"/api/subscribers/{name}/secret")
    assert response.status_code == 200, response.text
    return dict(response.json())


def patched(api: httpx.Client, body: dict[str, Any], name: str = "hook") -> dict[str, Any]:
    response = api.patch(f"/api/subscribers/{name}", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


#: A Feishu robot's signing secret as its settings page shows one.
FEISHU_SECRET = "SEC" + "f" * 32


@pytest.mark.both_backends
def test_a_slack_robot_patched_into_a_webhook_gets_a_secret_its_deliveries_verify_with(
    api: httpx.Client, sink: Sink, settings: Settings
) -> None:
    assert create(api, url=f"{sink.url}/ok", kind="slack")["secret"] == ""
    changed = patched(api, {"kind": "webhook"})
    shown = secrets_of(api)
    secret = shown["secret"]
    assert secret.startswith("whsec_")
    assert shown["previous_secret"] is None
    # The answer masks it as every read does; the secret endpoint is where it is read.
    assert changed["secret"] == mask_secret(secret) != "…"
    assert secret.removeprefix("whsec_")[4:] not in json.dumps(changed)
    assert changed["previous_secret_expires_at"] is None
    ingest(settings.db_path, TRANSCODE)
    [request] = sink.wait_for("/ok", 1)
    verify(request, secret)  # the official Standard Webhooks library


@pytest.mark.both_backends
def test_a_webhook_patched_into_a_feishu_robot_keeps_neither_its_secret_nor_the_previous_one(
    api: httpx.Client, sink: Sink, settings: Settings
) -> None:
    first = create(api, url=f"{sink.url}/ok")["secret"]
    second = api.post("/api/subscribers/hook/rotate-secret").json()["secret"]
    assert secrets_of(api)["previous_secret"] == first  # in its grace period
    changed = patched(api, {"kind": "feishu"})
    assert (changed["secret"], changed["previous_secret_expires_at"]) == (mask_secret(""), None)
    assert secrets_of(api) == {
        "name": "hook",
        "secret": "",
        "previous_secret": None,
        "previous_secret_expires_at": None,
    }
    [row] = rows(settings.db_path, "SELECT secret, previous_secret, previous_secret_expires_at FROM subscribers")
    assert row == {"secret": "", "previous_secret": None, "previous_secret_expires_at": None}
    # Its messages go out unsigned: neither whsec key signs them, the Feishu way or the Standard Webhooks way.
    ingest(settings.db_path, TRANSCODE)
    [request] = sink.wait_for("/ok", 1)
    assert_unsigned_feishu_message(request, first, second)


@pytest.mark.both_backends
def test_a_patch_that_keeps_the_kind_keeps_the_secret_and_the_previous_one(api: httpx.Client) -> None:
    create(api)
    api.post("/api/subscribers/hook/rotate-secret").raise_for_status()
    before = secrets_of(api)
    assert before["previous_secret"] is not None
    patched(api, {"timeout": 5})
    # The kind given, but the one it has: no change of kind.
    patched(api, {"kind": "webhook", "url": nowhere()})
    assert secrets_of(api) == before
    # A Feishu robot's own signing secret stays too.
    create(api, "chat", url=nowhere(), kind="feishu", secret=FEISHU_SECRET)
    patched(api, {"kind": "feishu", "template": "{{ message.title }}"}, name="chat")
    assert secrets_of(api, "chat")["secret"] == FEISHU_SECRET


# -- recover and deliveries --------------------------------------------------------------------------


def dead_deliveries(api: httpx.Client, db: Target, count: int, name: str = "hook") -> list[dict[str, Any]]:
    """``count`` deliveries to ``name`` that failed for good (refused twice; the schedule allows one retry)."""
    ingest(db, *(job_body(number) for number in range(count)))
    wait_until(lambda: len(deliveries(api, subscriber=name, state="dead")) == count)
    return deliveries(api, subscriber=name, state="dead")


def test_recover_requeues_dead_deliveries_since_a_duration(api: httpx.Client, settings: Settings) -> None:
    create(api, retry_schedule=[0])
    dead = dead_deliveries(api, settings.db_path, 3)
    api.post("/api/subscribers/hook/pause")  # so the requeued deliveries stay put to be looked at
    response = api.post("/api/subscribers/hook/recover", params={"since": "2h"})
    assert response.status_code == 200, response.text
    assert response.json()["requeued"] == 3
    assert datetime.fromisoformat(response.json()["since"]) < utc_now()
    pending = deliveries(api, subscriber="hook", state="pending")
    assert sorted(delivery["id"] for delivery in pending) == sorted(delivery["id"] for delivery in dead)
    assert {delivery["last_outcome"] for delivery in pending} == {"manual"}
    # Nothing is left to recover.
    assert api.post("/api/subscribers/hook/recover", params={"since": "2h"}).json()["requeued"] == 0


def test_recover_leaves_deliveries_before_since_alone(api: httpx.Client, settings: Settings) -> None:
    create(api, retry_schedule=[0])
    dead_deliveries(api, settings.db_path, 1)
    response = api.post("/api/subscribers/hook/recover", params={"since": "2999-01-01T00:00:00Z"})
    assert response.json()["requeued"] == 0
    assert len(deliveries(api, state="dead")) == 1


@pytest.mark.parametrize(
    ("query", "detail"),
    [("", "since is required"), ("?since=yesterday", "since must look like 2h"), ("?since=2w", "since must look like")],
)
def test_recover_needs_a_readable_since(api: httpx.Client, query: str, detail: str) -> None:
    create(api)
    refused(api.post(f"/api/subscribers/hook/recover{query}"), 400, detail)


def test_deliveries_list_filters_by_subscriber_state_and_event_id(api: httpx.Client, settings: Settings) -> None:
    create(api, "jobs", types=["cos.job.*"])
    create(api, "workflows", types=["cos.workflow.*"])
    for name in ("jobs", "workflows"):
        api.post(f"/api/subscribers/{name}/pause")
    ingest(settings.db_path, job_body(1), job_body(2))
    everything = deliveries(api)
    # Pending in the event log: no row (id null), known by subscriber and event; newest first.
    assert [(delivery["id"], delivery["subject"]) for delivery in everything] == [
        (None, f"j{2:032x}"),
        (None, f"j{1:032x}"),
    ]
    assert {delivery["subscriber"] for delivery in everything} == {"jobs"}
    assert len(everything) == 2
    assert deliveries(api, subscriber="workflows") == []
    # An unknown subscriber is a 404, not an empty list (issue 15).
    assert api.get("/api/deliveries", params={"subscriber": "nobody"}).status_code == 404
    assert len(deliveries(api, subscriber="jobs", state="pending")) == 2
    assert deliveries(api, state="delivered") == []
    first = everything[-1]
    assert first["event_type"] == "cos.job.succeeded"
    assert first["subject"] == f"j{1:032x}"
    assert deliveries(api, event_id=first["event_id"]) == [first]

    page = api.get("/api/deliveries", params={"limit": 1}).json()
    assert page["items"] == [everything[0]]
    rest = api.get("/api/deliveries", params={"limit": 1, "cursor": page["next_cursor"]}).json()
    assert rest["items"] == [first]
    refused(api.get("/api/deliveries", params={"limit": 0}), 400, "limit must be an integer")
    refused(api.get("/api/deliveries", params={"cursor": "abc"}), 400, "cursor must be")


def test_a_delivery_shows_its_attempts_log(api: httpx.Client, settings: Settings) -> None:
    create(api, retry_schedule=[0])
    [dead] = dead_deliveries(api, settings.db_path, 1)
    response = api.get(f"/api/deliveries/{dead['id']}")
    assert response.status_code == 200, response.text
    delivery = response.json()
    assert delivery["state"] == "dead"
    assert delivery["subscriber"] == "hook"
    assert delivery["attempts"] == 2
    assert [attempt["trigger"] for attempt in delivery["attempts_log"]] == ["first", "retry"]
    assert {attempt["outcome"] for attempt in delivery["attempts_log"]} == {"connection_error"}


def test_unknown_or_malformed_delivery_ids(api: httpx.Client) -> None:
    refused(api.get("/api/deliveries/999"), 404, "no such delivery")
    refused(api.post("/api/deliveries/999/retry"), 404, "no delivery has id 999")
    refused(api.get("/api/deliveries/abc"), 400, "a delivery id is a number")
    refused(api.post("/api/deliveries/-1/retry"), 400, "a delivery id is a number")


def test_retry_queues_a_dead_delivery_again(api: httpx.Client, settings: Settings) -> None:
    create(api, retry_schedule=[0])
    [dead] = dead_deliveries(api, settings.db_path, 1)
    api.post("/api/subscribers/hook/pause")
    response = api.post(f"/api/deliveries/{dead['id']}/retry")
    assert response.status_code == 200, response.text
    retried = response.json()
    assert retried["id"] == dead["id"]
    assert retried["state"] == "pending"
    assert retried["failures"] == 0
    assert retried["last_outcome"] == "manual"
    # Resumed, it is attempted again: a third attempt, triggered by hand.
    api.post("/api/subscribers/hook/resume")
    wait_until(lambda: len(api.get(f"/api/deliveries/{dead['id']}").json()["attempts_log"]) >= 3)
    assert api.get(f"/api/deliveries/{dead['id']}").json()["attempts_log"][2]["trigger"] == "manual"


def test_retry_refuses_a_cancelled_delivery(api: httpx.Client, settings: Settings) -> None:
    create(api)
    api.post("/api/subscribers/hook/pause")
    ingest(settings.db_path, TRANSCODE)
    [owed] = deliveries(api)
    # Pending in the event log (no row): queued again by hand, it gets its row (id) first.
    delivery = api.post(f"/api/subscribers/hook/deliveries/{owed['event_id']}/retry").json()
    api.delete("/api/subscribers/hook")
    refused(
        api.post(f"/api/deliveries/{delivery['id']}/retry"),
        400,
        "is in flight, cancelled, or held for COS to confirm its job",
    )


# -- authentication ----------------------------------------------------------------------------------


#: Authorization headers that must not get in: none, wrong, empty, the right token under the wrong scheme...
NOT_THE_ADMIN = {
    "missing": None,
    "wrong": "Bearer wrong-token",
    "empty-header": "",
    "empty-token": "Bearer",
    "basic": f"Basic {ADMIN_TOKEN}",
    "no-scheme": ADMIN_TOKEN,
    "longer": f"Bearer {ADMIN_TOKEN}x",
    "shorter": f"Bearer {ADMIN_TOKEN[:-1]}",
}


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_admin_route_refuses_requests_without_the_admin_token(
    module_client: httpx.Client, refusing_api: httpx.Client, method: str, path: str
) -> None:
    for case, authorization in NOT_THE_ADMIN.items():
        headers = {} if authorization is None else {"Authorization": authorization}
        response = module_client.request(method, path, headers=headers, json={"name": "x", "url": nowhere()})
        assert response.status_code == 401, (case, response.text)
        assert response.json()["error"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"
    unchanged(refusing_api)
