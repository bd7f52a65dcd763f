"""What a chat message says about an event, before any platform's markup: a title, a few labelled facts and a link
to the event's page in the console.

The default message per event type is `describe`; a subscriber's template (`relay.deliver.robots.templates`) may say
it otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

#: Characters of one fact's value, at most (an object key or a COS message can be long): the rest is cut.
MAX_FACT = 300
#: Job ids listed for a NonExistJobIds event, at most (with the count of the rest: the fact stays within MAX_FACT).
MAX_IDS = 5


@dataclass(frozen=True)
class Message:
    title: str
    #: (label, value): values are COS's text as it came, escaped by each platform when it is written.
    facts: tuple[tuple[str, str], ...]
    #: The event's page in the console (None without RELAY_PUBLIC_URL, or for an event without one).
    link: str | None
    #: success | failure | neutral: the colour platforms that have one give the message.
    tone: str


def _text(value: object) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= MAX_FACT else text[: MAX_FACT - 1] + "…"


def _facts(*pairs: tuple[str, object]) -> tuple[tuple[str, str], ...]:
    """The pairs whose value COS sent (empty values left out), each cut to `MAX_FACT`."""
    return tuple((label, _text(value)) for label, value in pairs if value not in (None, "", [], {}))


def _object(bucket: object, key: object) -> str | None:
    if not key:
        return None
    return f"{bucket}/{key}" if bucket else str(key)


def _page(public_url: str | None, section: str, identifier: object) -> str | None:
    if public_url is None or not isinstance(identifier, str) or not identifier:
        return None
    return f"{public_url.rstrip('/')}/console/{section}/{quote(identifier, safe='')}"


def _tone(state: object) -> str:
    return {"Success": "success", "Failed": "failure"}.get(str(state), "neutral")


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _job(event: Mapping[str, Any], data: Mapping[str, Any], public_url: str | None) -> Message:
    job_input = _mapping(data.get("Input"))
    state, tag = data.get("State"), data.get("Tag") or "job"
    word = {"Success": "succeeded", "Failed": "failed", "Cancel": "cancelled", "Pause": "paused"}
    failed = state == "Failed"
    facts = _facts(
        ("Object", _object(job_input.get("BucketId"), job_input.get("Object") or job_input.get("Url"))),
        ("Tag", data.get("Tag")),
        ("Code", data.get("Code") if failed else None),
        ("Message", data.get("Message") if failed else None),
        ("Job", data.get("JobId")),
        ("Queue", data.get("QueueId")),
        ("Found by reconciling", event.get("cosreconciled")),
    )
    title = f"COS {tag} job {word.get(str(state), str(state).lower())}"
    return Message(title, facts, _page(public_url, "jobs", data.get("JobId")), _tone(state))


def _workflow(event: Mapping[str, Any], data: Mapping[str, Any], public_url: str | None) -> Message:
    state = data.get("State")
    tasks = data.get("Tasks")
    failed_tasks = [
        str(task.get("Name") or task.get("Type"))
        for task in (tasks if isinstance(tasks, list) else [])
        if isinstance(task, Mapping) and task.get("State") == "Failed"
    ]
    facts = _facts(
        ("Object", _object(data.get("BucketId"), data.get("Object"))),
        ("Workflow", data.get("WorkflowName") or data.get("WorkflowId")),
        ("Failed tasks", ", ".join(failed_tasks)),
        ("Run", data.get("RunId")),
        ("Found by reconciling", event.get("cosreconciled")),
    )
    word = "succeeded" if state == "Success" else "failed" if state == "Failed" else str(state).lower()
    return Message(f"COS workflow {word}", facts, _page(public_url, "workflows", data.get("RunId")), _tone(state))


def _nonexistent(data: Mapping[str, Any]) -> Message:
    ids = data.get("NonExistJobIds")
    ids = [str(job) for job in ids] if isinstance(ids, list) else []
    listed = ", ".join(ids[:MAX_IDS]) + (f" and {len(ids) - MAX_IDS} more" if len(ids) > MAX_IDS else "")
    return Message("COS named jobs it does not know", _facts(("Jobs", listed)), None, "neutral")


def describe(event: Mapping[str, Any], public_url: str | None) -> Message:
    """The default message for a CloudEvent the gateway made (any type, including one a later release adds)."""
    kind = str(event.get("type", ""))
    data = _mapping(event.get("data"))
    if kind == "cos.job.nonexistent":
        return _nonexistent(data)
    if kind.startswith("cos.job."):
        return _job(event, data, public_url)
    if kind.startswith("cos.workflow."):
        return _workflow(event, data, public_url)
    return Message(kind or "event", _facts(("Subject", event.get("subject")), ("Id", event.get("id"))), None, "neutral")
