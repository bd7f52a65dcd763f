"""CloudEvents 1.0 (structured JSON mode) built from the items of an accepted callback."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from relay.validate.callback import Callback, JobState, WorkflowRun

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
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _source(gateway: str, *parts: tuple[str, str | None]) -> str:
    """A URI-reference naming the gateway and where in COS the event came from."""
    path = "".join(f"/{kind}/{value}" for kind, value in parts if value)
    return f"/cos-relay/{gateway}{path}"


def _serialize(**attributes: Any) -> bytes:
    return orjson.dumps({"specversion": "1.0", "datacontenttype": "application/json", **attributes})


def job_event(job: JobState, gateway: str, received_at: datetime) -> Event:
    kind = {"Success": "succeeded", "Failed": "failed"}.get(job.state, job.state.lower())
    identifier = event_id(job.dedup_key)
    moment = job.end_time.utc if job.end_time and job.end_time.utc else received_at
    event_type = f"cos.job.{kind}"
    body = _serialize(
        id=identifier,
        source=_source(gateway, ("buckets", job.bucket), ("queues", job.queue_id)),
        type=event_type,
        subject=job.job_id,
        time=_time(moment),
        data=job.detail,
    )
    return Event(
        identifier,
        event_type,
        job.job_id,
        job.dedup_key,
        body,
        tag=job.tag,
        state=job.state,
        queue_id=job.queue_id,
        bucket=job.bucket,
        object_key=job.object_key,
    )


def workflow_event(run: WorkflowRun, gateway: str, received_at: datetime) -> Event:
    kind = {"Success": "succeeded", "Failed": "failed"}.get(run.state, run.state.lower())
    identifier = event_id(run.dedup_key)
    event_type = f"cos.workflow.{kind}"
    body = _serialize(
        id=identifier,
        source=_source(gateway, ("buckets", run.bucket), ("workflows", run.workflow_id)),
        type=event_type,
        subject=run.run_id,
        time=_time(received_at),
        data=run.detail,
    )
    return Event(
        identifier,
        event_type,
        run.run_id,
        run.dedup_key,
        body,
        state=run.state,
        bucket=run.bucket,
        object_key=run.object_key,
    )


def nonexistent_event(callback: Callback, gateway: str, received_at: datetime) -> Event:
    key = callback.nonexistent_dedup_key
    assert key is not None
    identifier = event_id(key)
    event_type = "cos.job.nonexistent"
    body = _serialize(
        id=identifier,
        source=_source(gateway),
        type=event_type,
        time=_time(received_at),
        data={"NonExistJobIds": list(callback.nonexistent_job_ids)},
    )
    return Event(identifier, event_type, None, key, body)


def events_for(callback: Callback, new_items: set[str], gateway: str, received_at: datetime) -> list[Event]:
    """The events for the items of ``callback`` that were new (duplicates make none)."""
    events = [job_event(job, gateway, received_at) for job in callback.jobs if job.dedup_key in new_items]
    events += [workflow_event(run, gateway, received_at) for run in callback.workflows if run.dedup_key in new_items]
    if callback.nonexistent_dedup_key in new_items:
        events.append(nonexistent_event(callback, gateway, received_at))
    return events
