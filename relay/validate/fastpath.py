"""The ingest fast path: validate and convert an lxml tree in a single walk of the compiled model.

Hot-loop notes: comments and processing instructions are recognised by their tag not being a
str; `keys()` is the cheapest attribute probe lxml offers; paths are only computed on failure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

from lxml import etree

from relay.validate.errors import SchemaViolation, Violation
from relay.validate.model import (
    DECIMAL,
    EMPTY,
    INTEGER,
    TEXT,
    CheckFailed,
    ChildSpec,
    CompiledSchema,
    ComplexSpec,
    describe,
)

_MISSING: Any = object()


class _Fault(Exception):
    def __init__(self, element: etree._Element, rule: str) -> None:
        super().__init__(rule)
        self.element = element
        self.rule = rule


def make_converter(compiled: CompiledSchema) -> Callable[[etree._Element], dict[str, Any]]:
    """Bind the compiled model into closures (cell lookups are cheaper than globals)."""
    policy = compiled.policy
    root_name = compiled.root_name
    root_spec = compiled.root
    empty = EMPTY
    invalid = CheckFailed
    inf = math.inf

    def walk(el: etree._Element, spec: ComplexSpec) -> Any:
        if el.keys():
            raise _Fault(el, _attribute_rule(el))
        text = el.text
        if text and not text.isspace():
            raise _Fault(el, _mixed_rule(text))
        out: dict[str, Any] = {}
        get = spec.table.get
        has_empty = False
        # el[:] builds the child list in C: much cheaper than `for child in el` or iterchildren().
        for child in el[:]:  # type: ignore[index]  # lxml-stubs lack the slice overload
            tag: Any = child.tag
            tail = child.tail
            if tail and not tail.isspace():
                raise _Fault(el, _mixed_rule(tail))
            entry = get(tag)
            if entry is None:
                if tag.__class__ is not str:
                    _skippable(child)
                    continue  # comment or processing instruction
                if not spec.open or tag[0] == "{":
                    raise _Fault(child, f"unexpected element {tag} in {spec.name}")
                value = generic(child)
                if value is empty:
                    has_empty = True
                _merge(out, tag, value)
                continue
            sub, conv, blank, many, kind = entry
            if sub is not None:
                value = walk(child, sub)
                if value is empty:
                    has_empty = True
            else:
                if child.keys():
                    raise _Fault(child, _attribute_rule(child))
                text = _leaf_text(child) if len(child) else child.text
                if not text:
                    value = blank
                    if value is empty:
                        has_empty = True
                    elif value.__class__ is invalid:
                        raise _Fault(child, value.rule)
                elif kind == TEXT:
                    value = text
                # Inline fast cases: plain ASCII digits provably match the integer / decimal
                # lexical pattern (see SimpleSpec); anything unusual goes through `conv`.
                elif kind == INTEGER and text.isdigit() and text.isascii() and len(text) < 4000:
                    value = int(text)
                elif kind == DECIMAL and text.isascii() and text.replace(".", "", 1).isdigit():
                    value = float(text)
                    if value == inf:
                        value = _convert(child, conv, text)  # raises "out of range"
                else:
                    value = _convert(child, conv, text)
                    if value is empty:
                        has_empty = True
            if many:
                bucket = out.get(tag)
                if bucket is None:
                    out[tag] = [value]
                else:
                    bucket.append(value)
            elif tag in out:
                raise _Fault(child, f"element {tag} may occur only once in {spec.name}")
            else:
                out[tag] = value
        if spec.constrained:
            _finish(el, spec, out)
        if has_empty:
            out = _drop_empty(out)
        return out if out else empty

    def generic(el: etree._Element) -> Any:
        """Skipped wildcard content: repeated names -> list, children -> dict, else text."""
        if policy.no_attributes and el.keys():
            raise _Fault(el, _attribute_rule(el))
        if not len(el):
            return el.text or empty
        out: dict[str, Any] | None = None
        has_empty = False
        for child in el[:]:  # type: ignore[index]  # lxml-stubs lack the slice overload
            tag: Any = child.tag
            if tag.__class__ is not str:
                _skippable(child)
                continue
            if policy.no_namespaces and tag[0] == "{":
                raise _Fault(child, f"namespaced element {tag} is not allowed")
            value = generic(child)
            if value is empty:
                has_empty = True
            if out is None:
                out = {}
            _merge(out, tag, value)
        if out is None:
            return _leaf_text(el) or empty  # only comments / processing instructions inside
        if policy.no_mixed:
            for text in (el.text, *(child.tail for child in el)):
                if text and not text.isspace():
                    raise _Fault(el, _mixed_rule(text))
        if has_empty:
            out = _drop_empty(out)
        return out if out else empty

    def convert(root: etree._Element) -> dict[str, Any]:
        """Validate `root` against the compiled schema and return its typed JSON form."""
        tag = root.tag
        if tag != root_name:
            raise SchemaViolation((Violation(f"/{tag}", f"root element must be {root_name}, not {tag}"),))
        try:
            value = walk(root, root_spec)
        except _Fault as fault:
            path = element_path(fault.element, root, root_spec)
            raise SchemaViolation((Violation(path, fault.rule),)) from None
        except RecursionError:
            # Only reachable for trees built by hand: parsers without huge_tree stop at depth 256.
            raise SchemaViolation((Violation(f"/{tag}", "document nested too deeply"),)) from None
        return value if isinstance(value, dict) else {}

    return convert


def _finish(el: etree._Element, spec: ComplexSpec, out: dict[str, Any]) -> None:
    """Occurrence and assertion checks once all children are known (empty ones still count)."""
    for name in spec.required:
        if name not in out:
            raise _Fault(el, f"missing required element {name}")
    for counted in spec.counted:
        found = len(out.get(counted.name, ()))
        upper = counted.max_occurs
        if (found and found < counted.min_occurs) or (upper is not None and found > upper):
            raise _Fault(el, f"element {counted.name} occurs {found} times, allowed {_range(counted)}")
    for _test, check in spec.checks:
        rule = check(out)
        if rule is not None:
            raise _Fault(el, rule)


def _convert(child: etree._Element, conv: Any, text: str) -> Any:
    try:
        return conv(text)
    except CheckFailed as err:
        raise _Fault(child, err.rule) from None


def _merge(out: dict[str, Any], tag: str, value: Any) -> None:
    previous = out.get(tag, _MISSING)
    if previous is _MISSING:
        out[tag] = value
    elif previous.__class__ is list:
        previous.append(value)
    else:
        out[tag] = [previous, value]


def _leaf_text(el: etree._Element) -> str:
    """Text of a simple-content element whose only children are comments or PIs."""
    parts = [el.text or ""]
    for child in el:
        if child.tag.__class__ is str:
            raise _Fault(el, f"child element {child.tag} not allowed in simple-typed element {el.tag}")
        _skippable(child)
        parts.append(child.tail or "")
    return "".join(parts)


def _skippable(node: etree._Element) -> None:
    """Comments and PIs are skipped; an entity reference (only in hand-built trees: our parsers
    have no DTD to declare one) would hide text, so it is refused like any other markup."""
    if node.tag is etree.Entity:
        parent = node.getparent()
        raise _Fault(node if parent is None else parent, f"entity reference {node.text} not allowed")


def _drop_empty(out: dict[str, Any]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for key, value in out.items():
        if value is EMPTY:
            continue
        if value.__class__ is list:
            value = [item for item in value if item is not EMPTY]
            if not value:
                continue
        kept[key] = value
    return kept


def _attribute_rule(el: etree._Element) -> str:
    return f"attribute {el.keys()[0]!s} not allowed on {el.tag!s}"


def _mixed_rule(text: str) -> str:
    return f"text not allowed in element-only content: {describe(text.strip())}"


def _range(spec: Any) -> str:
    upper = "unbounded" if spec.max_occurs is None else spec.max_occurs
    return f"{spec.min_occurs}..{upper}"


def _descend(
    el: etree._Element, root: etree._Element, spec: ComplexSpec | None
) -> Iterator[tuple[etree._Element, etree._Element, ChildSpec | None]]:
    """(parent, element, declaration or None) for each step from below `root` down to `el`."""
    chain: list[etree._Element] = []
    node: etree._Element | None = el
    while node is not None and node is not root:
        chain.append(node)
        node = node.getparent()
    if node is None:  # not below root: start from its own document root, schema unknown
        root, chain, spec = chain[-1], chain[:-1], None
    parent = root
    for node in reversed(chain):
        child_spec = spec.children.get(node.tag) if spec is not None else None
        yield parent, node, child_spec
        spec = child_spec.complex if child_spec is not None else None
        parent = node


def element_path(el: etree._Element, root: etree._Element, spec: ComplexSpec | None) -> str:
    """'/Response/JobsDetail[1]/State': index when the schema repeats the name or siblings do."""
    top = el
    while (above := top.getparent()) is not None and top is not root:
        top = above
    parts = [f"/{top.tag}"]
    for parent, node, child_spec in _descend(el, root, spec):
        tag = node.tag
        siblings = list(parent.iterchildren(tag))
        if (child_spec is not None and child_spec.many) or len(siblings) > 1:
            index = next(i for i, sibling in enumerate(siblings, 1) if sibling is node)
            parts.append(f"/{tag}[{index}]")
        else:
            parts.append(f"/{tag}")
    return "".join(parts)


def child_spec_of(el: etree._Element, root: etree._Element, spec: ComplexSpec) -> ChildSpec | None:
    """The declaration `el` was validated against, or None (root, wildcard content)."""
    steps = list(_descend(el, root, spec))
    return steps[-1][2] if steps else None
