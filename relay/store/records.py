"""Plain values that only the store's interface uses (the rest are domain types)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Generic, Literal, TypedDict, TypeVar

from relay.domain.destinations import ContentMode, Kind, Rate

#: How a commit reaches the disk: the SQLite ``synchronous`` level (``normal`` in WAL mode, or ``full``).
Durability = Literal["normal", "full"]


Item = TypeVar("Item")


@dataclass(frozen=True)
class Page(Generic[Item]):
    """One page of a newest-first listing (its items: `relay.store.answers`); ``cursor`` fetches the next page,
    ``None`` at the end."""

    items: list[Item]
    cursor: str | None


class SubscriberChanges(TypedDict, total=False):
    """What `Store.update_subscriber` may change, checked by the service first (`relay.outbox.service`).

    ``secret`` replaces the signing secret outright (a change of kind, never a rotation): the previous secret and
    its grace end with it, so it never signs again.
    """

    url: str
    types: Sequence[str]
    filters: Mapping[str, str]
    max_in_flight: int
    timeout: float
    retry_schedule: Sequence[float] | None
    source: str
    store_response: bool
    kind: Kind
    rate: Rate | None
    handshake: bool
    content_mode: ContentMode
    template: str | None
    secret: str


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


#: The tokens kept in the database (`relay.http.auth`): the one COS sends, the one for the API and the console.
TOKENS = ("callback_token", "admin_token")


def previous_of(name: str) -> str:
    """The name the token ``name`` is kept under after a rotation, for its grace."""
    return f"previous_{name}"


@dataclass(frozen=True)
class StoredToken:
    """What the database knows of one token (``callback_token`` or ``admin_token``).

    ``value`` is the one kept there (None: none). ``previous`` is the one before the last rotation, still
    accepted until ``previous_until`` (None once that passed, or when none is). ``source`` is where the last
    start (or rotation) found the token in force (``database``, ``RELAY_ADMIN_TOKEN``, ``--admin-token``, None
    before any), and ``fingerprint`` that token's SHA-256: never the token itself.
    """

    value: str | None = None
    previous: str | None = None
    previous_until: datetime | None = None
    source: str | None = None
    fingerprint: str | None = None
