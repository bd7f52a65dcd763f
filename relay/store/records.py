"""Plain values that only the store's interface uses (the rest are domain types)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

#: How a commit reaches the disk: the SQLite ``synchronous`` level (``normal`` in WAL mode, or ``full``).
Durability = Literal["normal", "full"]


@dataclass(frozen=True)
class Page:
    """One page of a newest-first listing; ``cursor`` fetches the next page, ``None`` at the end."""

    items: list[dict[str, Any]]
    cursor: str | None
