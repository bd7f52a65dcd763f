"""Plain values that only the store's interface uses (the rest are domain types)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

#: How a commit reaches the disk: the SQLite ``synchronous`` level (``normal`` in WAL mode, or ``full``).
Durability = Literal["normal", "full"]


@dataclass(frozen=True)
class Page:
    """One page of a newest-first listing; ``cursor`` fetches the next page, ``None`` at the end."""

    items: list[dict[str, Any]]
    cursor: str | None


#: The URL schemes that mean PostgreSQL; anything else given as ``--db`` is an SQLite file path.
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


@dataclass(frozen=True)
class PostgresUrl:
    """Where a PostgreSQL database is: never mistaken for a file path, and shown without its password."""

    url: str

    def __post_init__(self) -> None:
        if not self.url.startswith(POSTGRES_SCHEMES):
            raise ValueError(f"a PostgreSQL URL starts with {' or '.join(POSTGRES_SCHEMES)}")

    def __str__(self) -> str:
        return self.redacted

    @property
    def redacted(self) -> str:
        scheme, _, rest = self.url.partition("://")
        credentials, at, host = rest.rpartition("@")
        if not at or ":" not in credentials:
            return self.url
        return f"{scheme}://{credentials.partition(':')[0]}:***@{host}"


#: What ``--db`` names: an SQLite file, or a PostgreSQL database.
Target = Path | PostgresUrl


def target_of(text: str) -> Target:
    """``--db``'s text read as a PostgreSQL URL or an SQLite path."""
    return PostgresUrl(text) if text.startswith(POSTGRES_SCHEMES) else Path(text)
