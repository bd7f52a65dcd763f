"""The callback model: what one COS callback says, extracted from the schema's typed JSON."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

JsonObject = dict[str, Any]

_UNSET_TIMES = ("", "-")


@dataclass(frozen=True)
class Timestamp:
    """A COS time: the string as sent, and the instant in UTC when it names one."""

    raw: str
    utc: datetime | None

    @classmethod
    def parse(cls, raw: object) -> Timestamp | None:
        if not isinstance(raw, str) or raw in _UNSET_TIMES:
            return None
        try:
            # The schema already checked the shape (T or space, +hhmm); fromisoformat reads both, fast.
            moment = datetime.fromisoformat(raw)
            # OverflowError: 9999-12-31T23:59:59-0800 is a valid COS time whose UTC instant is past year 9999.
            utc = moment.astimezone(UTC) if moment.tzinfo else None
        except (ValueError, OverflowError):
            return cls(raw, None)  # the schema admits it; keep the text even if we cannot place it
        return cls(raw, utc)

    @property
    def iso(self) -> str | None:
        return self.utc.replace(tzinfo=None).isoformat(timespec="seconds") + "Z" if self.utc else None


@dataclass(frozen=True)
class JobState:
    """One ``JobsDetail``: a job reaching a state."""

    job_id: str
    state: str
    tag: str
    queue_id: str | None
    code: str | None
    message: str | None
    bucket: str | None
    object_key: str | None
    region: str | None
    workflow_run_id: str | None
    creation_time: Timestamp | None
    start_time: Timestamp | None
    end_time: Timestamp | None
    detail: JsonObject

    @property
    def dedup_key(self) -> str:
        # The same job can legitimately fail and later succeed; EndTime tells two runs in one state apart.
        end = self.end_time.raw if self.end_time else ""
        return f"job:{self.job_id}:{self.state}:{end}"


@dataclass(frozen=True)
class WorkflowRun:
    """One ``WorkflowExecution``: a workflow instance finishing."""

    run_id: str
    state: str
    workflow_id: str | None
    workflow_name: str | None
    bucket: str | None
    object_key: str | None
    create_time: Timestamp | None
    tasks: tuple[JsonObject, ...]
    detail: JsonObject

    @property
    def dedup_key(self) -> str:
        return f"workflow:{self.run_id}:{self.state}"


@dataclass(frozen=True)
class Callback:
    """Everything one callback body carries."""

    event_name: str | None
    jobs: tuple[JobState, ...] = ()
    workflows: tuple[WorkflowRun, ...] = ()
    nonexistent_job_ids: tuple[str, ...] = ()
    document: JsonObject = field(default_factory=dict, repr=False)

    @property
    def nonexistent_dedup_key(self) -> str | None:
        if not self.nonexistent_job_ids:
            return None
        digest = hashlib.sha256(",".join(sorted(self.nonexistent_job_ids)).encode()).hexdigest()[:32]
        return f"nonexistent:{digest}"

    @property
    def dedup_keys(self) -> tuple[str, ...]:
        keys = [job.dedup_key for job in self.jobs] + [run.dedup_key for run in self.workflows]
        if self.nonexistent_dedup_key:
            keys.append(self.nonexistent_dedup_key)
        return tuple(keys)


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
