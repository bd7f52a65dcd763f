"""The default message per event type: what a chat robot says about each, before any platform's markup."""

from __future__ import annotations

from relay.deliver.robots.messages import MAX_FACT, MAX_IDS, describe
from tests.deliver.robots.samples import event, events

PUBLIC = "https://relay.example/"


def test_a_failed_job_names_object_tag_code_message_and_links_its_console_page() -> None:
    message = describe(event("transcode_failed"), PUBLIC)
    assert message.title == "COS Transcode job failed"
    assert message.tone == "failure"
    facts = dict(message.facts)
    assert facts["Object"] == "examplebucket-1250000000/uploads/2024/11/corrupted-upload.mp4"
    assert facts["Tag"] == "Transcode"
    assert facts["Code"] == "InvalidInput"
    assert facts["Message"] == "source file is invalid, moov atom not found"
    assert message.link == "https://relay.example/console/jobs/j4f03b1d05f0e7044d2c4d6c4845357f0"


def test_without_a_public_url_there_is_no_link() -> None:
    assert describe(event("transcode_failed"), None).link is None


def test_a_succeeded_job_says_so_without_code_or_message() -> None:
    message = describe(event("transcode_success"), PUBLIC)
    assert message.title == "COS Transcode job succeeded"
    assert message.tone == "success"
    assert "Code" not in dict(message.facts)
    assert "Message" not in dict(message.facts)


def test_a_workflow_run_links_its_page_and_names_its_failed_tasks() -> None:
    workflow = next(e for e in events("workflow_finish_success") if e["type"].startswith("cos.workflow."))
    workflow["type"], workflow["data"]["State"] = "cos.workflow.failed", "Failed"
    workflow["data"]["Tasks"][0]["State"] = "Failed"
    message = describe(workflow, PUBLIC)
    assert message.title == "COS workflow failed"
    assert message.link == f"https://relay.example/console/workflows/{workflow['data']['RunId']}"
    failed = workflow["data"]["Tasks"][0]
    assert dict(message.facts)["Failed tasks"] == failed.get("Name") or failed["Type"]


def test_nonexistent_job_ids_are_listed_up_to_a_bound() -> None:
    ids = [f"j{n:032x}" for n in range(MAX_IDS + 5)]
    nonexistent = {"type": "cos.job.nonexistent", "data": {"NonExistJobIds": ids}}
    message = describe(nonexistent, PUBLIC)
    assert message.link is None
    assert dict(message.facts)["Jobs"].endswith(f"{ids[MAX_IDS - 1]} and 5 more")


def test_an_event_type_a_later_release_adds_still_gets_a_message() -> None:
    message = describe({"type": "cos.something.new", "subject": "x1", "id": "e1"}, PUBLIC)
    assert message.title == "cos.something.new"
    assert dict(message.facts) == {"Subject": "x1", "Id": "e1"}


def test_a_long_value_is_cut_and_whitespace_folded() -> None:
    failed = event("transcode_failed")
    failed["data"]["Message"] = "line one\n" + "x" * 1000
    said = dict(describe(failed, PUBLIC).facts)["Message"]
    assert len(said) == MAX_FACT
    assert said.startswith("line one x")
    assert said.endswith("…")
