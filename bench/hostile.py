"""Callback bodies of each hostile shape, as large as the size cap allows (bench/stall.py and the tests).

Each builder takes the byte budget (the gateway's ``--max-body``) and fills it: the most work one body of
that shape can ask for. ``widest_legal`` is the heaviest body the gateway accepts: the most items and
nodes the limits allow, padded with text to the cap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from relay.settings.table import MIB
from relay.validate.limits import MAX_DEPTH, MAX_ITEMS, MAX_NODES

#: The gateway's default size cap (``--max-body``).
CAP = 10 * MIB
#: libxml2 refuses XML nested deeper than this (without huge_tree); hostile XML stays just within it.
LIBXML2_DEPTH = 256
#: The smallest JobsDetail the schema accepts (JobId, State, Tag), with a distinct JobId.
_JOB = b"<JobsDetail><JobId>j%08d</JobId><State>Success</State><Tag>Transcode</Tag></JobsDetail>"
_HEAD = b"<Response><EventName>TaskFinish</EventName>"
_TAIL = b"</Response>"


def jobs_detail(budget: int = CAP, count: int | None = None) -> bytes:
    """As many minimal JobsDetail as fit in ``budget`` bytes (or exactly ``count`` of them)."""
    if count is None:
        count = (budget - len(_HEAD) - len(_TAIL)) // len(_JOB % 0)
    return _HEAD + b"".join(_JOB % number for number in range(count)) + _TAIL


def xml_deep(budget: int = CAP, depth: int = LIBXML2_DEPTH - 10) -> bytes:
    """Subtrees ``depth`` levels deep, side by side in one unknown (wildcard) element, filling ``budget``."""
    head = b"<Response><NonExistJobIds>j0000001</NonExistJobIds><Extra>"
    tail = b"</Extra></Response>"
    unit = b"<a>" * depth + b"x" + b"</a>" * depth
    return head + unit * ((budget - len(head) - len(tail)) // len(unit)) + tail


def json_nulls(budget: int = CAP) -> bytes:
    """A JSON callback whose unknown key holds an array of ``null``, filling ``budget``."""
    head, tail = b'{"NonExistJobIds":"j0000001","Extra":[', b"]}"
    count = (budget - len(head) - len(tail) + 1) // 5
    return head + b",".join([b"null"] * count) + tail


def json_deep(budget: int = CAP, depth: int = LIBXML2_DEPTH - 10) -> bytes:
    """JSON objects ``depth`` levels deep, side by side in an array, filling ``budget``."""
    head, tail = b'{"NonExistJobIds":"j0000001","Extra":[', b"]}"
    unit = b'{"a":' * depth + b"1" + b"}" * depth
    count = (budget - len(head) - len(tail) + 1) // (len(unit) + 1)
    return head + b",".join([unit] * count) + tail


def widest_legal(budget: int = CAP) -> bytes:
    """The heaviest body the limits let through: `MAX_ITEMS` JobsDetail holding `MAX_NODES` elements
    in all, nested `MAX_DEPTH` deep, their text filling ``budget``."""
    # Per job: JobsDetail, JobId, State, Tag, Extra, then `per_job` leaves and a chain to MAX_DEPTH.
    chain = MAX_DEPTH - 3  # Response > JobsDetail > Extra > chain...
    per_job = (MAX_NODES - 2) // MAX_ITEMS - 5 - chain
    skeleton = jobs_detail(count=MAX_ITEMS)
    empty_extra = b"<Extra>" + b"<V></V>" * per_job + b"<c>" * chain + b"</c>" * chain + b"</Extra>"
    fill = max(0, (budget - len(skeleton) - MAX_ITEMS * len(empty_extra)) // (MAX_ITEMS * per_job))
    extra = b"<Extra>" + (b"<V>" + b"x" * fill + b"</V>") * per_job + b"<c>" * chain + b"</c>" * chain + b"</Extra>"
    jobs = b"".join((_JOB % number).replace(b"</JobsDetail>", extra + b"</JobsDetail>") for number in range(MAX_ITEMS))
    return _HEAD + jobs + _TAIL


@dataclass(frozen=True)
class Shape:
    name: str
    build: Callable[[int], bytes]
    content_type: str
    #: What this shape is for, in the report.
    about: str


SHAPES = (
    Shape("jobs-detail", jobs_detail, "application/xml", "minimal JobsDetail, as many as fit"),
    Shape("xml-deep", xml_deep, "application/xml", f"subtrees {LIBXML2_DEPTH - 10} deep, side by side"),
    Shape("json-nulls", json_nulls, "application/json", "an array of null"),
    Shape("json-deep", json_deep, "application/json", f"objects {LIBXML2_DEPTH - 10} deep, side by side"),
    Shape("widest-legal", widest_legal, "application/xml", "the most items, nodes and depth the limits accept"),
)
