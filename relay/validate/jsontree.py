"""Turn a JSON callback (CallBackFormat=JSON, FORMAT §9) into the lxml tree its XML twin would give.

Rule: root element Response; object -> element with one child per key, in key order; array -> the
key repeated once per item; string -> text; int/float -> str(value); bool -> "true"/"false";
null -> empty element. The schema then validates both variants the same way.
"""

from __future__ import annotations

from typing import Final

from lxml import etree

from relay.validate.limits import MAX_DEPTH

__all__ = ["MAX_DEPTH", "ROOT", "JsonShapeError", "JsonTooDeep", "json_to_tree"]

ROOT: Final = "Response"


class JsonShapeError(ValueError):
    """The JSON body has no XML shape (json_to_tree raises only this, a ValueError)."""


class JsonTooDeep(JsonShapeError):
    """The JSON body is nested deeper than the XML tree of a callback may be (`MAX_DEPTH`)."""


def json_to_tree(doc: object) -> etree._Element:
    """Build the Response tree for a parsed JSON body; ValueError explains what does not fit."""
    if not isinstance(doc, dict):
        raise JsonShapeError(f"a JSON callback must be an object at the top level, not {_kind(doc)}")
    root = etree.Element(ROOT)
    _fill(root, doc, 1)
    return root


def _fill(parent: etree._Element, obj: dict[object, object], depth: int) -> None:
    if depth >= MAX_DEPTH and obj:  # its members would sit deeper than MAX_DEPTH
        raise JsonTooDeep(f"JSON nested deeper than {MAX_DEPTH} levels")
    sub = etree.SubElement
    for key, value in obj.items():
        # "{...}" would make lxml build a namespaced (Clark) name; callbacks never carry one.
        if key.__class__ is not str or "{" in key:
            raise JsonShapeError(f"object key {key!r} is not a valid XML element name")
        name: str = key
        try:
            # Strings first: in CI's JSON every scalar is a string.
            if value.__class__ is str:
                sub(parent, name).text = value
            elif isinstance(value, dict):
                _fill(sub(parent, name), value, depth + 1)
            elif isinstance(value, list):
                for item in value:
                    if isinstance(item, list):
                        raise JsonShapeError(f"array inside an array under key {name!r}: no XML shape for it")
                    if isinstance(item, dict):
                        _fill(sub(parent, name), item, depth + 1)
                    else:
                        sub(parent, name).text = _scalar(name, item)
            else:
                sub(parent, name).text = _scalar(name, value)
        except JsonShapeError:
            raise
        except ValueError as err:  # from lxml: a bad element name or text XML cannot carry
            raise JsonShapeError(_diagnose(name, err)) from None


def _scalar(name: str, value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    raise JsonShapeError(f"unsupported JSON value {_kind(value)} under key {name!r}")


def _diagnose(name: str, err: ValueError) -> str:
    try:
        etree.Element(name)
    except ValueError:
        return f"object key {name!r} is not a valid XML element name"
    return f"value under key {name!r} cannot be carried by XML: {err}"


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__
