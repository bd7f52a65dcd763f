"""Compile the xmlschema (XSD 1.1) component model into the fast-path model.

Only the constructs cos-callback.xsd needs are supported, and everything else is refused with
`UnsupportedSchema` at load time, so the compiled validator can never quietly disagree with the
reference one: xs:all content (occurs 1..1) of declared elements plus at most one skip wildcard
(##local, notQName="##definedSibling"), no attributes, no mixed/simple content, no
default/fixed/nillable/alternatives/identity constraints/substitution groups, and only the
assertions implemented in `relay.validate.assertions`.
"""

from __future__ import annotations

from typing import Any

from xmlschema import XMLSchema11
from xmlschema.validators import XsdAnyElement, XsdComplexType, XsdElement, XsdGroup

from relay.validate.assertions import CONTENT_ASSERTIONS, SUBTREE_ASSERTIONS
from relay.validate.errors import UnsupportedSchema
from relay.validate.lexical import XS
from relay.validate.model import OTHER, ChildSpec, CompiledSchema, ComplexSpec, Policy
from relay.validate.simple import SimpleCompiler


def compile_schema(schema: XMLSchema11) -> CompiledSchema:
    if schema.XSD_VERSION != "1.1":
        raise UnsupportedSchema("the compiler implements XSD 1.1 semantics only")
    for child in schema.root:
        if child.tag in (XS + "import", XS + "include", XS + "redefine", XS + "override"):
            raise UnsupportedSchema(f"the schema must be a single self-contained file, found {child.tag}")
    names = list(schema.elements)
    # A second global element would be a second valid document root for the reference validator.
    if len(names) != 1:
        raise UnsupportedSchema(f"exactly one global element expected, found {names}")
    if schema.default_open_content is not None:
        raise UnsupportedSchema("xs:defaultOpenContent")
    if len(schema.substitution_groups):
        raise UnsupportedSchema("substitution groups")
    root = schema.elements[names[0]]
    _check_element(root)
    compiler = _Compiler()
    if not isinstance(root.type, XsdComplexType):
        raise UnsupportedSchema("the root element must have a complex type")
    root_spec = compiler.complex(root.type)
    policy = Policy(**{flag: True for flag in _subtree_flags(root.type)})
    return CompiledSchema(root_name=root.name, root=root_spec, policy=policy)


def _subtree_flags(root_type: Any) -> list[str]:
    return [SUBTREE_ASSERTIONS[a.path] for a in root_type.assertions if a.path in SUBTREE_ASSERTIONS]


def _check_element(decl: Any) -> None:
    problems = {
        "a namespace": "{" in decl.name,
        "a default or fixed value": decl.default is not None or decl.fixed is not None,
        "nillable": decl.nillable,
        "abstract": decl.abstract,
        "type alternatives": bool(decl.alternatives),
        "identity constraints": bool(decl.identities),
    }
    for what, present in problems.items():
        if present:
            raise UnsupportedSchema(f"element {decl.name}: {what}")


class _Compiler:
    def __init__(self) -> None:
        self._simple = SimpleCompiler()
        self._complex: dict[int, ComplexSpec] = {}
        self._root_type: Any = None

    def complex(self, xsd_type: Any) -> ComplexSpec:
        key = id(xsd_type)
        if key in self._complex:
            return self._complex[key]
        if self._root_type is None:
            self._root_type = xsd_type
        name = str(xsd_type.local_name or "anonymous complex type")
        spec = ComplexSpec(name=name)
        self._complex[key] = spec  # before the children: types may be recursive
        self._check_type(name, xsd_type)
        required: list[str] = []
        counted: list[ChildSpec] = []
        for particle in xsd_type.content:
            if isinstance(particle, XsdElement):
                child = self._child(particle)
                spec.children[child.name] = child
                if child.min_occurs > 0:
                    required.append(child.name)
                if child.min_occurs > 1 or (child.max_occurs is not None and child.max_occurs > 1):
                    counted.append(child)
            elif isinstance(particle, XsdAnyElement):
                self._check_wildcard(name, particle)
                spec.open = True
            else:
                raise UnsupportedSchema(f"{name}: nested model group {particle!r}")
        spec.required = tuple(required)
        spec.counted = tuple(counted)
        spec.checks = self._content_checks(name, xsd_type)
        spec.constrained = bool(spec.required or spec.counted or spec.checks)
        spec.table = {
            child.name: (
                child.complex,
                child.simple.convert if child.simple is not None else None,
                child.simple.empty if child.simple is not None else None,
                child.many,
                child.simple.kind if child.simple is not None else OTHER,
            )
            for child in spec.children.values()
        }
        return spec

    def _child(self, decl: Any) -> ChildSpec:
        _check_element(decl)
        max_occurs = decl.max_occurs
        xsd_type = decl.type
        if isinstance(xsd_type, XsdComplexType):
            return ChildSpec(decl.name, decl.min_occurs, max_occurs, max_occurs != 1, None, self.complex(xsd_type))
        simple = self._simple.compile(xsd_type)
        return ChildSpec(decl.name, decl.min_occurs, max_occurs, max_occurs != 1, simple, None)

    @staticmethod
    def _check_type(name: str, xsd_type: Any) -> None:
        attributes = xsd_type.attributes
        base = xsd_type.base_type
        problems = {
            "mixed content": xsd_type.mixed,
            "simple content": xsd_type.has_simple_content(),
            "attributes": len(attributes) > 0,  # the anyAttribute wildcard counts too (key None)
            "open content": xsd_type.open_content is not None,
            "derivation from another complex type": base is not None and base.name != XS + "anyType",
        }
        for what, present in problems.items():
            if present:
                raise UnsupportedSchema(f"complex type {name}: {what}")
        content = xsd_type.content
        if not isinstance(content, XsdGroup) or content.model != "all":
            raise UnsupportedSchema(f"complex type {name}: only xs:all content models")
        if (content.min_occurs, content.max_occurs) != (1, 1):
            raise UnsupportedSchema(f"complex type {name}: xs:all must occur exactly once")

    @staticmethod
    def _check_wildcard(name: str, wildcard: Any) -> None:
        # skip: the subtree is the root assertions' business only. ##local: no namespaced
        # children. ##definedSibling: without it a second <State> would be accepted as wildcard
        # content (XSD 1.1 lets a wildcard absorb what a declared particle no longer can).
        if wildcard.process_contents != "skip":
            raise UnsupportedSchema(f"{name}: processContents={wildcard.process_contents!r}")
        if list(wildcard.namespace) != [""] or wildcard.not_namespace:
            raise UnsupportedSchema(f"{name}: wildcard namespace must be ##local")
        if set(wildcard.not_qname) != {"##definedSibling"}:
            raise UnsupportedSchema(f"{name}: wildcard needs notQName='##definedSibling' (only)")
        if wildcard.min_occurs != 0 or wildcard.max_occurs is not None:
            raise UnsupportedSchema(f"{name}: wildcard must be minOccurs=0 maxOccurs=unbounded")

    def _content_checks(self, name: str, xsd_type: Any) -> tuple[tuple[str, Any], ...]:
        checks = []
        for assertion in xsd_type.assertions:
            test = assertion.path
            if test in CONTENT_ASSERTIONS:
                checks.append((test, CONTENT_ASSERTIONS[test]))
            elif test in SUBTREE_ASSERTIONS and xsd_type is self._root_type:
                continue  # enforced everywhere through the Policy
            else:
                raise UnsupportedSchema(f"{name}: no Python twin for xs:assert test={test!r}")
        return tuple(checks)
