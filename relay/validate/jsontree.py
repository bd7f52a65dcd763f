"""Turn a JSON callback (CallBackFormat=JSON, FORMAT §9) into the lxml tree its XML twin would give.

Rule: root element Response; object -> element with one child per key, in key order; array -> the
key repeated once per item; string -> text; int/float -> str(value); bool -> "true"/"false";
null -> empty element. The schema then validates both variants the same way.
"""

from __future__ import annotations

from typing import Final

from lxml import etree

ROOT: Final = "Response"
# libxml2 refuses to parse documents nested deeper than this; keep JSON bodies to the same bound.
MAX_DEPTH: Final = 256


def json_to_tree(doc: object) -> etree._Element:
    """Build the Response tree for a parsed JSON body; ValueError explains what does not fit."""
    if not isinstance(doc, dict):
        raise ValueError(f"a JSON callback must be an object at the top level, not {_kind(doc)}")
    root = etree.Element(ROOT)
    _fill(root, doc, 1)
    return root


def _fill(parent: etree._Element, obj: dict[object, object], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels")
    for key, value in obj.items():
        name = _element_name(key)
        items = value if isinstance(value, list) else (value,)
        for item in items:
            if isinstance(item, list):
                raise ValueError(f"array inside an array under key {name!r}: no XML shape for it")
            try:
                child = etree.SubElement(parent, name)
            except ValueError:
                raise ValueError(f"object key {name!r} is not a valid XML element name") from None
            if isinstance(item, dict):
                _fill(child, item, depth + 1)
            else:
                _set_text(child, name, item)


def _set_text(element: etree._Element, name: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool):  # before int: bool is an int subclass
        text = "true" if value else "false"
    elif isinstance(value, int | float | str):
        text = value if isinstance(value, str) else str(value)
    else:
        raise ValueError(f"unsupported JSON value {_kind(value)} under key {name!r}")
    try:
        element.text = text
    except ValueError as err:  # control characters, lone surrogates, ...
        raise ValueError(f"value under key {name!r} cannot be carried by XML: {err}") from None


def _element_name(key: object) -> str:
    if not isinstance(key, str):
        raise ValueError(f"object key {key!r} is not a string")
    # "{...}" would be read as a namespaced (Clark) name and ":" as a prefix; callbacks use neither.
    if not key or "{" in key or "}" in key or ":" in key:
        raise ValueError(f"object key {key!r} is not a valid XML element name")
    return key  # the rest of XML's name rules is checked by lxml when the element is made


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__
