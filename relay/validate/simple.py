"""Compile xmlschema simple types into converters (relay/validate/converters.py; runs once, at load time)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from xmlschema.validators import XsdAtomicBuiltin, XsdAtomicRestriction, XsdUnion

from relay.validate import converters
from relay.validate.assertions import VALUE_ASSERTIONS
from relay.validate.errors import UnsupportedSchema
from relay.validate.lexical import (
    BUILTINS,
    DECIMAL_LEXICAL,
    INTEGER_LEXICAL,
    NORMALIZERS,
    STRINGS,
    XS,
    Check,
    Group,
    bound_check,
    enumeration_check,
    length_check,
)
from relay.validate.model import DECIMAL, EMPTY, INTEGER, OTHER, TEXT, CheckFailed, Converter, SimpleSpec


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
            name = _label(xsd_type)
            empty = _empty_outcome(self._converter(xsd_type, prune=False))
            if isinstance(xsd_type, XsdAtomicBuiltin) and xsd_type.name == XS + "string":
                self._done[key] = SimpleSpec(name, None, empty, TEXT)
            else:
                live = self._live(xsd_type)
                kind = _lexical_kind(live) if live is not None else OTHER
                self._done[key] = SimpleSpec(name, self._converter(xsd_type, prune=True), empty, kind)
        return self._done[key]

    def _converter(self, xsd_type: Any, *, prune: bool) -> Converter:
        if isinstance(xsd_type, XsdUnion):
            members = _live_members(xsd_type) if prune else xsd_type.member_types
            return _union([self._converter(member, prune=prune) for member in members])
        if isinstance(xsd_type, XsdAtomicBuiltin | XsdAtomicRestriction):
            return _atomic(xsd_type)
        raise UnsupportedSchema(f"simple type {_label(xsd_type)}: only atomic and union types")

    @staticmethod
    def _live(xsd_type: Any) -> Any:
        """The one atomic type that can accept a non-empty text, if there is exactly one."""
        while isinstance(xsd_type, XsdUnion):
            members = _live_members(xsd_type)
            if len(members) != 1:
                return None
            xsd_type = members[0]
        return xsd_type


def _live_members(union: Any) -> list[Any]:
    # The walker never hands "" to `convert` (empty elements use the precomputed SimpleSpec.empty),
    # so members accepting nothing but "" can be left out of the hot path.
    return [member for member in union.member_types if not _only_empty(member)] or list(union.member_types)


def _lexical_kind(xsd_type: Any) -> int:
    """INTEGER / DECIMAL when the type is exactly "the XSD lexical pattern on the builtin"."""
    if not isinstance(xsd_type, XsdAtomicRestriction) or not isinstance(xsd_type.base_type, XsdAtomicBuiltin):
        return OTHER
    facets = {tag for tag in xsd_type.facets if tag != XS + "whiteSpace"}
    patterns: Any = xsd_type.patterns
    if facets != {XS + "pattern"} or patterns is None or len(patterns.regexps) != 1:
        return OTHER
    lexical = (xsd_type.base_type.name, patterns.regexps[0], xsd_type.white_space)
    if lexical == (XS + "integer", INTEGER_LEXICAL, "collapse"):
        return INTEGER
    if lexical == (XS + "decimal", DECIMAL_LEXICAL, "collapse"):
        return DECIMAL
    return OTHER


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
    except CheckFailed as err:
        return err
    return EMPTY if value == "" else value


def _union(members: list[Converter]) -> Converter:
    if len(members) == 1:
        return members[0]
    if len(members) == 2:
        first, second = members
        return partial(converters.either, first, second)
    return partial(converters.any_of, tuple(members))


def _atomic(xsd_type: Any) -> Converter:
    label = _label(xsd_type)
    facets = _Facets()
    step = xsd_type
    while isinstance(step, XsdAtomicRestriction):
        builtin = _builtin_of(step)
        for tag, facet in step.facets.items():
            facets.add(label, tag, facet, builtin)
        step = step.base_type
    if not isinstance(step, XsdAtomicBuiltin) or step.name not in BUILTINS:
        raise UnsupportedSchema(f"{label}: base {_label(step)} is not a supported builtin")
    if xsd_type.white_space not in NORMALIZERS:
        raise UnsupportedSchema(f"{label}: whiteSpace {xsd_type.white_space!r}")
    return _assemble(label, NORMALIZERS[xsd_type.white_space], str(step.name), facets)


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
        self.assertions: list[converters.Assertion] = []
        self.enumerations: list[list[str]] = []  # also in `checks`; kept to specialise on
        self.max_length: int | None = None  # also in `checks`; kept to specialise on

    def add(self, label: str, tag: str | None, facet: Any, builtin: str) -> None:
        stringy = builtin in STRINGS
        numeric = builtin in (XS + "integer", XS + "decimal")
        name = (tag or "").removeprefix(XS)
        if name == "whiteSpace":
            return  # already folded into the type's effective white_space
        if name == "pattern":
            self.groups.append((tuple(facet.patterns), " | ".join(facet.regexps)))
        elif name == "enumeration" and stringy:
            self.checks.append(enumeration_check(frozenset(facet.enumeration), list(facet.enumeration)))
            self.enumerations.append(list(facet.enumeration))
        elif name in ("length", "minLength", "maxLength") and stringy:
            self.checks.append(length_check(name, int(facet.value)))
            if name == "maxLength":
                self.max_length = int(facet.value)
        elif name in ("minInclusive", "maxInclusive", "minExclusive", "maxExclusive") and numeric:
            self.checks.append(bound_check(name, facet.value, exact=builtin == XS + "decimal"))
        elif name == "assertion" and stringy and facet.path in VALUE_ASSERTIONS:
            twin = VALUE_ASSERTIONS[facet.path]
            self.assertions.append((twin.holds, twin.rule))
        else:
            raise UnsupportedSchema(f"{label}: facet {tag} ({getattr(facet, 'path', '')}) on {builtin}")


def _assemble(label: str, normalize: Callable[[str], str] | None, builtin_name: str, facets: _Facets) -> Converter:
    """Pick a converter for the facet combination; the specialised ones are the hot cases."""
    groups, checks, assertions = tuple(facets.groups), tuple(facets.checks), tuple(facets.assertions)
    single = groups[0][0][0] if len(groups) == 1 and len(groups[0][0]) == 1 else None
    shown = groups[0][1] if len(groups) == 1 else ""
    stringy = builtin_name in STRINGS
    plain = normalize is None and stringy
    if plain and not groups and not assertions and (len(checks) == len(facets.enumerations) == 1):
        return partial(converters.one_of, frozenset(facets.enumerations[0]), checks[0])
    if plain and not groups and not assertions and facets.max_length is not None and len(checks) == 1:
        return partial(converters.bounded, facets.max_length, checks[0])
    if plain and single is not None and not checks:
        if not assertions:
            return partial(converters.matching, single.match, label, shown)
        if len(assertions) == 1:
            return partial(converters.matching_asserted, single.match, label, shown, assertions[0])
    return partial(converters.general, label, normalize, groups, BUILTINS[builtin_name], checks, assertions, stringy)
