"""Structure-aware mutations: change a well-formed XML or JSON callback and keep it well-formed, so that inputs
get past the parser into the schema and the model (byte flips alone mostly make malformed documents)."""

from __future__ import annotations

import copy
import json
import random
import re
from typing import Any

from lxml import etree

_TIME = re.compile(r"\d{4}-\d\d-\d\dT")
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)

#: Texts on the edges of the schema's types, and texts that have tripped (or could trip) a typed
#: conversion: numbers, dates, empties, odd digits, invisible characters.
EDGES = [
    "",
    " ",
    "-",
    "0",
    "-0",
    "00",
    "-1",
    "1e309",
    "-1e309",
    "NaN",
    "inf",
    "9" * 40,
    "9" * 400,
    "0x10",
    "1_000",
    "\u0661\u0662",  # Arabic-Indic digits
    "\u0663",  # Arabic-Indic three, alone
    "\uff11\uff12",  # full-width digits
    "true",
    "Success",
    "Failed",
    "Running",
    "9999-12-31T23:59:59-1400",
    "9999-12-31T23:59:59-0800",
    "1000-01-01T00:00:00+1400",
    "2024-02-29T24:00:00+0800",
    "2024-11-05 10:12:03+0800",
    "2024-11-05T10:12:03Z",
    "2024-11-05T10:12:03.123456789+0800",
    "\u202e",  # right-to-left override
    "\ufeff",  # byte order mark
]


def cos_time(rng: random.Random) -> str:
    """A time in COS's shape anywhere from year 1000 to 9999, with any offset up to ±14:59."""
    year = rng.choice([1000, 1970, 2024, 9999, rng.randint(1000, 9999)])
    month, day = rng.choice([(1, 1), (12, 31), (2, 29), (rng.randint(1, 12), rng.randint(1, 28))])
    hour, minute, second = rng.choice([(0, 0, 0), (23, 59, 59), (rng.randint(0, 23), rng.randint(0, 59), 0)])
    offset = rng.choice([-(14 * 60 + 59), 0, 14 * 60 + 59, rng.randint(-899, 899)])
    sign = "-" if offset < 0 else "+"
    stamp = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
    return f"{stamp}{sign}{abs(offset) // 60:02d}{abs(offset) % 60:02d}"


class Vocabulary:
    """Element names and texts seen in the seeds, to recombine."""

    def __init__(self, seeds: list[bytes]) -> None:
        tags: set[str] = set()
        texts: set[str] = set(EDGES)
        for seed in seeds:
            root = _xml(seed)
            if root is None:
                continue
            for element in root.iter(tag=etree.Element):
                tags.add(str(element.tag))
                if element.text and element.text.strip():
                    texts.add(element.text)
        self.tags = sorted(tags)
        self.texts = sorted(texts)

    def text(self, rng: random.Random, current: object = None) -> str:
        """A new text; mostly another time where there was a time, so the rest can stay valid."""
        was_time = isinstance(current, str) and bool(_TIME.match(current))
        return cos_time(rng) if rng.random() < (0.8 if was_time else 0.1) else rng.choice(self.texts)


def _xml(data: bytes) -> etree._Element | None:
    if not data.lstrip().startswith(b"<") or b"<!" in data:
        return None
    try:
        return etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError:
        return None


def mutate_xml(root: etree._Element, words: Vocabulary, rng: random.Random) -> bytes:
    for _ in range(rng.randint(1, 3)):
        elements = list(root.iter(tag=etree.Element))
        element = rng.choice(elements)
        parent = element.getparent()
        kind = rng.randrange(6)
        if kind <= 1 or parent is None:
            element.text = words.text(rng, element.text)
        elif kind == 2:
            parent.remove(element)
        elif kind == 3:
            parent.insert(parent.index(element), copy.deepcopy(element))
        elif kind == 4:
            element.tag = rng.choice(words.tags)
        else:
            etree.SubElement(element, rng.choice(words.tags)).text = words.text(rng)
    return bytes(etree.tostring(root, encoding="utf-8"))


def json_slots(document: Any, found: list[tuple[Any, Any]] | None = None) -> list[tuple[Any, Any]]:
    """Every (container, key-or-index) in a JSON document."""
    found = [] if found is None else found
    if isinstance(document, dict):
        for key, value in document.items():
            found.append((document, key))
            json_slots(value, found)
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found.append((document, index))
            json_slots(value, found)
    return found


def mutate_json(document: Any, words: Vocabulary, rng: random.Random) -> bytes:
    for _ in range(rng.randint(1, 3)):
        slots = json_slots(document)
        if not slots:
            break
        container, key = rng.choice(slots)
        kind = rng.randrange(5)
        if kind <= 1:
            current = container[key]
            container[key] = rng.choice(
                [words.text(rng, current), rng.randint(-(2**70), 2**70), rng.random(), None, [], {}]
            )
        elif kind == 2:
            del container[key]
        elif kind == 3:
            container[key] = [container[key], copy.deepcopy(container[key])]
        elif isinstance(container[key], dict):
            container[key][rng.choice(words.tags)] = words.text(rng)
    return json.dumps(document, ensure_ascii=rng.random() < 0.5).encode()


def structured(data: bytes, words: Vocabulary, rng: random.Random) -> bytes | None:
    """A mutated copy of ``data`` that is still well-formed, or None when ``data`` is not well-formed."""
    root = _xml(data)
    if root is not None:
        return mutate_xml(root, words, rng)
    if data.lstrip().startswith(b"{"):
        try:
            document = json.loads(data)
        except (ValueError, RecursionError):
            return None
        return mutate_json(document, words, rng)
    return None


#: Byte-level edits `edit_bytes` knows; "splice" appends the tail of a second document.
BYTE_EDITS = ("delete", "duplicate", "insert", "replace", "flip", "truncate", "splice")


def edit_bytes(sample: bytes, edits: list[tuple[str, int, bytes]], other: bytes = b"") -> bytes:
    """Apply (kind, position, chunk) edits in turn; positions wrap around the current length."""
    body = bytearray(sample)
    for kind, position, chunk in edits:
        at = position % (len(body) + 1)
        if kind == "delete":
            del body[at : at + len(chunk) + 1]
        elif kind == "duplicate":
            body[at:at] = body[at : at + 64]
        elif kind == "insert":
            body[at:at] = chunk
        elif kind == "replace":
            body[at : at + len(chunk)] = chunk
        elif kind == "flip" and body:
            body[at % len(body)] ^= 1 << (position % 8)
        elif kind == "truncate":
            del body[at:]
        elif kind == "splice":
            body[at:] = other[position % (len(other) + 1) :]
    return bytes(body)
