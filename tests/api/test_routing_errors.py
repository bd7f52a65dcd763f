"""A path or method no route takes is refused with the same JSON error shape as every other refusal."""

from __future__ import annotations

import httpx


def test_an_unknown_path_is_a_json_404(client: httpx.Client) -> None:
    response = client.get("/nowhere")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": "not_found", "detail": "no route has this path (GET /openapi.json lists them)"}


def test_a_name_with_a_line_break_is_a_json_404(admin: httpx.Client) -> None:
    # "/api/a\nb" matches no mount (their patterns stop at a line break): once a plain-text 404.
    response = admin.post("/api/subscribers/a%0Ab/resume")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_a_method_no_route_takes_is_a_json_405_saying_which_are_allowed(client: httpx.Client) -> None:
    response = client.put("/openapi.json")
    assert response.status_code == 405
    assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD"}
    assert response.json()["error"] == "method_not_allowed"
