"""Parse request bodies defensively: no DTD, no entities, no network, UTF-8 only."""

from __future__ import annotations

import re
from typing import Literal

import orjson
from lxml import etree

from relay.errors import Invalid, Malformed
from relay.validate.jsontree import json_to_tree

BodyFormat = Literal["xml", "json"]

_BLANK = b" \t\r\n"
_LEADING_BLANK = re.compile(rb"[ \t\r\n]*")
_BOM = b"\xef\xbb\xbf"


def new_xml_parser() -> etree.XMLParser:
    """A parser that can neither read files nor reach the network nor expand entities.

    ``huge_tree=False`` keeps libxml2's depth (256) and text-size limits, which bound deep nesting.
    """
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
        collect_ids=False,
    )


def sniff(body: bytes) -> BodyFormat | None:
    """The format the first non-blank byte announces, if any."""
    start = _LEADING_BLANK.match(body, 3 if body.startswith(_BOM) else 0)
    first = body[start.end() : start.end() + 1] if start else b""
    if first == b"<":
        return "xml"
    if first in (b"{", b"["):
        return "json"
    return None


def parse(body: bytes, fmt: BodyFormat, parser: etree.XMLParser) -> etree._Element:
    """Return the root element of a callback body, or raise `Malformed` / `Invalid`."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        # COS sends UTF-8; refusing here also refuses UTF-16 and Latin-1 declared bodies.
        raise Malformed(f"body is not valid UTF-8 (byte {exc.start})") from None
    if fmt == "json":
        return _parse_json(body)
    return _parse_xml(body, parser)


def _parse_xml(body: bytes, parser: etree.XMLParser) -> etree._Element:
    if _has_doctype(body):
        raise Malformed("DTDs are not allowed (no COS callback carries one)")
    try:
        root = etree.fromstring(body, parser)
    except etree.XMLSyntaxError as exc:
        raise Malformed(f"not well-formed XML: {exc.msg}") from None
    if root is None:
        raise Malformed("empty document")
    if root.getroottree().docinfo.internalDTD is not None:  # belt and braces: the prolog scan catches it first
        raise Malformed("DTDs are not allowed (no COS callback carries one)")
    return root


def _parse_json(body: bytes) -> etree._Element:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Malformed(f"not well-formed JSON: {exc}") from None
    try:
        return json_to_tree(document)
    except ValueError as exc:
        raise Invalid(f"JSON is not shaped like a COS callback: {exc}") from None


def _has_doctype(body: bytes) -> bool:
    """Whether the prolog (everything before the root element) declares a DTD.

    Scanning only the prolog means a ``<!DOCTYPE`` inside a CDATA section of user data is not a false
    alarm, and the check runs before libxml2 sees a single declaration.
    """
    position = 3 if body.startswith(_BOM) else 0
    end = len(body)
    while position < end:
        position = _LEADING_BLANK.match(body, position).end()  # type: ignore[union-attr]  # `*` always matches
        if body.startswith(b"<?", position):
            terminator = b"?>"
        elif body.startswith(b"<!--", position):
            terminator = b"-->"
        else:
            return body.startswith(b"<!", position)  # <!DOCTYPE (any case) or another declaration
        close = body.find(terminator, position + 2)
        if close < 0:
            return False  # unterminated: the parser reports it as not well-formed
        position = close + len(terminator)
    return False
