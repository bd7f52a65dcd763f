"""The store: the durable record of callbacks, jobs, workflows and the outbox, on SQLite or PostgreSQL.

`Store` is the interface everything above depends on (relay/store/interface.py); `store_for` picks the
implementation from what ``--db`` names: a ``postgresql://`` URL, or an SQLite file path.
"""

from __future__ import annotations

from relay.store.interface import Store
from relay.store.records import Durability, PostgresUrl, Target
from relay.store.sealing import Sealer
from relay.store.sqlite.store import SqliteStore
from relay.store.sqlite.writer import Observer

__all__ = ["SqliteStore", "Store", "store_for"]


def store_for(
    target: Target,
    *,
    create: bool = True,
    durability: Durability = "normal",
    write_timeout: float = 5.0,
    pool_size: int = 10,
    statement_timeout: float = 5.0,
    observe: Observer | None = None,
    sealer: Sealer | None = None,
) -> Store:
    """The store for ``target``, not yet opened. ``durability`` and ``write_timeout`` apply to SQLite,
    ``pool_size`` and ``statement_timeout`` to PostgreSQL; ``sealer`` (none: clear) seals secrets on both."""
    if isinstance(target, PostgresUrl):
        # Imported here: asyncpg and the PostgreSQL backend are a tenth of a second of every start on SQLite.
        from relay.store.postgres.store import PostgresStore

        return PostgresStore(
            target,
            pool_size=pool_size,
            statement_timeout=statement_timeout,
            observe=observe,
            create=create,
            sealer=sealer,
        )
    return SqliteStore(
        target, durability=durability, write_timeout=write_timeout, observe=observe, create=create, sealer=sealer
    )
