"""CloudEvents 1.0 (structured JSON mode) built from the items of an accepted callback, and the same event in binary
mode."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from relay.domain.callback import JOB_STATES, WORKFLOW_STATES, Callback, JobState, WorkflowRun

CONTENT_TYPE = "application/cloudevents+json"
#: Event ids are UUIDv5 of the item's dedup key in this namespace: the same COS callback always maps to
#: the same id, so retries, replays and COS's own duplicates all carry one id.
ID_NAMESPACE = uuid.UUID("6f1c2d3e-8a4b-5c6d-9e0f-112233445566")


@dataclass(frozen=True)
class Event:
    """One event to deliver, with the attributes subscriber filters look at."""

    id: str
    type: str
    subject: str | None
    item_key: str
    #: The serialized CloudEvent, sent byte for byte on every attempt (and signed over).
    body: bytes
    tag: str | None = None
    state: str | None = None
    queue_id: str | None = None
    bucket: str | None = None
    object_key: str | None = None


def event_id(item_key: str) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, item_key))


def _time(moment: datetime) -> str:
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="seconds") + "Z"


def _source(gateway: str, *parts: tuple[str, str | None]) -> str:
    """A URI-reference naming the gateway and where in COS the event came from."""
    path = "".join(f"/{kind}/{value}" for kind, value in parts if value)
    return f"/cos-relay/{gateway}{path}"


def _state_word(state: str) -> str:
    return {"Success": "succeeded", "Failed": "failed"}.get(state, state.lower())


#: Every CloudEvents type the gateway emits (what a subscriber's type patterns are checked against).
EVENT_TYPES = (
    *(f"cos.job.{_state_word(state)}" for state in JOB_STATES),
    "cos.job.nonexistent",
    *(f"cos.workflow.{_state_word(state)}" for state in WORKFLOW_STATES),
)


#: The CloudEvents extension attribute an event found by reconciliation carries: the COS source's name. Its id is
#: the one the callback would have given it, so a subscriber that later gets nothing more never notices.
RECONCILED = "cosreconciled"


def _event(
    item_key: str,
    event_type: str,
    subject: str | None,
    source: str,
    moment: datetime,
    data: Any,
    reconciled_from: str | None = None,
    **match: str | None,
) -> Event:
    """Serialize once: the same bytes are signed and sent on every attempt."""
    identifier = event_id(item_key)
    attributes = {"specversion": "1.0", "id": identifier, "source": source, "type": event_type}
    if subject is not None:
        attributes["subject"] = subject
    if reconciled_from is not None:
        attributes[RECONCILED] = reconciled_from
    body = orjson.dumps({**attributes, "time": _time(moment), "datacontenttype": "application/json", "data": data})
    return Event(identifier, event_type, subject, item_key, body, **match)


def job_event(job: JobState, gateway: str, received_at: datetime, reconciled_from: str | None = None) -> Event:
    return _event(
        job.dedup_key,
        f"cos.job.{_state_word(job.state)}",
        job.job_id,
        _source(gateway, ("buckets", job.bucket), ("queues", job.queue_id)),
        job.end_time.utc if job.end_time and job.end_time.utc else received_at,
        job.detail,
        reconciled_from,
        tag=job.tag,
        state=job.state,
        queue_id=job.queue_id,
        bucket=job.bucket,
        object_key=job.object_key,
    )


def workflow_event(run: WorkflowRun, gateway: str, received_at: datetime, reconciled_from: str | None = None) -> Event:
    return _event(
        run.dedup_key,
        f"cos.workflow.{_state_word(run.state)}",
        run.run_id,
        _source(gateway, ("buckets", run.bucket), ("workflows", run.workflow_id)),
        received_at,
        run.detail,
        reconciled_from,
        state=run.state,
        bucket=run.bucket,
        object_key=run.object_key,
    )


def nonexistent_event(callback: Callback, gateway: str, received_at: datetime) -> Event:
    key = callback.nonexistent_dedup_key
    assert key is not None
    data = {"NonExistJobIds": list(callback.nonexistent_job_ids)}
    return _event(key, "cos.job.nonexistent", None, _source(gateway), received_at, data)


def events_for(
    callback: Callback, gateway: str, received_at: datetime, reconciled_from: str | None = None
) -> list[Event]:
    """The events for the items of ``callback``: one per job state, workflow run and NonExistJobIds set; jobs found
    and runs found by reconciling a COS source say which."""
    events = [job_event(job, gateway, received_at, reconciled_from) for job in callback.jobs]
    events += [workflow_event(run, gateway, received_at, reconciled_from) for run in callback.workflows]
    if callback.nonexistent_dedup_key is not None:
        events.append(nonexistent_event(callback, gateway, received_at))
    return events


#: The CloudEvents attributes binary mode carries as ``ce-*`` headers (the rest of the event is its data).
_BINARY_ATTRIBUTES = ("specversion", "id", "source", "type", "subject", "time")


def binary(body: bytes) -> tuple[bytes, dict[str, str]]:
    """A structured CloudEvent as binary mode sends it: its data as the body, its attributes as ``ce-*``
    headers (CloudEvents HTTP binding, 3.1)."""
    event = orjson.loads(body)
    headers = {f"ce-{name}": str(event[name]) for name in _BINARY_ATTRIBUTES if event.get(name) is not None}
    headers["Content-Type"] = event.get("datacontenttype", "application/json")
    return orjson.dumps(event.get("data")), headers
