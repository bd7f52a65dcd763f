"""A job's typed detail as stored: without the pieces a column of its own already holds.

A JobsDetail's ``Message`` and ``Code`` are kept once, in the job's history (``job_states``; the job's row
reads its current state's through ``jobs.state_id``), and its input's object key in ``jobs.object_key``. The
stored detail has ``null`` in their place, so that its keys keep their order, and `whole` puts them back on
reading. Only a value equal to its column's is left out: whatever else a body carries is stored as it came.

A detail past `SPLIT_BYTES` is stored whole: reading it back is then never a parse of megabytes (the API
splices a detail into its answer as stored), and the pieces held twice are a small part of it.
"""

from __future__ import annotations

from typing import Any

import orjson

from relay.domain.callback import JobState, JsonObject
from relay.store.rows import Row

#: Where each held piece sits in a JobsDetail, and the column (of the job's row as read) that holds it.
HELD: tuple[tuple[tuple[str, ...], str], ...] = (
    (("Message",), "message"),
    (("Code",), "code"),
    (("Input", "Object"), "object_key"),
)
#: The largest detail stored without its held pieces (real ones are 1-3 KB).
SPLIT_BYTES = 64 * 1024


def stored(job: JobState) -> bytes:
    """``job.detail`` as JSON to store: each held piece that its column holds as is replaced by ``null``."""
    detail = dict(job.detail)  # a copy: the detail is also the event's data
    for path, column in HELD:
        parent = detail
        for key in path[:-1]:
            child = parent.get(key)
            if not isinstance(child, dict):
                break
            parent[key] = dict(child)
            parent = parent[key]
        else:
            value = parent.get(path[-1])
            if isinstance(value, str) and value == getattr(job, column):
                parent[path[-1]] = None
    text = orjson.dumps(detail)
    return text if len(text) <= SPLIT_BYTES else orjson.dumps(job.detail)


def whole(text: bytes, row: Row) -> bytes:
    """The stored detail ``text`` as it came: each held piece filled from its column in ``row``."""
    if len(text) > SPLIT_BYTES:
        return text
    return orjson.dumps(filled(orjson.loads(text), row))


def filled(detail: JsonObject, row: Row) -> JsonObject:
    """``detail`` (parsed) with each held piece left as ``null`` taken from its column in ``row``, in place. A
    ``null`` the body itself carried stays one: its column is empty too."""
    for path, column in HELD:
        parent: Any = detail
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if isinstance(parent, dict) and path[-1] in parent and parent[path[-1]] is None:
            parent[path[-1]] = row[column]
    return detail
