"""Parse request bodies defensively: no DTD, no entities, no network, UTF-8 only."""

from __future__ import annotations

import re
from typing import Literal

import orjson
from lxml import etree

from relay.domain.errors import Invalid, Malformed, TooComplex
from relay.validate import limits
from relay.validate.jsontree import JsonTooDeep, json_to_tree

BodyFormat = Literal["xml", "json"]

_BLANK = b" \t\r\n"
_LEADING_BLANK = re.compile(rb"[ \t\r\n]*")
_BOM = b"\xef\xbb\xbf"
# The XML declaration's encoding, if it names one (the declaration may only stand at the very start).
_DECLARED_ENCODING = re.compile(rb"<\?xml[ \t\r\n][^>]*?encoding[ \t\r\n]*=[ \t\r\n]*(['\"])(.*?)\1")
_UTF8_NAMES = frozenset({b"utf-8", b"utf8"})


def new_xml_parser() -> etree.XMLParser:
    """A parser that can neither read files nor reach the network nor expand entities.

    ``huge_tree=False`` keeps libxml2's depth (256) and text-size limits, which bound deep nesting.
    ``encoding="utf-8"`` makes libxml2 read the bytes as UTF-8 whatever the body declares or looks like:
    it never transcodes (UTF-16 guessed from the first bytes, UTF-7, Latin-1).
    """
    return etree.XMLParser(
        encoding="utf-8",
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
    """Return the root element of a callback body, or raise `Malformed` / `Invalid` / `TooComplex`.

    The parser is not thread-safe: give each thread its own.
    """
    _check_utf8(body, fmt)
    found = limits.check_nodes(body, fmt)
    if fmt == "json":
        return _parse_json(body)
    root = _parse_xml(body, parser)
    limits.check_depth(root, found)
    return root


def _check_utf8(body: bytes, fmt: BodyFormat) -> None:
    """COS sends UTF-8: refuse anything else, whatever the body declares, before a parser can guess."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        # Also refuses UTF-16 and UTF-32 with a byte order mark, and Latin-1 text.
        raise Malformed(f"body is not valid UTF-8 (byte {exc.start})") from None
    # U+0000 is no XML character and JSON escapes it, so a NUL byte means another encoding: UTF-16 or
    # UTF-32 without a byte order mark, whose ASCII characters are all valid UTF-8 bytes.
    nul = body.find(b"\x00")
    if nul >= 0:
        raise Malformed(f"body is not UTF-8 text (NUL byte at {nul})")
    if fmt == "xml":
        start = 3 if body.startswith(_BOM) else 0
        declared = _DECLARED_ENCODING.match(body, start, start + 1024)
        if declared is not None and declared.group(2).strip().lower() not in _UTF8_NAMES:
            name = declared.group(2).decode("ascii", "replace")
            raise Malformed(f"the XML declaration says encoding={name!r}: only UTF-8 is accepted")


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
    except JsonTooDeep as exc:
        raise TooComplex(str(exc)) from None
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
