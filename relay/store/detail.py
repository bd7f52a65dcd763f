"""Job and workflow details as stored: without the pieces a column of their own already holds.

A JobsDetail's ``Message`` and ``Code`` are kept once, in the job's history (``job_states``; the job's row
reads its current state's through ``jobs.state_id``), and its input's object key in ``jobs.object_key``; a
WorkflowExecution's ``Object`` in ``workflow_runs.object_key``. The stored detail has ``null`` in their place,
so that its keys keep their order, and `filled` puts them back on reading. Only a value equal to its column's
is left out: whatever else a body carries is stored as it came.

A job's detail past `SPLIT_BYTES` is stored whole: reading it back is then never a parse of megabytes (the API
splices a job's detail into its answer as stored), and the pieces held twice are a small part of it.
"""

from __future__ import annotations

from typing import Any

import orjson

from relay.domain.callback import JobState, JsonObject, WorkflowRun
from relay.store.rows import Row

#: A held piece: where it sits in a detail, and the column (of the row as read, and of the domain object as
#: recorded) that holds it.
Held = tuple[tuple[tuple[str, ...], str], ...]
JOB_HELD: Held = ((("Message",), "message"), (("Code",), "code"), (("Input", "Object"), "object_key"))
RUN_HELD: Held = ((("Object",), "object_key"),)
#: The largest job detail stored without its held pieces (real ones are 1-3 KB).
SPLIT_BYTES = 64 * 1024


def without(detail: JsonObject, held: Held, holder: JobState | WorkflowRun) -> JsonObject:
    """A copy of ``detail`` (it is the event's data too) with each piece that ``holder`` holds as is replaced by
    ``null``."""
    kept = dict(detail)
    for path, column in held:
        parent = kept
        for key in path[:-1]:
            child = parent.get(key)
            if not isinstance(child, dict):
                break
            parent[key] = dict(child)
            parent = parent[key]
        else:
            value = parent.get(path[-1])
            if isinstance(value, str) and value == getattr(holder, column):
                parent[path[-1]] = None
    return kept


def stored(job: JobState) -> bytes:
    """A job's detail as JSON to store: without its held pieces, unless it is past `SPLIT_BYTES`."""
    text = orjson.dumps(without(job.detail, JOB_HELD, job))
    return text if len(text) <= SPLIT_BYTES else orjson.dumps(job.detail)


def whole(text: bytes, row: Row) -> bytes:
    """A job's stored detail ``text`` as it came: each held piece filled from its column in ``row``."""
    if len(text) > SPLIT_BYTES:
        return text
    return orjson.dumps(filled(orjson.loads(text), row))


def filled(detail: JsonObject, row: Row, held: Held = JOB_HELD) -> JsonObject:
    """``detail`` (parsed) with each held piece left as ``null`` taken from its column in ``row``, in place. A
    ``null`` the body itself carried stays one: its column is empty too."""
    for path, column in held:
        parent: Any = detail
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if isinstance(parent, dict) and path[-1] in parent and parent[path[-1]] is None:
            parent[path[-1]] = row[column]
    return detail
