"""A NUL character in a path or query names nothing: 404 or 400 on both backends, never PostgreSQL's error."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import callback_url

#: PostgreSQL would fail on a NUL in text: both backends, refusals only (nothing written), one gateway each.
pytestmark = pytest.mark.both_backends

PATHS = [
    "/api/jobs/j%00",
    "/api/workflows/i%00",
    "/api/subscribers/hook%00",
    "/api/subscribers/hook%00/secret",
    "/console/jobs/j%00",
]
QUERIES = [
    "/api/jobs?tag=Transcode%00",
    "/api/jobs?job_id=j%00",
    "/api/deliveries?subscriber=hook%00",
    "/api/deliveries?event_id=e%00",
    "/api/callbacks?cursor=1%00",
]


@pytest.mark.parametrize("path", PATHS)
def test_a_nul_in_a_path_is_not_found(path: str, module_admin: httpx.Client) -> None:
    response = module_admin.get(path)
    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "detail": "no name or id holds a NUL character"}


@pytest.mark.parametrize("path", QUERIES)
def test_a_nul_in_a_query_value_is_a_bad_parameter(path: str, module_admin: httpx.Client) -> None:
    response = module_admin.get(path)
    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"


def test_a_nul_in_a_subscriber_name_to_act_on_is_not_found(module_admin: httpx.Client) -> None:
    assert module_admin.post("/api/subscribers/hook%00/pause").status_code == 404
    assert module_admin.delete("/api/subscribers/hook%00").status_code == 404


def test_a_nul_in_the_callback_token_is_refused_before_any_lookup(module_client: httpx.Client) -> None:
    response = module_client.post(callback_url("t%00"), content=b"<Response/>")
    assert response.status_code == 400
