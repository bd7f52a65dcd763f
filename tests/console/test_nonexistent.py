"""Job ids COS reported as NonExistJobIds are shown (issue 25, item 2): listed by the API with the callback that
named them, by ``cos-relay jobs nonexistent``, on the console's callbacks page, and a search for one says why no
job has it."""

from __future__ import annotations

from pathlib import Path

import httpx
from click.testing import CliRunner

from relay.cli import main
from tests.conftest import ADMIN_TOKEN, DATA, callback_url
from tests.console.conftest import Console

REPORTED = "jc121da366e07d345ab63f1b8df836a19"
SAMPLE = (DATA / "samples" / "nonexist_job_ids_only.xml").read_bytes()


def test_the_api_and_the_cli_list_what_cos_did_not_know(client: httpx.Client, database: Path) -> None:
    assert client.post(callback_url(), content=SAMPLE).json() == {"status": "accepted"}
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    [item] = client.get("/api/nonexistent-jobs", headers=admin).json()["items"]
    assert item["job_id"] == REPORTED
    callback = client.get("/api/callbacks", headers=admin).json()["items"][0]
    assert item["callback_id"] == callback["id"]
    assert client.get("/api/nonexistent-jobs", params={"job_id": "other"}, headers=admin).json()["items"] == []
    listed = CliRunner().invoke(main, ["jobs", "nonexistent", "--db", str(database)])
    assert listed.exit_code == 0, listed.output
    assert REPORTED in listed.output
    assert f"#{callback['id']}" in listed.output


def test_the_console_lists_them_and_a_search_for_one_says_cos_did_not_know_it(signed_in: Console) -> None:
    assert signed_in.http.post(callback_url(), content=SAMPLE).status_code == 200
    page = signed_in.http.get("/console/callbacks")
    assert "Job ids COS did not know" in page.text
    assert REPORTED in page.text
    searched = signed_in.http.get("/console/jobs", params={"job_id": REPORTED})
    assert searched.status_code == 404
    assert "COS reported it does not know it (NonExistJobIds) in callback #" in searched.text
