"""Python twins of the XSD 1.1 assertions in cos-callback.xsd, keyed by their exact test text.

XPath is not compiled in general: each assertion the schema uses is re-implemented here, and the
compiler refuses any test string missing from these tables, so the fast path can never silently
ignore an assertion the reference validator enforces.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from relay.validate.model import ContentCheck


@dataclass(frozen=True)
class ValueAssertion:
    """xs:assertion facet on a string-valued simple type."""

    holds: Callable[[str], bool]
    rule: Callable[[str], str]


def _date_prefix_is_real(value: str) -> bool:
    # Twin of `substring($value, 1, 10) castable as xs:date` for years 0001-9999 (the timestamp
    # patterns require >= 1000, which also keeps out XSD 1.1's year 0000). With dashes at 4 and 7,
    # a 10-character string is only accepted by fromisoformat as YYYY-MM-DD in ASCII digits with a
    # day that exists in that month (proleptic Gregorian, like xs:date). No regex: hot path.
    head = value[:10]
    if len(head) != 10 or head[4] != "-" or head[7] != "-":
        return False
    try:
        _from_iso(head)
    except ValueError:
        return False
    return True


_from_iso: Final = datetime.date.fromisoformat


def _not_a_date(value: str) -> str:
    return f"not a date: {value}"


VALUE_ASSERTIONS: Final[Mapping[str, ValueAssertion]] = {
    "substring($value, 1, 10) castable as xs:date": ValueAssertion(holds=_date_prefix_is_real, rule=_not_a_date),
}


def _payload_present(content: Mapping[str, object]) -> str | None:
    if "JobsDetail" in content or "WorkflowExecution" in content or "NonExistJobIds" in content:
        return None
    return "no JobsDetail, WorkflowExecution or NonExistJobIds: not a callback payload"


# xs:assert on element content, evaluated once the children are known.
CONTENT_ASSERTIONS: Final[Mapping[str, ContentCheck]] = {
    "exists(JobsDetail | WorkflowExecution | NonExistJobIds)": _payload_present,
}

# xs:assert over the whole subtree, only allowed on the root type. The walker enforces them at
# every element (they matter for skipped wildcard content: declared types already forbid these),
# so each maps to a Policy flag name.
SUBTREE_ASSERTIONS: Final[Mapping[str, str]] = {
    "empty(.//@*)": "no_attributes",
    "empty(.//*[namespace-uri() != ''])": "no_namespaces",
    "empty(.//*[* and text()[normalize-space()]])": "no_mixed",
}

# Human wording for the reference validator, which only says "assertion test is false".
ASSERTION_RULES: Final[Mapping[str, str]] = {
    "exists(JobsDetail | WorkflowExecution | NonExistJobIds)": (
        "no JobsDetail, WorkflowExecution or NonExistJobIds: not a callback payload"
    ),
    "empty(.//@*)": "attributes are not allowed anywhere",
    "empty(.//*[namespace-uri() != ''])": "namespaced elements are not allowed anywhere",
    "empty(.//*[* and text()[normalize-space()]])": "text mixed with child elements is not allowed",
}
