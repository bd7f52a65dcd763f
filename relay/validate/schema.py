"""The COS callback schema: a compiled fast path for ingest, xmlschema (XSD 1.1) as the reference.

`convert()` is what the endpoint calls on every body. `explain()` and `reference_is_valid()` run
xmlschema over the same XSD; agreement tests hold the two to the same verdict.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lxml import etree
from xmlschema import XMLSchema11, XMLSchemaException

import relay
from relay.validate import explain, fastpath
from relay.validate.compiler import compile_schema
from relay.validate.errors import SchemaViolation, UnsupportedSchema, Violation
from relay.validate.model import CompiledSchema

__all__ = ["CallbackSchema", "SchemaViolation", "UnsupportedSchema", "Violation", "schema_path"]


def schema_path(name: str = "cos-callback.xsd") -> Path:
    """The packaged schema (wheel: relay/schemas/), else the source checkout's schemas/ folder."""
    package_dir = Path(relay.__file__).parent
    packaged = package_dir / "schemas" / name
    if packaged.exists():
        return packaged
    return package_dir.parent / "schemas" / name


class CallbackSchema:
    def __init__(self, xsd: XMLSchema11, compiled: CompiledSchema) -> None:
        self._xsd = xsd
        self._compiled = compiled
        self._convert = fastpath.make_converter(compiled)

    @classmethod
    def load(cls, path: Path | None = None) -> CallbackSchema:
        """Build both validators; raises UnsupportedSchema if the XSD outgrows the compiler."""
        source = (path or schema_path()).resolve()
        # sandbox: only files below the schema's own folder may be read, never a URL.
        xsd = XMLSchema11(str(source), base_url=str(source.parent), allow="sandbox", defuse="always")
        return cls(xsd, compile_schema(xsd))

    def convert(self, root: etree._Element) -> dict[str, Any]:
        """Fast path: validate and convert in one walk; raises SchemaViolation."""
        return self._convert(root)

    def explain(self, root: etree._Element) -> tuple[Violation, ...]:
        """Slow path: every xmlschema error with an element path; () when valid."""
        if (entity := _first_entity(root)) is not None:
            return (
                Violation(fastpath.element_path(entity, root, self._compiled.root), "entity reference not allowed"),
            )
        document = _without_comments(root)
        crashes: list[XMLSchemaException] = []
        found = explain.violations(self._errors(document, crashes), document, self._compiled.root)
        if crashes:
            return (*found, Violation(f"/{document.tag}", f"reference validator failed: {crashes[0]}"))
        return found

    def reference_is_valid(self, root: etree._Element) -> bool:
        """xmlschema's verdict on the same XSD."""
        if _first_entity(root) is not None:
            return False
        try:
            return bool(self._xsd.is_valid(_without_comments(root), use_location_hints=False))
        except XMLSchemaException:
            # xmlschema can crash on hostile xsi:* attributes (xsi:type="1" raises KeyError).
            # A crash is not a pass; such bodies carry attributes, which the schema refuses anyway.
            return False

    def _errors(self, document: etree._Element, crashes: list[XMLSchemaException]) -> Iterator[Any]:
        try:
            yield from self._xsd.iter_errors(document, use_location_hints=False)
        except XMLSchemaException as crash:
            crashes.append(crash)


def _first_entity(root: etree._Element) -> etree._Element | None:
    """Entity reference nodes exist only in hand-built trees (our parsers refuse DTDs); both paths
    refuse them, since xmlschema would skip them in element content and so lose their text."""
    entity = next(root.iter(etree.Entity), None)
    return None if entity is None else entity.getparent()


def _without_comments(root: etree._Element) -> etree._Element:
    """Comments/PIs are not content: xmlschema on lxml would count them as child nodes.

    Stripping keeps their tails, so text split by a comment is joined, as the fast path does.
    """
    if next(root.iter(etree.Comment, etree.ProcessingInstruction), None) is None:
        return root
    clone = copy.deepcopy(root)
    etree.strip_elements(clone, etree.Comment, etree.ProcessingInstruction, with_tail=False)
    return clone
