"""XSD builtins, whitespace rules and facet checks, evaluated the way xmlschema evaluates them.

Not the XSD spec's wording: whitespace is Python whitespace (xmlschema normalizes with `\\s` and
`str.strip`), xs:integer is `int()` and xs:decimal is xmlschema's regex + "finite as a float".
cos-callback.xsd restricts numbers with the exact XSD lexical patterns, so these quirks never
widen what it accepts; reproducing them keeps the fast path in lockstep with the reference.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from decimal import Decimal
from functools import partial
from typing import Any, Final

from relay.validate.model import CheckFailed, describe

XS: Final = "{http://www.w3.org/2001/XMLSchema}"

_SPACE: Final = re.compile(r"\s")
_SPACES: Final = re.compile(r"\s+")
_DECIMAL: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_BOOLEANS: Final = {"true": True, "false": False, "1": True, "0": False}

# A value check after conversion: gets (typed value, normalized text), raises CheckFailed.
Check = Callable[[Any, str], None]
# One pattern facet step: its regexes (any may match) and their XSD source for messages.
Group = tuple[tuple[re.Pattern[str], ...], str]


def replace_whitespace(text: str) -> str:
    # isprintable() is False for every whitespace character except the ASCII space.
    return text if text.isprintable() else _SPACE.sub(" ", text)


def collapse(text: str) -> str:
    if text.isprintable() and " " not in text:
        return text
    return _SPACES.sub(" ", text).strip()


NORMALIZERS: Final[dict[str, Callable[[str], str] | None]] = {
    "preserve": None,
    "replace": replace_whitespace,
    "collapse": collapse,
}


def _to_integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise CheckFailed(f"not an integer: {describe(text)}", 1) from None


def _to_decimal(text: str) -> float:
    compact = text.replace(" ", "")
    if _DECIMAL.fullmatch(compact) is None:
        raise CheckFailed(f"not a decimal: {describe(text)}", 1)
    value = float(compact)
    if math.isinf(value):
        raise CheckFailed(f"decimal out of range: {describe(text)}", 2)
    return value


def _to_boolean(text: str) -> bool:
    try:
        return _BOOLEANS[text]
    except KeyError:
        raise CheckFailed(f"not a boolean (true/false/1/0): {describe(text)}", 1) from None


def _to_string(text: str) -> str:
    return text


# The exact XSD lexical forms of xs:integer / xs:decimal, as the schema restates them in patterns.
# Types carrying one get a specialised converter that skips provably redundant work.
INTEGER_LEXICAL: Final = r"[+\-]?[0-9]+"
DECIMAL_LEXICAL: Final = r"[+\-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)"

STRINGS: Final = frozenset({XS + "string", XS + "normalizedString", XS + "token"})
BUILTINS: Final[dict[str, Callable[[str], object]]] = {
    XS + "string": _to_string,
    XS + "normalizedString": _to_string,
    XS + "token": _to_string,
    XS + "integer": _to_integer,
    XS + "decimal": _to_decimal,
    XS + "boolean": _to_boolean,
}


def _outside(allowed: frozenset[str], shown: str, value: Any, text: str) -> None:
    if value not in allowed:
        raise CheckFailed(f"value {describe(text)} is not one of {shown}", 1)


def _breaks_length(kind: str, limit: int, value: Any, text: str) -> None:
    size = len(text)
    if (
        (kind == "length" and size != limit)
        or (kind == "minLength" and size < limit)
        or (kind == "maxLength" and size > limit)
    ):
        raise CheckFailed(f"value {describe(text)} breaks {kind} {limit}", 1)


def _breaks_bound(kind: str, limit: Any, exact: bool, value: Any, text: str) -> None:
    # Decimals are compared exactly, as xmlschema does; the float output may have rounded.
    number = Decimal(text.replace(" ", "")) if exact else value
    broken = (
        (kind == "minInclusive" and number < limit)
        or (kind == "maxInclusive" and number > limit)
        or (kind == "minExclusive" and number <= limit)
        or (kind == "maxExclusive" and number >= limit)
    )
    if broken:
        raise CheckFailed(f"value {text} breaks {kind} {limit}", 2)


# The checks are module functions bound with partial, not closures, so a compiled schema pickles.
def enumeration_check(allowed: frozenset[str], ordered: list[str]) -> Check:
    return partial(_outside, allowed, ", ".join(item if item else "''" for item in ordered))


def length_check(kind: str, limit: int) -> Check:
    return partial(_breaks_length, kind, limit)


def bound_check(kind: str, limit: Any, *, exact: bool) -> Check:
    return partial(_breaks_bound, kind, limit, exact)
