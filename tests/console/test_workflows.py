"""Workflow runs can be found (issue 25, item 1): listed by the API with filters and paging, by ``cos-relay
workflows`` (list and show), on the console's pages for runs with their tasks; one search box finds a job, a run
or a task by any id, and a task's JobId leads to its run everywhere it is asked for as a job."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import httpx
from click.testing import CliRunner

from relay.cli import main
from relay.settings.table import Settings
from relay.store import store_for
from tests.conftest import ADMIN_TOKEN, DATA, callback_url, job_body, job_id
from tests.console.conftest import Console

RUN = "icf43042c67ab601aa9e79a4f03b42e4c"
WORKFLOW = "w2c474b19d1a480b64b6e171cf0d9d3f3"
TASK_JOB = "j7e1b0c4a9f2d11efa3c95254001a2b3c"
SAMPLE = (DATA / "samples" / "workflow_finish_success.xml").read_bytes()
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def test_the_api_lists_runs_by_state_and_workflow_and_a_tasks_jobid_points_to_its_run(client: httpx.Client) -> None:
    assert client.post(callback_url(), content=SAMPLE).json() == {"status": "accepted"}
    assert client.post(callback_url(), content=job_body(1)).json() == {"status": "accepted"}
    [run] = client.get("/api/workflows", headers=ADMIN).json()["items"]
    assert (run["run_id"], run["workflow_id"], run["workflow_name"], run["state"]) == (
        RUN,
        WORKFLOW,
        "ugc-publish",
        "Success",
    )
    assert client.get("/api/workflows", params={"state": "success"}, headers=ADMIN).json()["items"] == [run]
    assert client.get("/api/workflows", params={"state": "Failed"}, headers=ADMIN).json()["items"] == []
    assert client.get("/api/workflows", params={"workflow_id": "w0"}, headers=ADMIN).json()["items"] == []
    assert client.get("/api/workflows", params={"since": "1h"}, headers=ADMIN).json()["items"] == [run]
    assert client.get("/api/workflows", params={"state": "Exploded"}, headers=ADMIN).status_code == 400
    task = client.get(f"/api/jobs/{TASK_JOB}", headers=ADMIN)
    assert task.status_code == 404
    assert f"it is a task of workflow run {RUN} (GET /api/workflows/{RUN})" in task.json()["detail"]
    assert client.get(f"/api/jobs/{job_id(1)}", headers=ADMIN).status_code == 200


def test_the_cli_lists_runs_and_shows_one_by_its_runid_or_a_tasks_jobid(client: httpx.Client, database: Path) -> None:
    assert client.post(callback_url(), content=SAMPLE).status_code == 200
    for command in (["workflows"], ["workflows", "list", "--state", "success"]):
        listed = CliRunner().invoke(main, [*command, "--db", str(database)])
        assert listed.exit_code == 0, listed.output
        assert RUN in listed.output
        assert "ugc-publish" in listed.output
    for wanted in (RUN, TASK_JOB):
        shown = CliRunner().invoke(main, ["workflows", "show", wanted, "--db", str(database)])
        assert shown.exit_code == 0, shown.output
        assert f"run_id         {RUN}" in shown.output
        assert TASK_JOB in shown.output
    missing = CliRunner().invoke(main, ["workflows", "show", "i0", "--db", str(database)])
    assert missing.exit_code == 1
    assert "no workflow run has the id i0" in missing.output


def test_the_console_lists_runs_shows_their_tasks_and_its_search_finds_any_id(signed_in: Console) -> None:
    http = signed_in.http
    assert http.post(callback_url(), content=SAMPLE).status_code == 200
    assert http.post(callback_url(), content=job_body(1)).status_code == 200
    listing = http.get("/console/workflows")
    assert listing.status_code == 200
    assert RUN in listing.text
    page = http.get(f"/console/workflows/{RUN}")
    assert page.status_code == 200
    assert TASK_JOB in page.text
    assert "ugc-publish" in page.text
    for wanted, where in (
        (RUN, f"/console/workflows/{RUN}"),
        (TASK_JOB, f"/console/workflows/{RUN}"),
        (job_id(1), f"/console/jobs/{job_id(1)}"),
    ):
        found = http.get("/console/jobs", params={"job_id": wanted}, follow_redirects=False)
        assert (found.status_code, found.headers["location"]) == (303, where), wanted
    assert http.get("/console/jobs", params={"job_id": "nothing"}).status_code == 404


def test_the_console_lists_the_jobs_in_flight_oldest_first(signed_in: Console, console_settings: Settings) -> None:
    assert "None: no COS source is configured" in signed_in.http.get("/console/in-flight").text
    with store_for(console_settings.db_path) as store:
        flying = [(job_id(2), "Running", "Transcode", "2026-12-06T11:00:00+0800")]
        asyncio.run(store.replace_in_flight("media", flying, datetime.now(UTC)))
    page = signed_in.http.get("/console/in-flight")
    assert page.status_code == 200
    assert job_id(2) in page.text
    assert "media" in page.text
