"""Retention: what may be removed, and when: the rule, stated once.

The store's pruning SQL (`relay.store.ops.retention`) applies it through indexes, a bounded batch at a time,
and cannot call these predicates row by row without reading every row it keeps. So they are its oracle:
``tests/rules/test_retention.py::test_the_store_prunes_exactly_the_rows_the_domain_rules_let_go`` prunes a store
holding every kind in every state, on both backends, and checks each row kept or removed against them.

Two windows. Raw callbacks (accepted, duplicate and quarantined) with their dedup keys, finished
deliveries with their attempts, and events no delivery still needs go once older than the raw window.
Job and workflow records (latest state, state history, NonExistJobIds) go once older than the job window.
A delivery still owed (pending, in flight, retrying, held for a paused or disabled subscriber, waiting for COS
to confirm its job) is never removed, whatever its age, and neither is the event it needs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

#: Delivery states that are over: nothing will attempt them again unless an operator requeues them.
FINISHED = ("delivered", "dead", "cancelled", "dropped", "unconfirmed")
#: Delivery states still owed to a subscriber. Retrying and held deliveries are ``pending``; one whose job COS
#: has not confirmed yet is ``confirming`` (owed once COS confirms it). An ``unconfirmed`` one is not owed: COS
#: does not know its job in that state, so it goes with the raw window unless an admin releases it first.
OWED = ("pending", "in_flight", "confirming")

#: What a prune removes, in the order it reports them.
KINDS = (
    "callbacks",
    "dedup_keys",
    "deliveries",
    "attempts",
    "events",
    "jobs",
    "job_states",
    "workflows",
    "workflow_states",
    "nonexistent_job_ids",
)


@dataclass(frozen=True)
class Windows:
    """How long each kind is kept; None keeps it forever."""

    raw: timedelta | None
    jobs: timedelta | None

    @classmethod
    def of_seconds(cls, raw: float, jobs: float) -> Windows:
        """From settings, where infinity ("forever") keeps a kind forever and 0 keeps nothing older than now."""
        return cls(
            timedelta(seconds=raw) if math.isfinite(raw) else None,
            timedelta(seconds=jobs) if math.isfinite(jobs) else None,
        )

    def cutoffs(self, now: datetime) -> Cutoffs:
        return Cutoffs(
            raw=now - self.raw if self.raw is not None else None,
            jobs=now - self.jobs if self.jobs is not None else None,
        )


@dataclass(frozen=True)
class Cutoffs:
    """Rows stamped strictly before these instants may go (None: none may)."""

    raw: datetime | None
    jobs: datetime | None


def _before(stamp: datetime, cutoff: datetime | None) -> bool:
    return cutoff is not None and stamp < cutoff


def delivery_may_go(state: str, created_at: datetime, cutoffs: Cutoffs) -> bool:
    """A delivery goes (with its attempts) once finished and created before the raw cutoff; an owed one never."""
    return state in FINISHED and _before(created_at, cutoffs.raw)


def event_may_go(created_at: datetime, deliveries_left: int, cutoffs: Cutoffs) -> bool:
    """An event goes once old and no delivery is left to need it: every one it had has gone (or it had none)."""
    return _before(created_at, cutoffs.raw) and deliveries_left == 0


def callback_may_go(received_at: datetime, cutoffs: Cutoffs) -> bool:
    """A raw callback (and its dedup keys) goes by age alone: events carry their own body."""
    return _before(received_at, cutoffs.raw)


def job_record_may_go(stamped_at: datetime, cutoffs: Cutoffs) -> bool:
    """A job or workflow's latest state (by its last update), or one entry of its history (by its receipt). A
    job's current entry is stamped as the job (its receipt is the job's last update), so they go together: the
    job reads its Code and Message there."""
    return _before(stamped_at, cutoffs.jobs)


@dataclass
class Pruned:
    """Rows removed (or, in a dry run, that would be), per kind."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))

    def add(self, counts: Mapping[str, int]) -> None:
        for kind, count in counts.items():
            self.counts[kind] += count

    @property
    def total(self) -> int:
        return sum(self.counts.values())
