"""Build the callback model from the typed JSON the schema converter returns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from relay.domain.callback import Callback, JobState, JsonObject, Timestamp, WorkflowRun


def callback_from_document(document: JsonObject) -> Callback:
    """Build the model from the typed JSON that `CallbackSchema.convert` returns."""
    event = document.get("EventName")
    jobs = tuple(_job(detail) for detail in _items(document.get("JobsDetail")))
    runs = tuple(_workflow(execution) for execution in _items(document.get("WorkflowExecution")))
    missing: list[str] = []
    for entry in _items(document.get("NonExistJobIds")):
        # The query-API form is one comma-separated string; the callback form one id per element.
        missing.extend(part.strip() for part in str(entry).split(",") if part.strip())
    return Callback(
        event_name=event if isinstance(event, str) else None,
        jobs=jobs,
        workflows=runs,
        nonexistent_job_ids=tuple(dict.fromkeys(missing)),
        document=document,
    )


def _items(value: object) -> Sequence[Any]:
    if value is None:
        return ()
    return value if isinstance(value, list) else (value,)


def _text(mapping: Mapping[str, Any], key: str) -> str | None:
    value = mapping.get(key)
    return None if value is None else str(value)


def _job(detail: JsonObject) -> JobState:
    job_input = detail.get("Input") or {}
    workflow = _items(detail.get("Workflow"))
    return JobState(
        job_id=str(detail["JobId"]),
        state=str(detail["State"]),
        tag=str(detail["Tag"]),
        queue_id=_text(detail, "QueueId"),
        code=_text(detail, "Code"),
        message=_text(detail, "Message"),
        bucket=_text(job_input, "BucketId"),
        object_key=_text(job_input, "Object"),
        region=_text(job_input, "Region"),
        workflow_run_id=_text(workflow[0], "RunId") if workflow else None,
        creation_time=Timestamp.parse(detail.get("CreationTime")),
        start_time=Timestamp.parse(detail.get("StartTime")),
        end_time=Timestamp.parse(detail.get("EndTime")),
        detail=detail,
    )


def _workflow(execution: JsonObject) -> WorkflowRun:
    return WorkflowRun(
        run_id=str(execution["RunId"]),
        state=str(execution["State"]),
        workflow_id=_text(execution, "WorkflowId"),
        workflow_name=_text(execution, "WorkflowName"),
        bucket=_text(execution, "BucketId"),
        object_key=_text(execution, "Object"),
        create_time=Timestamp.parse(execution.get("CreateTime")),
        tasks=tuple(_items(execution.get("Tasks"))),
        detail=execution,
    )
