"""Confirming callbacks against COS: which jobs of a callback must be read back before their events go out, and
what COS's answer means.

A source with ``confirm = true`` has every job of its bucket that a callback brings read back from COS (the
family's ``GET /jobs/<id>,<id>``) before the job's events are released: a job COS does not know, or has in
another state, is held for good (unconfirmed). An item that names no bucket (document jobs may not) is
confirmed against the first source with ``confirm`` whose families include the job's (by its Tag). Workflow
runs and NonExistJobIds are not read back. What reconciliation records came from COS itself: never confirmed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from relay.domain.callback import Callback

#: The job families COS reads jobs back under (each its own path: /jobs, /pic_jobs, /asr_jobs, /doc_jobs,
#: /ai_jobs).
ConfirmFamily = Literal["media", "pictures", "speech", "documents", "ai"]
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
    """One job of a callback to read back from COS before its events are released."""

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
    """The jobs of ``callback`` that a source with ``confirm`` vouches for only once COS has read them back."""
    if not scopes:
        return ()
    chosen = []
    for job in callback.jobs:
        family = family_of(job.tag)
        scope = next(
            (
                scope
                for scope in scopes
                if scope.bucket == job.bucket or (job.bucket is None and family in scope.families)
            ),
            None,
        )
        if scope is not None:
            chosen.append(ToConfirm(job.dedup_key, job.job_id, job.state, scope.source, family))
    return tuple(chosen)


def verdict(waiting: ToConfirm, answered: dict[str, str]) -> Verdict:
    """``waiting`` judged by COS's answer (job id -> its state; ids COS does not know absent)."""
    seen = answered.get(waiting.job_id)
    if seen is None:
        return Verdict(waiting.item_key, waiting.job_id, "nonexistent")
    if seen != waiting.state:
        return Verdict(waiting.item_key, waiting.job_id, "state_differs", seen)
    return Verdict(waiting.item_key, waiting.job_id, None, seen)
