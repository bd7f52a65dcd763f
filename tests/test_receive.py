"""The callback endpoint, end to end over real HTTP: what COS gets back and what ends up stored."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from lxml import etree

from relay.settings.table import Settings
from relay.store.records import Target
from tests.conftest import DATA, callback_schema, callback_url
from tests.databases import count, rows
from tests.live import ThreadServer

SAMPLES = sorted((DATA / "samples").glob("*.xml"))
JSON_SAMPLES = sorted((DATA / "samples" / "json").glob("*.json"))
BAD_STATUS = {
    "wrong_root.xml": 422,
    "truncated.xml": 400,
    "xxe_external_entity.xml": 400,
    "billion_laughs.xml": 400,
    "invalid_state.xml": 422,
    "not_xml_form_urlencoded.txt": 415,
    "invalid_utf8.xml": 400,
}
TRANSCODE = (DATA / "samples" / "transcode_success.xml").read_bytes()


def table_counts(db: Target) -> dict[str, int]:
    tables = ("jobs", "job_states", "workflow_runs", "nonexistent_job_ids", "items")
    return {table: count(db, table) for table in tables}


def quarantine(db: Target) -> list[dict[str, Any]]:
    return rows(db, "SELECT * FROM quarantine ORDER BY id")


def expected_states(body: bytes) -> dict[str, str]:
    root = etree.fromstring(body)
    return {str(detail.findtext("JobId")): str(detail.findtext("State")) for detail in root.findall("JobsDetail")}


def post(client: httpx.Client, body: bytes, content_type: str | None = "application/xml") -> httpx.Response:
    headers = {"Content-Type": content_type} if content_type else {}
    return client.post(callback_url(), content=body, headers=headers)


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda path: path.name)
def test_every_sample_is_accepted_and_its_jobs_are_retrievable(
    sample: Path, client: httpx.Client, admin: httpx.Client
) -> None:
    body = sample.read_bytes()
    response = post(client, body)
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "accepted"}
    for job_id, state in expected_states(body).items():
        job = admin.get(f"/api/jobs/{job_id}").json()
        assert job["state"] == state
        assert job["history"][-1]["state"] == state
        assert job["detail"]["JobId"] == job_id


def test_json_variant_is_accepted_and_stored_like_its_xml_twin(client: httpx.Client, admin: httpx.Client) -> None:
    body = JSON_SAMPLES[0].read_bytes()
    response = post(client, body, "application/json")
    assert response.status_code == 200, response.text
    detail = json.loads(body)["JobsDetail"]
    job = admin.get(f"/api/jobs/{detail['JobId']}").json()
    assert job["state"] == "Success"
    assert job["tag"] == "Transcode"
    assert job["queue_id"] == detail["QueueId"]
    assert job["workflow_run_id"] == detail["Workflow"]["RunId"]
    assert job["detail"]["Operation"]["WatermarkTemplateId"] == detail["Operation"]["WatermarkTemplateId"]
    assert job["detail"]["Operation"]["JobLevel"] == 0  # typed by the schema: a number, not "0"


def test_job_fields_times_and_input_are_normalised(client: httpx.Client, admin: httpx.Client) -> None:
    assert post(client, TRANSCODE).status_code == 200
    job = admin.get("/api/jobs/j7c12d4be4c935a96bfe3fb23d1a491e9").json()
    assert job["tag"] == "Transcode"
    assert job["input"] == {
        "bucket": "examplebucket-1250000000",
        "object": "uploads/2024/11/lecture-01.mov",
        "region": "ap-guangzhou",
    }
    assert job["creation_time"] == "2024-11-05T02:12:03Z"
    assert job["times_as_sent"]["creation_time"] == "2024-11-05T10:12:03+0800"
    assert job["end_time"] == "2024-11-05T02:13:41Z"
    assert isinstance(job["detail"]["Operation"]["MediaInfo"]["Format"]["Size"], int)


def test_workflow_execution_is_stored_with_its_tasks(client: httpx.Client, admin: httpx.Client) -> None:
    body = (DATA / "samples" / "workflow_finish_success.xml").read_bytes()
    assert post(client, body).status_code == 200
    run = admin.get("/api/workflows/icf43042c67ab601aa9e79a4f03b42e4c").json()
    assert run["state"] == "Success"
    assert run["create_time"] == "2024-11-11T10:22:30Z"
    assert [task["type"] for task in run["tasks"]] == ["Transcode", "SmartCover"]
    assert run["history"][0]["state"] == "Success"
    assert admin.get("/api/workflows/i00000000000000000000000000000000").status_code == 404


def test_nonexistent_job_ids_are_recorded_with_their_callback(client: httpx.Client, settings: Settings) -> None:
    body = (DATA / "samples" / "nonexist_job_ids_only.xml").read_bytes()
    assert post(client, body).status_code == 200
    found = rows(settings.db_path, "SELECT job_id, callback_id FROM nonexistent_job_ids")
    assert [row["job_id"] for row in found] == ["jc121da366e07d345ab63f1b8df836a19"]
    assert found[0]["callback_id"] is not None


def test_duplicate_callback_is_acknowledged_and_recorded_once(
    client: httpx.Client, admin: httpx.Client, settings: Settings
) -> None:
    assert post(client, TRANSCODE).json() == {"status": "accepted"}
    again = post(client, TRANSCODE)
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate"}
    job = admin.get("/api/jobs/j7c12d4be4c935a96bfe3fb23d1a491e9").json()
    assert len(job["history"]) == 1
    outcomes = [item["outcome"] for item in admin.get("/api/callbacks").json()["items"]]
    assert outcomes == ["duplicate", "accepted"]
    assert table_counts(settings.db_path)["items"] == 1


def test_later_state_of_the_same_job_is_added_to_its_history(client: httpx.Client, admin: httpx.Client) -> None:
    running = TRANSCODE.replace(b"<State>Success</State>", b"<State>Running</State>").replace(
        b"<EndTime>2024-11-05T10:13:41+0800</EndTime>", b"<EndTime>-</EndTime>"
    )
    assert post(client, running).json() == {"status": "accepted"}
    assert post(client, TRANSCODE).json() == {"status": "accepted"}
    job = admin.get("/api/jobs/j7c12d4be4c935a96bfe3fb23d1a491e9").json()
    assert [entry["state"] for entry in job["history"]] == ["Running", "Success"]
    assert job["state"] == "Success"


@pytest.mark.parametrize(("name", "status"), sorted(BAD_STATUS.items()))
def test_bad_body_gets_its_status_changes_no_job_and_is_quarantined(
    name: str, status: int, client: httpx.Client, settings: Settings
) -> None:
    body = (DATA / "bad" / name).read_bytes()
    content_type = "application/x-www-form-urlencoded" if name.endswith(".txt") else "application/xml"
    before = table_counts(settings.db_path)
    response = post(client, body, content_type)
    assert response.status_code == status, response.text
    error = response.json()
    assert error["detail"]
    assert table_counts(settings.db_path) == before
    [row] = quarantine(settings.db_path)
    assert row["outcome"] == error["error"]
    assert row["size"] == len(body)
    assert row["content_type"] == content_type
    assert row["source_addr"] == "127.0.0.1"
    assert bytes(row["body"]) == body[:4096]
    assert row["reason"]


def test_xxe_body_never_reads_the_referenced_file(client: httpx.Client, settings: Settings) -> None:
    body = (DATA / "bad" / "xxe_external_entity.xml").read_bytes()
    response = post(client, body)
    assert response.status_code == 400
    assert "root:" not in response.text
    assert "DTD" in response.json()["detail"]


def test_invalid_state_names_the_element_path_and_the_rule(client: httpx.Client) -> None:
    response = post(client, (DATA / "bad" / "invalid_state.xml").read_bytes())
    assert response.status_code == 422
    error = response.json()
    assert error["path"].startswith("/Response/JobsDetail")
    assert error["path"].endswith("State")
    assert "Exploded" in error["rule"]


@pytest.mark.parametrize("token", [None, "", "wrong", "test-callback-token-but-longer"])
def test_missing_or_wrong_token_gets_401_and_stores_nothing(
    token: str | None, client: httpx.Client, settings: Settings
) -> None:
    url = "/cos/callback" if token is None else f"/cos/callback?token={token}"
    response = client.post(url, content=TRANSCODE, headers={"Content-Type": "application/xml"})
    assert response.status_code == 401
    assert quarantine(settings.db_path) == []
    assert table_counts(settings.db_path)["jobs"] == 0


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_callback_endpoint_accepts_only_post(method: str, client: httpx.Client) -> None:
    assert client.request(method, callback_url()).status_code == 405


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("application/xml", 200),
        ("text/xml; charset=utf-8", 200),
        ("application/xml; charset=UTF-8", 200),
        (None, 200),
        ("text/plain", 200),
        ("application/octet-stream", 200),
        ("application/x-www-form-urlencoded", 415),
        ("multipart/form-data; boundary=x", 415),
        ("image/png", 415),
    ],
)
def test_content_type_decides_or_the_first_byte_is_sniffed(
    content_type: str | None, status: int, client: httpx.Client
) -> None:
    without_declaration = TRANSCODE.split(b"?>", 1)[1]  # leading blanks are legal only without one
    assert post(client, b"\n  " + without_declaration, content_type).status_code == status


def test_json_body_without_content_type_is_sniffed(client: httpx.Client) -> None:
    assert post(client, JSON_SAMPLES[0].read_bytes(), None).status_code == 200


def test_generic_type_with_neither_xml_nor_json_is_415(client: httpx.Client, settings: Settings) -> None:
    assert post(client, b"EventName=TaskFinish&JobId=x", "text/plain").status_code == 415
    assert quarantine(settings.db_path)[0]["outcome"] == "unsupported_type"


def test_content_encoding_is_refused(client: httpx.Client) -> None:
    response = client.post(
        callback_url(), content=TRANSCODE, headers={"Content-Type": "application/xml", "Content-Encoding": "gzip"}
    )
    assert response.status_code == 415


@pytest.fixture
def small_gateway(settings: Settings) -> Iterator[ThreadServer]:
    from relay.app.factory import create_app

    server = ThreadServer(create_app(settings.replace(max_body=len(TRANSCODE)), schema=callback_schema())).start()
    yield server
    server.stop()


def test_body_at_the_size_cap_is_accepted_and_one_byte_over_is_413(
    small_gateway: ThreadServer, settings: Settings
) -> None:
    with httpx.Client(base_url=small_gateway.url) as client:
        assert post(client, TRANSCODE).status_code == 200
        over = post(client, TRANSCODE.replace(b"<Response>", b"<Response> "))
    assert over.status_code == 413
    assert over.json()["error"] == "too_large"
    assert quarantine(settings.db_path) == []


def test_content_length_over_the_cap_is_refused_before_reading(small_gateway: ThreadServer) -> None:
    with httpx.Client(base_url=small_gateway.url) as client:
        big = b" " * (len(TRANSCODE) * 3)
        assert post(client, big).status_code == 413


def test_chunked_body_without_content_length_is_accepted(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        for start in range(0, len(TRANSCODE), 100):
            yield TRANSCODE[start : start + 100]

    response = client.post(callback_url(), content=chunks(), headers={"Content-Type": "application/xml"})
    assert response.status_code == 200


def test_data_survives_a_restart_on_the_same_database(settings: Settings) -> None:
    from relay.app.factory import create_app

    bodies = [path.read_bytes() for path in SAMPLES]
    with_server = ThreadServer(create_app(settings, schema=callback_schema())).start()
    with httpx.Client(base_url=with_server.url) as client:
        for body in bodies:
            assert post(client, body).status_code == 200
    with_server.stop()
    again = ThreadServer(create_app(settings, schema=callback_schema())).start()
    headers = {"Authorization": f"Bearer {settings.admin_token}"}
    with httpx.Client(base_url=again.url, headers=headers) as client:
        for body in bodies:
            for job_id, state in expected_states(body).items():
                assert client.get(f"/api/jobs/{job_id}").json()["state"] == state
            assert post(client, body).json() == {"status": "duplicate"}
    again.stop()
