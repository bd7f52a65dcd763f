"""Plain values that cross the store's interface."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

Outcome = Literal["accepted", "duplicate"]


@dataclass(frozen=True)
class Received:
    """A request body and where it came from."""

    received_at: datetime
    source_addr: str | None
    content_type: str | None
    body: bytes
    format: str  # xml | json | unknown


@dataclass(frozen=True)
class IngestResult:
    """What recording one callback did."""

    callback_id: int
    outcome: Outcome
    #: Dedup keys of the items this callback added (empty for a pure duplicate).
    new_items: tuple[str, ...]


@dataclass(frozen=True)
class Page:
    """One page of a newest-first listing; ``cursor`` fetches the next page, ``None`` at the end."""

    items: list[dict[str, Any]]
    cursor: str | None
