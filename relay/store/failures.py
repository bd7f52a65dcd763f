"""Why a store call failed, the same for both backends: callers never see a driver's own exceptions."""

from __future__ import annotations


class StoreError(Exception):
    """The database could not do what was asked."""


class StoreUnavailable(StoreError):
    """Unreachable, read-only, locked past the timeout, full: nothing was written; try again later.

    ``kind`` is a bounded label (locked, busy, readonly, full, io, unreachable, timeout, other).
    """

    def __init__(self, message: str, kind: str = "other") -> None:
        super().__init__(message)
        self.kind = kind


class StoreConflict(StoreError):
    """A uniqueness rule refused the write (a live subscriber already has that name)."""


class NoFolder(Exception):
    """The folder a new SQLite file would go in does not exist: a typo in the path, most likely. Never created:
    a new, empty database with new tokens in a mistyped folder would leave COS answered 401."""

    def __init__(self, folder: object) -> None:
        super().__init__(f"the folder {folder} does not exist: create it first, or fix --db (RELAY_DB)")


class UncopiableRow(StoreError):
    """A row one backend holds that the other cannot store (`cos-relay migrate-to`): names the table, the row
    and why, in one line."""


class NoDatabase(Exception):
    """A command that only reads or manages a database was pointed at a path (or URL) with none."""

    def __init__(self, path: object) -> None:
        super().__init__(
            f"no database at {path}: start `cos-relay serve --db {path}` first, or pass --db (or RELAY_DB) "
            "naming the database the server uses"
        )


class BackupRefused(Exception):
    """`Store.backup` cannot write to that target: the file exists, its folder does not, or the backend has its
    own tools (PostgreSQL: pg_dump). One line saying what to do instead."""
