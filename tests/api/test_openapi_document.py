"""The OpenAPI document: valid OpenAPI 3.1, served without a token, and the app's routes exactly."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import httpx
from openapi_spec_validator import validate
from starlette.routing import BaseRoute, Mount, Route

from relay.api.openapi import document
from relay.app.factory import create_app
from relay.domain.callback import JOB_STATES
from relay.domain.delivery import DELIVERY_STATES
from relay.settings.table import Settings
from tests.conftest import callback_schema

_HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def _operations(routes: Iterable[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(method, path) of every endpoint, walking into mounts; HEAD is Starlette's own answer to a GET."""
    for route in routes:
        if isinstance(route, Mount):
            yield from _operations(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            for method in route.methods or ():
                if method != "HEAD":
                    yield method.lower(), prefix + route.path
        else:
            raise AssertionError(f"a route of a kind the document cannot describe: {route!r}")


def test_the_document_is_valid_openapi_3_1() -> None:
    written = document()
    validate(written)
    assert written["openapi"].startswith("3.1")


def test_every_route_of_the_app_is_documented_and_nothing_else(settings: Settings) -> None:
    # The console is HTML for people (docs/console.md), not part of the JSON API the document describes.
    served = {
        (method, path)
        for method, path in _operations(create_app(settings, schema=callback_schema()).routes)
        if not path.startswith("/console")
    }
    written = {
        (method, path)
        for path, operations in document()["paths"].items()
        for method in operations
        if method in _HTTP_METHODS
    }
    assert served - written == set(), "routes missing from the OpenAPI document"
    assert written - served == set(), "documented operations the app does not have"


def test_every_admin_route_needs_the_bearer_token_and_the_probes_none() -> None:
    written = document()
    assert written["security"] == [{"adminToken": []}]
    assert written["components"]["securitySchemes"]["adminToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": written["components"]["securitySchemes"]["adminToken"]["description"],
    }
    for path, operations in written["paths"].items():
        for method, operation in operations.items():
            if path.startswith("/api/"):
                assert "security" not in operation, f"{method} {path} must keep the admin token"
                assert "401" in operation["responses"], f"{method} {path} can answer 401"
    for path in ("/healthz", "/readyz", "/openapi.json"):
        assert written["paths"][path]["get"]["security"] == []


def test_state_parameters_list_the_states_the_code_accepts() -> None:
    parameters = document()["components"]["parameters"]
    assert parameters["jobState"]["schema"]["enum"] == list(JOB_STATES)
    assert parameters["deliveryState"]["schema"]["enum"] == list(DELIVERY_STATES)


def test_the_document_is_served_without_a_token(client: httpx.Client) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == document()
