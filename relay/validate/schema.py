"""The COS callback schema: a compiled fast path for ingest, xmlschema (XSD 1.1) as the reference.

`convert()` is what the endpoint calls on every body. `explain()` and `reference_is_valid()` run
xmlschema over the same XSD; agreement tests hold the two to the same verdict.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import os
import pickle
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lxml import etree

import relay
from relay.validate import fastpath
from relay.validate.errors import SchemaViolation, UnsupportedSchema, Violation
from relay.validate.model import CompiledSchema

# xmlschema (with elementpath, 0.15-0.2 s of CPU to import) is imported where a schema is built, compiled or
# explained: `cos-relay serve` reads the compiled schema a previous process left and only converts.
if TYPE_CHECKING:
    from xmlschema import XMLSchema11, XMLSchemaException

__all__ = ["CallbackSchema", "SchemaViolation", "UnsupportedSchema", "Violation", "schema_path"]


def schema_path(name: str = "cos-callback.xsd") -> Path:
    """The packaged schema (wheel: relay/schemas/), else the source checkout's schemas/ folder."""
    package_dir = Path(relay.__file__).parent
    packaged = package_dir / "schemas" / name
    if packaged.exists():
        return packaged
    return package_dir.parent / "schemas" / name


class CallbackSchema:
    def __init__(self, compiled: CompiledSchema, source: Path, reference: XMLSchema11 | None = None) -> None:
        self._compiled = compiled
        self._convert = fastpath.make_converter(compiled)
        self._source = source
        # xmlschema's validator for `explain()` and `reference_is_valid()`: built at the first call when not given.
        self._xsd = reference
        self._building = threading.Lock()

    @classmethod
    def load(cls, path: Path | None = None) -> CallbackSchema:
        """Compile the fast path; raises UnsupportedSchema if the XSD outgrows the compiler.

        The packaged schema's compiled form is the one a previous process left (see `_cached`) when there is
        one: `cos-relay serve` only converts, so it then never imports xmlschema at all. The reference validator
        (`explain`, `reference_is_valid`) is built when first asked for.
        """
        source = (path or schema_path()).resolve()
        if path is None and (cached := _cached(source)) is not None:
            return cls(cached, source)
        from relay.validate.compiler import compile_schema

        xsd = _build_xsd(source)
        compiled = compile_schema(xsd)
        if path is None:
            _leave(compiled, source)
        return cls(compiled, source, xsd)

    def _reference(self) -> XMLSchema11:
        with self._building:
            if self._xsd is None:
                self._xsd = _build_xsd(self._source)
            return self._xsd

    def convert(self, root: etree._Element) -> dict[str, Any]:
        """Fast path: validate and convert in one walk; raises SchemaViolation."""
        return self._convert(root)

    def explain(self, root: etree._Element) -> tuple[Violation, ...]:
        """Slow path: every xmlschema error with an element path; () when valid."""
        from relay.validate import explain

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
        from xmlschema import XMLSchemaException

        if _first_entity(root) is not None:
            return False
        try:
            return bool(self._reference().is_valid(_without_comments(root), use_location_hints=False))
        except XMLSchemaException:
            # xmlschema can crash on hostile xsi:* attributes (xsi:type="1" raises KeyError).
            # A crash is not a pass; such bodies carry attributes, which the schema refuses anyway.
            return False

    def _errors(self, document: etree._Element, crashes: list[XMLSchemaException]) -> Iterator[Any]:
        from xmlschema import XMLSchemaException

        try:
            yield from self._reference().iter_errors(document, use_location_hints=False)
        except XMLSchemaException as crash:
            crashes.append(crash)


#: Where the packaged XSD, once compiled, is kept for the next process: beside this package's bytecode.
CACHE = Path(__file__).parent / "__pycache__"


def _build_xsd(source: Path) -> XMLSchema11:
    from xmlschema import XMLSchema11

    # sandbox: only files below the schema's own folder may be read, never a URL.
    return XMLSchema11(str(source), base_url=str(source.parent), allow="sandbox", defuse="always")


def _cache_file(source: Path) -> Path:
    """Where the compiled form of ``source`` is kept: named by a hash of all it depends on (the XSD's bytes and
    path, the builder's options, this package's code, xmlschema's and elementpath's versions (their
    ``__init__.py``, read without importing them), Python's version), so a changed schema, compiler or upgrade
    never finds a stale one."""
    parts = [source.read_bytes(), str(source).encode(), b"sandbox,always", sys.version.encode()]
    parts += [code.read_bytes() for code in sorted(Path(__file__).parent.glob("*.py"))]
    for package in ("xmlschema", "elementpath"):
        spec = importlib.util.find_spec(package)
        parts.append(Path(spec.origin).read_bytes() if spec is not None and spec.origin else b"")
    key = hashlib.sha256(b"\0".join(parts)).hexdigest()[:20]
    return CACHE / f"{source.stem}.{key}.pickle"


def _cached(source: Path) -> CompiledSchema | None:
    """The compiled form of the packaged XSD that a previous process left, if any.

    Building the XSD costs 0.2 s of CPU in a fresh process (0.5 s under coverage), mostly xmlschema's XSD 1.1
    meta-schema, and importing xmlschema 0.15 s more; unpickling the compiled form, a few milliseconds. Every
    `cos-relay serve` paid both at start, and the test suite starts hundreds. The file is written where and when
    Python writes bytecode (not under PYTHONDONTWRITEBYTECODE, not where the package is read-only, as an installed
    wheel usually is): whoever can write there can change the code.
    """
    try:
        cached = pickle.loads(_cache_file(source).read_bytes())  # noqa: S301 - written by _leave, beside the code
    except Exception:  # none yet, or unreadable (a damaged disk): built again, as with no cache at all
        return None
    return cached if isinstance(cached, CompiledSchema) else None


def _leave(compiled: CompiledSchema, source: Path) -> None:
    """Pickle the compiled form of ``source`` for the next process. Written whole under another name, then renamed: a
    process starting meanwhile finds no file or all of it. Any failure only means the next process builds it too."""
    if sys.dont_write_bytecode:
        return
    written: Path | None = None
    try:
        cache = _cache_file(source)
        cache.parent.mkdir(exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cache.parent, prefix=f"{cache.name}.", delete=False) as part:
            written = Path(part.name)
            pickle.dump(compiled, part, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(written, cache)
    except Exception:  # a cache: not writing it changes nothing but the next start's CPU
        if written is not None:
            written.unlink(missing_ok=True)


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
