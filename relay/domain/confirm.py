"""Confirming callbacks against COS: which jobs of a callback must be read back before their events go out, and
what COS's answer means.

A source with ``confirm = true`` has every job and workflow run of its bucket that a callback brings read back
from COS (the family's ``GET /jobs/<id>,<id>``, ``GET /workflowexecution/<RunId>``) before its events are
released: one COS does not know, or has in another state, is held for good (unconfirmed). An item that names no
bucket (document jobs may not) is confirmed against the first source with ``confirm`` whose families include its
own (a job's by its Tag; a run's: sources that name workflows). NonExistJobIds sets are not read back. What
reconciliation records came from COS itself: never confirmed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from relay.domain.callback import Callback

#: What COS reads items back under: the job families (each its own path: /jobs, /pic_jobs, /asr_jobs, /doc_jobs,
#: /ai_jobs), and workflow runs (/workflowexecution/<RunId>).
ConfirmFamily = Literal["media", "pictures", "speech", "documents", "ai", "workflow"]
#: The Tags whose jobs are not media jobs (FORMAT.md §3); every other Tag is read back under /jobs.
_TAG_FAMILIES: dict[str, ConfirmFamily] = {
    **dict.fromkeys(("SpeechRecognition", "SoundHound", "VocalScore"), "speech"),
    **dict.fromkeys(("DocProcess", "DocWatermark", "DocAIGCMetadata"), "documents"),
    **dict.fromkeys(("PicProcess", "PosterProduction", "ImageInspect"), "pictures"),
    **dict.fromkeys(("Translation", "WordsGeneralize"), "ai"),
}
#: A confirmation's status: waiting for COS, confirmed (released), or held for good with a reason, then maybe
#: released or discarded by an admin.
Status = Literal["waiting", "confirmed", "unconfirmed", "released", "discarded"]
CONFIRMATIONS: tuple[Status, ...] = ("waiting", "confirmed", "unconfirmed", "released", "discarded")
#: Why COS did not confirm a job: it does not know it (NonExistJobIds, or absent from the answer), or has it in
#: another state.
Reason = Literal["nonexistent", "state_differs"]
REASONS: tuple[Reason, ...] = ("nonexistent", "state_differs")


def family_of(tag: str) -> ConfirmFamily:
    return _TAG_FAMILIES.get(tag, "media")


@dataclass(frozen=True)
class ConfirmScope:
    """A source with ``confirm = true``: its name, its bucket and the job families it names."""

    source: str
    bucket: str
    families: frozenset[ConfirmFamily]


@dataclass(frozen=True)
class ToConfirm:
    """One job (or workflow run: ``job_id`` is its RunId) of a callback to read back from COS before its events are
    released."""

    item_key: str
    job_id: str
    state: str
    source: str
    family: ConfirmFamily


@dataclass(frozen=True)
class Verdict:
    """What COS's answer made of a job waiting: confirmed (``reason`` None) or not, and why."""

    item_key: str
    job_id: str
    reason: Reason | None
    #: What COS has, for the admin (its state, or "" when it does not know the job).
    seen: str = ""


def to_confirm(callback: Callback, scopes: Sequence[ConfirmScope]) -> tuple[ToConfirm, ...]:
    """The jobs and runs of ``callback`` that a source with ``confirm`` vouches for only once COS read them back."""
    if not scopes:
        return ()
    items: list[tuple[str, str, str, str | None, ConfirmFamily]] = [
        (job.dedup_key, job.job_id, job.state, job.bucket, family_of(job.tag)) for job in callback.jobs
    ]
    items += [(run.dedup_key, run.run_id, run.state, run.bucket, "workflow") for run in callback.workflows]
    chosen = []
    for key, subject, state, bucket, family in items:
        scope = next(
            (scope for scope in scopes if scope.bucket == bucket or (bucket is None and family in scope.families)),
            None,
        )
        if scope is not None:
            chosen.append(ToConfirm(key, subject, state, scope.source, family))
    return tuple(chosen)


def verdict(waiting: ToConfirm, answered: dict[str, str]) -> Verdict:
    """``waiting`` judged by COS's answer (job id -> its state; ids COS does not know absent)."""
    seen = answered.get(waiting.job_id)
    if seen is None:
        return Verdict(waiting.item_key, waiting.job_id, "nonexistent")
    if seen != waiting.state:
        return Verdict(waiting.item_key, waiting.job_id, "state_differs", seen)
    return Verdict(waiting.item_key, waiting.job_id, None, seen)
