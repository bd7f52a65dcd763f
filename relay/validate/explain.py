"""Turn xmlschema's errors into path-precise `Violation`s (the slow path behind `explain()`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

from lxml import etree
from xmlschema.validators import XsdAssert, XsdAssertionFacet

from relay.validate.assertions import ASSERTION_RULES, VALUE_ASSERTIONS
from relay.validate.errors import Violation
from relay.validate.fastpath import child_spec_of, element_path
from relay.validate.model import CheckFailed, ComplexSpec, describe


def _mixed(root: etree._Element) -> list[etree._Element]:
    # Python whitespace, like the assertion's normalize-space() in elementpath.
    return [
        el
        for el in root.iter(etree.Element)
        if len(el) and any(text and not text.isspace() for text in (el.text, *(c.tail for c in el)))
    ]


def _with_attributes(root: etree._Element) -> Any:
    return root.xpath("descendant-or-self::*[@*]")


def _namespaced(root: etree._Element) -> Any:
    return root.xpath("descendant-or-self::*[namespace-uri() != '']")


# The subtree assertions fail on the root; these find the elements that actually break them.
_LOCATORS: Final[dict[str, Callable[[etree._Element], Any]]] = {
    "empty(.//@*)": _with_attributes,
    "empty(.//*[namespace-uri() != ''])": _namespaced,
    "empty(.//*[* and text()[normalize-space()]])": _mixed,
}


def violations(errors: Iterable[Any], document: etree._Element, spec: ComplexSpec) -> tuple[Violation, ...]:
    found: list[Violation] = []
    seen: set[tuple[str, str]] = set()
    for error in errors:
        for violation in _from_error(error, document, spec):
            # A bad union value is reported once per member: keep one value error per element.
            key = (violation.path, "value" if isinstance(error.obj, str) else violation.rule)
            if key not in seen:
                seen.add(key)
                found.append(violation)
    return tuple(found)


def _from_error(error: Any, document: etree._Element, spec: ComplexSpec) -> Iterator[Violation]:
    element = error.elem
    validator = error.validator
    if not isinstance(element, etree._Element):
        yield Violation(str(error.path or "/"), _reason(error))
        return
    if isinstance(validator, XsdAssert) and validator.path in _LOCATORS:
        rule = ASSERTION_RULES[validator.path]
        culprits = list(_LOCATORS[validator.path](element)) or [element]
        for culprit in culprits:
            yield Violation(element_path(culprit, document, spec), rule)
        return
    index = getattr(error, "index", None)
    if isinstance(index, int) and 0 <= index < len(element):
        element = element[index]  # point at the unexpected child, not at its parent
    path = element_path(element, document, spec)
    if isinstance(validator, XsdAssert) and validator.path in ASSERTION_RULES:
        yield Violation(path, ASSERTION_RULES[validator.path])
    elif isinstance(error.obj, str):
        yield Violation(path, _value_rule(error, element, document, spec))
    else:
        yield Violation(path, _reason(error))


def _value_rule(error: Any, element: etree._Element, document: etree._Element, spec: ComplexSpec) -> str:
    """Word a bad value like the fast path does: for unions it names the closest member."""
    child = child_spec_of(element, document, spec)
    if child is not None and child.simple is not None and child.simple.convert is not None:
        text = element.text or ""
        try:
            outcome = child.simple.convert(text) if text else child.simple.empty
        except CheckFailed as invalid:
            return invalid.rule
        if isinstance(outcome, CheckFailed):
            return outcome.rule
        # Otherwise the compiled twin accepts the value: xmlschema's own words are the honest answer.
    validator = error.validator
    if isinstance(validator, XsdAssertionFacet) and validator.path in VALUE_ASSERTIONS:
        return VALUE_ASSERTIONS[validator.path].rule(str(error.obj))
    return f"{_reason(error)} (value {describe(error.obj)})"


def _reason(error: Any) -> str:
    return str(error.reason or error.message).strip()
