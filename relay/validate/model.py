"""Plain-Python compiled schema model: what the fast validator walks at ingest time."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, final


@final
class _Empty:
    """Marker for an empty leaf or container; dropped from converted output."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "EMPTY"

    def __reduce__(self) -> str:
        # Unpickled as this module's EMPTY, not a copy: the walker tests `is EMPTY`.
        return "EMPTY"


EMPTY: Final = _Empty()


class CheckFailed(Exception):
    """A simple-type check failed.

    `stage` ranks how far the value got (1 lexical, 2 value bounds, 3 assertion) so that a union
    reports the member error that came closest, e.g. "not a date" rather than "not one of '', '-'".
    """

    def __init__(self, rule: str, stage: int) -> None:
        super().__init__(rule)
        self.rule = rule
        self.stage = stage

    def __reduce__(self) -> tuple[type[CheckFailed], tuple[str, int]]:
        # A compiled schema holds some (an empty element's precomputed outcome) and is pickled.
        return (CheckFailed, (self.rule, self.stage))


# Converts the raw text of a simple-typed element to its typed value (or EMPTY); raises CheckFailed.
Converter = Callable[[str], object]
# A compiled xs:assert on element content: sees child name -> converted value (before empty ones
# are dropped, so presence is exact) and returns a rule when the assertion is false.
ContentCheck = Callable[[Mapping[str, object]], str | None]


# How the walker treats a leaf before calling its converter. TEXT: plain xs:string, the text is
# the value. INTEGER / DECIMAL: the type is exactly the XSD lexical integer / decimal pattern on
# xs:integer / xs:decimal, so ASCII digits (with one dot for decimals) are known to match it and
# are converted inline; anything else goes through the converter. OTHER: always the converter.
TEXT: Final = 0
INTEGER: Final = 1
DECIMAL: Final = 2
OTHER: Final = 3


@dataclass(frozen=True, slots=True)
class SimpleSpec:
    name: str
    # None only for TEXT.
    convert: Converter | None
    # Precomputed outcome for an empty element ("" text): a value, EMPTY, or the CheckFailed to raise.
    empty: object
    kind: int = OTHER


@dataclass(slots=True, eq=False)
class ComplexSpec:
    """Element-only content (xs:all), filled in after creation so recursive types work."""

    name: str
    children: dict[str, ChildSpec] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    # Children whose count needs checking beyond presence (minOccurs > 1 or finite maxOccurs > 1).
    counted: tuple[ChildSpec, ...] = ()
    # True when a skip wildcard admits undeclared (no-namespace) children.
    open: bool = False
    checks: tuple[tuple[str, ContentCheck], ...] = ()
    # Any of required / counted / checks: lets the walker skip three empty loops.
    constrained: bool = False
    # Hot-path view of `children`: name -> (complex spec | None, converter | None, empty outcome,
    # many, leaf kind). See SimpleSpec.
    table: dict[str, Entry] = field(default_factory=dict)


Entry = tuple["ComplexSpec | None", Converter | None, object, bool, int]


@dataclass(frozen=True, slots=True)
class ChildSpec:
    name: str
    min_occurs: int
    max_occurs: int | None
    many: bool  # declared maxOccurs > 1: always converted to a list
    simple: SimpleSpec | None
    complex: ComplexSpec | None


@dataclass(frozen=True, slots=True)
class Policy:
    """Subtree rules (root xs:assert) that also govern skipped wildcard content."""

    no_attributes: bool = False
    no_namespaces: bool = False
    no_mixed: bool = False


@dataclass(frozen=True, slots=True)
class CompiledSchema:
    root_name: str
    root: ComplexSpec
    policy: Policy


def describe(value: Any, limit: int = 60) -> str:
    """repr() of an offending value, shortened for violation messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"
