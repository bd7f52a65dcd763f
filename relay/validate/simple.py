"""Compile xmlschema simple types into plain converter closures (runs once, at load time).

Each builtin is reproduced the way xmlschema evaluates it, not the way the XSD spec words it:
whitespace is Python whitespace (xmlschema normalizes with `\\s` and `str.strip`), xs:integer is
`int()` and xs:decimal is xmlschema's regex + "finite as a float". The schema's own patterns
restrict the lexical forms further, so those quirks never widen what the schema accepts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Final

from xmlschema.validators import XsdAtomicBuiltin, XsdAtomicRestriction, XsdUnion

from relay.validate.assertions import VALUE_ASSERTIONS
from relay.validate.model import EMPTY, Converter, Invalid, SimpleSpec, describe

XS: Final = "{http://www.w3.org/2001/XMLSchema}"

_SPACE: Final = re.compile(r"\s")
_SPACES: Final = re.compile(r"\s+")
_DECIMAL: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_BOOLEANS: Final = {"true": True, "false": False, "1": True, "0": False}

# A value check after conversion: gets (typed value, normalized text), raises Invalid.
Check = Callable[[Any, str], None]
# One pattern facet step: its regexes (any may match) and their XSD source for messages.
Group = tuple[tuple[re.Pattern[str], ...], str]


class UnsupportedSchema(Exception):
    """The XSD uses a construct the fast-path compiler does not implement."""


def _replace(text: str) -> str:
    # isprintable() is False for every whitespace character except the ASCII space.
    return text if text.isprintable() else _SPACE.sub(" ", text)


def _collapse(text: str) -> str:
    if text.isprintable() and " " not in text:
        return text
    return _SPACES.sub(" ", text).strip()


_NORMALIZERS: Final[dict[str, Callable[[str], str] | None]] = {
    "preserve": None,
    "replace": _replace,
    "collapse": _collapse,
}


def _to_integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise Invalid(f"not an integer: {describe(text)}", 1) from None


def _to_decimal(text: str) -> float:
    compact = text.replace(" ", "")
    if _DECIMAL.fullmatch(compact) is None:
        raise Invalid(f"not a decimal: {describe(text)}", 1)
    value = float(compact)
    if math.isinf(value):
        raise Invalid(f"decimal out of range: {describe(text)}", 2)
    return value


def _to_boolean(text: str) -> bool:
    try:
        return _BOOLEANS[text]
    except KeyError:
        raise Invalid(f"not a boolean (true/false/1/0): {describe(text)}", 1) from None


def _to_string(text: str) -> str:
    return text


# The exact XSD lexical forms of xs:integer / xs:decimal, as the schema restates them in patterns.
# Types carrying one get a specialised converter that skips provably redundant work.
_INTEGER_LEXICAL: Final = r"[+\-]?[0-9]+"
_DECIMAL_LEXICAL: Final = r"[+\-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)"
_INF: Final = math.inf

_STRINGS: Final = frozenset({XS + "string", XS + "normalizedString", XS + "token"})
_BUILTINS: Final[dict[str, Callable[[str], object]]] = {
    XS + "string": _to_string,
    XS + "normalizedString": _to_string,
    XS + "token": _to_string,
    XS + "integer": _to_integer,
    XS + "decimal": _to_decimal,
    XS + "boolean": _to_boolean,
}


def _label(xsd_type: Any) -> str:
    if xsd_type.local_name:
        return str(xsd_type.local_name)
    base = getattr(xsd_type, "base_type", None)
    return f"restriction of {_label(base)}" if base is not None else "anonymous type"


class SimpleCompiler:
    """Memoizing compiler from xmlschema simple types to `SimpleSpec`."""

    def __init__(self) -> None:
        self._done: dict[int, SimpleSpec] = {}

    def compile(self, xsd_type: Any) -> SimpleSpec:
        key = id(xsd_type)
        if key not in self._done:
            plain = isinstance(xsd_type, XsdAtomicBuiltin) and xsd_type.name == XS + "string"
            self._done[key] = SimpleSpec(
                name=_label(xsd_type),
                convert=None if plain else self._converter(xsd_type, prune=True),
                empty=_empty_outcome(self._converter(xsd_type, prune=False)),
            )
        return self._done[key]

    def _converter(self, xsd_type: Any, *, prune: bool) -> Converter:
        if isinstance(xsd_type, XsdUnion):
            members = xsd_type.member_types
            if prune:
                # The walker never hands "" to `convert` (empty elements use the precomputed
                # SimpleSpec.empty), so members accepting nothing but "" can be left out.
                members = [member for member in members if not _only_empty(member)] or members
            return _union([self._converter(member, prune=prune) for member in members])
        if isinstance(xsd_type, XsdAtomicBuiltin | XsdAtomicRestriction):
            return _atomic(xsd_type)
        raise UnsupportedSchema(f"simple type {_label(xsd_type)}: only atomic and union types")


def _only_empty(xsd_type: Any) -> bool:
    """A preserved string restricted to length 0: accepts "" and nothing else."""
    if not isinstance(xsd_type, XsdAtomicRestriction) or xsd_type.white_space != "preserve":
        return False
    for tag in (XS + "length", XS + "maxLength"):
        facet: Any = xsd_type.facets.get(tag)
        if facet is not None and int(facet.value) == 0:
            return True
    return False


def _empty_outcome(convert: Converter) -> object:
    try:
        value = convert("")
    except Invalid as err:
        return err
    return EMPTY if value == "" else value


def _union(members: list[Converter]) -> Converter:
    if len(members) == 1:
        return members[0]
    if len(members) == 2:
        first, second = members

        def convert_pair(text: str) -> object:
            try:
                return first(text)
            except Invalid as error:
                try:
                    return second(text)
                except Invalid as other:
                    raise (other if other.stage > error.stage else error) from None

        return convert_pair

    def convert(text: str) -> object:
        best: Invalid | None = None
        for member in members:
            try:
                return member(text)
            except Invalid as err:
                if best is None or err.stage > best.stage:
                    best = err
        assert best is not None
        raise best

    return convert


def _atomic(xsd_type: Any) -> Converter:
    label = _label(xsd_type)
    facets = _Facets()
    step = xsd_type
    while isinstance(step, XsdAtomicRestriction):
        builtin = _builtin_of(step)
        for tag, facet in step.facets.items():
            facets.add(label, tag, facet, builtin)
        step = step.base_type
    if not isinstance(step, XsdAtomicBuiltin) or step.name not in _BUILTINS:
        raise UnsupportedSchema(f"{label}: base {_label(step)} is not a supported builtin")
    if xsd_type.white_space not in _NORMALIZERS:
        raise UnsupportedSchema(f"{label}: whiteSpace {xsd_type.white_space!r}")
    return _assemble(label, _NORMALIZERS[xsd_type.white_space], str(step.name), facets)


def _builtin_of(xsd_type: Any) -> str:
    step = xsd_type
    while isinstance(step, XsdAtomicRestriction):
        step = step.base_type
    return str(getattr(step, "name", ""))


class _Facets:
    """The facets of a restriction chain, most derived step first (xmlschema reports that one)."""

    def __init__(self) -> None:
        self.groups: list[Group] = []
        self.checks: list[Check] = []
        self.assertions: list[tuple[Callable[[str], bool], Callable[[str], str]]] = []

    def add(self, label: str, tag: str | None, facet: Any, builtin: str) -> None:
        stringy = builtin in _STRINGS
        numeric = builtin in (XS + "integer", XS + "decimal")
        name = (tag or "").removeprefix(XS)
        if name == "whiteSpace":
            return  # already folded into the type's effective white_space
        if name == "pattern":
            self.groups.append((tuple(facet.patterns), " | ".join(facet.regexps)))
        elif name == "enumeration" and stringy:
            self.checks.append(_enumeration(frozenset(facet.enumeration), list(facet.enumeration)))
        elif name in ("length", "minLength", "maxLength") and stringy:
            self.checks.append(_length(name, int(facet.value)))
        elif name in ("minInclusive", "maxInclusive", "minExclusive", "maxExclusive") and numeric:
            self.checks.append(_bound(name, facet.value, exact=builtin == XS + "decimal"))
        elif name == "assertion" and stringy and facet.path in VALUE_ASSERTIONS:
            twin = VALUE_ASSERTIONS[facet.path]
            self.assertions.append((twin.holds, twin.rule))
        else:
            raise UnsupportedSchema(f"{label}: facet {tag} ({getattr(facet, 'path', '')}) on {builtin}")


def _enumeration(allowed: frozenset[str], ordered: list[str]) -> Check:
    shown = ", ".join(item if item else "''" for item in ordered)

    def check(value: Any, text: str) -> None:
        if value not in allowed:
            raise Invalid(f"value {describe(text)} is not one of {shown}", 1)

    return check


def _length(kind: str, limit: int) -> Check:
    def check(value: Any, text: str) -> None:
        size = len(text)
        if (
            (kind == "length" and size != limit)
            or (kind == "minLength" and size < limit)
            or (kind == "maxLength" and size > limit)
        ):
            raise Invalid(f"value {describe(text)} breaks {kind} {limit}", 1)

    return check


def _bound(kind: str, limit: Any, *, exact: bool) -> Check:
    def check(value: Any, text: str) -> None:
        # Decimals are compared exactly, as xmlschema does; the float output may have rounded.
        number = Decimal(text.replace(" ", "")) if exact else value
        broken = (
            (kind == "minInclusive" and number < limit)
            or (kind == "maxInclusive" and number > limit)
            or (kind == "minExclusive" and number <= limit)
            or (kind == "maxExclusive" and number >= limit)
        )
        if broken:
            raise Invalid(f"value {text} breaks {kind} {limit}", 2)

    return check


def _assemble(label: str, normalize: Callable[[str], str] | None, builtin_name: str, facets: _Facets) -> Converter:
    """Pick a converter for the facet combination; the specialised ones are the hot cases."""
    groups, checks, assertions = tuple(facets.groups), tuple(facets.checks), tuple(facets.assertions)
    single = groups[0][0][0] if len(groups) == 1 and len(groups[0][0]) == 1 else None
    shown = groups[0][1] if len(groups) == 1 else ""

    def mismatch(text: str, shown: str) -> Invalid:
        return Invalid(f"value {describe(text)} does not match the {label} pattern {shown}", 1)

    if normalize is None and builtin_name in _STRINGS and single is not None and not checks:
        # IDs, Tag, timestamps: one pattern on a preserved string, maybe an assertion.
        match = single.match
        if not assertions:

            def convert_pattern(text: str) -> object:
                if match(text) is None:
                    raise mismatch(text, shown)
                return text

            return convert_pattern
        if len(assertions) == 1:
            ((holds, rule),) = assertions

            def convert_asserted(text: str) -> object:
                if match(text) is None:
                    raise mismatch(text, shown)
                if not holds(text):
                    raise Invalid(rule(text), 3)
                return text

            return convert_asserted

    plain_number = normalize is _collapse and not checks and not assertions and single is not None
    if plain_number and builtin_name == XS + "integer" and shown == _INTEGER_LEXICAL:
        match = single.match  # type: ignore[union-attr]

        def convert_integer(text: str) -> object:
            # ASCII digits need no whitespace folding and always match the pattern.
            if not (text.isascii() and text.isdigit()):
                text = _collapse(text)
                if match(text) is None:
                    raise mismatch(text, shown)
            return _to_integer(text)

        return convert_integer
    if plain_number and builtin_name == XS + "decimal" and shown == _DECIMAL_LEXICAL:
        match = single.match  # type: ignore[union-attr]

        def convert_decimal(text: str) -> object:
            text = _collapse(text)
            if match(text) is None:
                raise mismatch(text, shown)
            # The pattern is the exact xs:decimal lexical form without spaces, which implies
            # xmlschema's own decimal regex; only its "finite" check is left.
            value = float(text)
            if value == _INF or value == -_INF:
                raise Invalid(f"decimal out of range: {describe(text)}", 2)
            return value

        return convert_decimal

    builtin = _BUILTINS[builtin_name]
    stringy = builtin_name in _STRINGS

    def convert(text: str) -> object:
        if normalize is not None:
            text = normalize(text)
        for regexes, shown in groups:
            for regex in regexes:
                if regex.match(text) is not None:
                    break
            else:
                raise mismatch(text, shown)
        value = builtin(text)
        for check in checks:
            check(value, text)
        for holds, rule in assertions:  # string types only: the value is the text
            if not holds(text):
                raise Invalid(rule(text), 3)
        if stringy and not text:
            return EMPTY
        return value

    return convert
