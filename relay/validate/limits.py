"""How much work one callback body may cause: node, depth and item limits no real COS callback comes near.

The real callbacks (tests/data/samples, FORMAT.md) have at most ~110 elements, 8 levels and a few
JobsDetail; COS sends at most tens of JobsDetail in one body, and a long speech recognition result with
word timings (the largest body FORMAT.md expects, "hundreds of KB") has some tens of thousands of
elements. Without limits, 10 MB of small elements or of ``null`` made the gateway build millions of nodes
(seconds of CPU, hundreds of MiB) before it could refuse or store them.

The node count is an upper bound read from the raw bytes with ``bytes.count`` (C speed), so a body over
the limit is refused before a parser builds anything.
"""

from __future__ import annotations

from typing import Final, Literal

from lxml import etree

from relay.domain.callback import Callback
from relay.domain.errors import Invalid, TooComplex

#: XML elements and attributes, or JSON values, in one body.
MAX_NODES: Final = 200_000
#: Levels of nesting, the root element (or JSON object) being level 1.
MAX_DEPTH: Final = 64
#: JobsDetail, WorkflowExecution and NonExistJobIds entries (job ids) in one callback.
MAX_ITEMS: Final = 500

# True when some element sits deeper than MAX_DEPTH; evaluated by libxml2, without a Python loop. Shared by
# threads: lxml serialises the evaluations of one XPath object with a lock of its own.
_TOO_DEEP: Final = etree.XPath("boolean(/*" + "/*" * MAX_DEPTH + ")")


def nodes(body: bytes, fmt: Literal["xml", "json"]) -> int:
    """An upper bound on the nodes parsing ``body`` builds.

    XML: every element has exactly one start (or empty-element) tag, so ``<`` minus ``</``, and every
    attribute one ``=``; markup-like text in comments and CDATA only raises the count. JSON: the XML
    tree of a JSON body has one element per key and per array item, which is at most one per ``,``
    ``{`` and ``[`` (each object or array adds one member more than its commas); text in strings only
    raises the count.
    """
    if fmt == "json":
        return body.count(b",") + body.count(b"{") + body.count(b"[")
    return body.count(b"<") - body.count(b"</") + body.count(b"=")


def check_nodes(body: bytes, fmt: Literal["xml", "json"]) -> int:
    """The node bound of ``body``; raises `TooComplex` past `MAX_NODES`."""
    found = nodes(body, fmt)
    if found > MAX_NODES:
        raise TooComplex(f"the body has more than {MAX_NODES:,} elements, attributes or values")
    return found


def check_depth(root: etree._Element, found_nodes: int) -> None:
    """Raise `TooComplex` when an element of an XML tree is nested deeper than `MAX_DEPTH`."""
    if found_nodes > MAX_DEPTH and _TOO_DEEP(root):
        raise TooComplex(f"the body is nested deeper than {MAX_DEPTH} levels")


def check_items(callback: Callback) -> None:
    """Raise `Invalid` when a callback carries more than `MAX_ITEMS` jobs, workflow runs and job ids."""
    items = len(callback.jobs) + len(callback.workflows) + len(callback.nonexistent_job_ids)
    if items > MAX_ITEMS:
        raise Invalid(
            f"the callback carries {items:,} jobs, workflow runs and job ids; at most {MAX_ITEMS} are accepted",
            path="/Response",
            rule=f"at most {MAX_ITEMS} JobsDetail, WorkflowExecution and NonExistJobIds entries",
        )
