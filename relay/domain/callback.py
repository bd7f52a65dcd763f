"""The callback model: what one COS callback says, and the request it arrived in."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

from relay.domain.errors import Invalid

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


#: States one job's history may hold. A real job has a handful (Submitted, Running, then Success or Failed,
#: maybe again after a retry): only a buggy or hostile sender varying EndTime reaches this, and without a
#: bound one JobId took 109,000 states, every read of the job carrying them all.
MAX_JOB_STATES: Final = 100


def history_full(job_id: str, position: int) -> Invalid:
    """The refusal of a new state for ``job_id``, the ``position``-th JobsDetail (from 1), whose history is full."""
    return Invalid(
        f"too many states for job {job_id}: its history already holds {MAX_JOB_STATES}",
        path=f"/Response/JobsDetail[{position}]/JobId",
        rule=f"at most {MAX_JOB_STATES} states per job",
    )


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


@dataclass(frozen=True)
class Received:
    """A request body and where it came from."""

    received_at: datetime
    source_addr: str | None
    content_type: str | None
    body: bytes
    format: str  # xml | json | unknown
    #: None for a callback COS posted; the source's name for one found by reconciling it (`relay.cos.reconcile`).
    reconciled_from: str | None = None


#: What storing a callback found: new items, or only items already recorded.
IngestOutcome = Literal["accepted", "duplicate"]

#: A job's and a workflow run's states as COS writes them (the schema's JobState and WorkflowState).
JOB_STATES = ("Submitted", "Running", "Success", "Failed", "Pause", "Cancel")
WORKFLOW_STATES = ("Success", "Failed")
#: Every ``callbacks.outcome`` recorded: accepted and duplicate, and the refusals whose bodies are kept.
CALLBACK_OUTCOMES = ("accepted", "duplicate", "invalid", "malformed", "too_large", "unsupported_type")


@dataclass(frozen=True)
class IngestResult:
    """What recording one callback did."""

    callback_id: int
    outcome: IngestOutcome
    #: Dedup keys of the items this callback added (empty for a pure duplicate).
    new_items: tuple[str, ...]
    #: Events the new items put in the log (one each): the subscribers' cursors owe them to every subscriber
    #: whose filter takes them.
    events: int
    #: Whether an enabled subscriber existed when they were logged: the delivery worker is woken for them only then
    #: (a wake is a claim, a transaction; enabling or adding a subscriber wakes it itself).
    claimable: bool = False
