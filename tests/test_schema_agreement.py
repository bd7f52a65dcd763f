"""The compiled fast path and xmlschema (XSD 1.1) must give the same verdict on every body."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from lxml import etree

from relay.validate.jsontree import json_to_tree
from relay.validate.schema import CallbackSchema, SchemaViolation

DATA = Path(__file__).parent / "data"
SAMPLES = sorted((DATA / "samples").glob("*.xml")) + sorted((DATA / "samples" / "extra").glob("*.xml"))
INVALID = sorted((DATA / "invalid").glob("*.xml"))
# Well-formed, DTD-free hostile bodies; the rest of bad/ is the parser's business, not the schema's.
BAD = [DATA / "bad" / "wrong_root.xml", DATA / "bad" / "invalid_state.xml"]
XSI = "{http://www.w3.org/2001/XMLSchema-instance}"


@cache
def schema() -> CallbackSchema:
    return CallbackSchema.load()


def parse(body: bytes) -> etree._Element:
    return etree.fromstring(body, etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False))


def fast_is_valid(root: etree._Element) -> bool:
    try:
        schema().convert(root)
    except SchemaViolation:
        return False
    return True


def assert_agree(root: etree._Element) -> bool:
    fast, reference = fast_is_valid(root), schema().reference_is_valid(root)
    if fast != reference:
        body = etree.tostring(root, encoding="unicode")
        pytest.fail(f"fast={fast} reference={reference}\n{body}\n{schema().explain(root)}")
    return fast


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_every_sample_is_valid_for_both_validators(path: Path) -> None:
    assert assert_agree(parse(path.read_bytes()))


@pytest.mark.parametrize("path", sorted((DATA / "samples" / "json").glob("*.json")), ids=lambda p: p.name)
def test_every_json_sample_is_valid_for_both_validators(path: Path) -> None:
    assert assert_agree(json_to_tree(json.loads(path.read_bytes())))


@pytest.mark.parametrize("path", INVALID + BAD, ids=lambda p: p.name)
def test_every_invalid_body_is_rejected_by_both_validators(path: Path) -> None:
    assert not assert_agree(parse(path.read_bytes()))


# --------------------------------------------------------------------------- mutations

NAMES = [
    "JobId",
    "State",
    "Tag",
    "JobsDetail",
    "Operation",
    "Size",
    "Duration",
    "CreationTime",
    "CreateTime",
    "Tasks",
    "RunId",
    "NonExistJobIds",
    "EventName",
    "ObjectName",
    "Response",
    "Foo",
    "x-y",
    "_z",
    "Message",
]
ATTRIBUTES = ["a", "id", XSI + "nil", XSI + "type", "{urn:example}flag"]

date_texts = st.builds(
    "{:04d}-{:02d}-{:02d}{}{:02d}:{:02d}:{:02d}{}".format,
    st.integers(0, 9999) | st.sampled_from([2023, 2024, 1900, 2000]),
    st.integers(0, 13),
    st.integers(0, 32),
    st.sampled_from(["T", " ", "t"]),
    st.integers(0, 25),
    st.integers(0, 61),
    st.integers(0, 61),
    st.sampled_from(["+0800", "-0500", "+08:00", "Z", "", "+1500", "+1459"]),
)
TEXTS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "",
            " ",
            "-",
            "0",
            "-1",
            "+7",
            "007",
            "1.5",
            ".5",
            "5.",
            "1e5",
            "1_0",
            "\u0661\u0662",
            "1 2",
            " 12 ",
            "\u3000" + "12",
            "12\n",
            "true",
            "false",
            "TRUE",
            "yes",
            "Success",
            "Exploded",
            "TaskFinish",
            "WorkflowFinish",
            "Cancel",
            "j7c12d4be4c935a96bfe3fb23d1a491e9",
            "j***",
            "101",
            "99999999999999999999999999",
            "1" * 400,
            "0." + "1" * 30,
        ]
    ),
    date_texts,
    st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.from_regex(r"[a-z][0-9a-f]{3,40}", fullmatch=True),
)

Mutation = Callable[[etree._Element, st.DataObject], None]


def _elements(root: etree._Element) -> list[etree._Element]:
    return [el for el in root.iter() if isinstance(el.tag, str)]


def _pick(root: etree._Element, data: st.DataObject, *, below_root: bool = True) -> etree._Element:
    candidates = _elements(root)[1:] if below_root else _elements(root)
    if not candidates:  # everything below the root was dropped already
        return root
    return candidates[data.draw(st.integers(0, len(candidates) - 1))]


def _set_text(el: etree._Element, text: str) -> None:
    try:
        el.text = text
    except ValueError:  # not representable in XML (control characters, surrogates)
        el.text = "?"


def drop(root: etree._Element, data: st.DataObject) -> None:
    el = _pick(root, data)
    parent = el.getparent()
    if parent is not None:
        parent.remove(el)


def duplicate(root: etree._Element, data: st.DataObject) -> None:
    el = _pick(root, data)
    if el is not root:
        el.addnext(copy.deepcopy(el))


def swap(root: etree._Element, data: st.DataObject) -> None:
    el = _pick(root, data, below_root=False)
    children = list(el)
    if len(children) > 1:
        order = data.draw(st.permutations(children))
        for child in order:
            el.append(child)


def retext(root: etree._Element, data: st.DataObject) -> None:
    leaves = [el for el in _elements(root) if not any(isinstance(child.tag, str) for child in el)]
    _set_text(leaves[data.draw(st.integers(0, len(leaves) - 1))], data.draw(TEXTS))


def rename(root: etree._Element, data: st.DataObject) -> None:
    el = _pick(root, data, below_root=data.draw(st.booleans()))
    el.tag = data.draw(st.sampled_from(NAMES))


def add_attribute(root: etree._Element, data: st.DataObject) -> None:
    el = _pick(root, data, below_root=False)
    el.set(data.draw(st.sampled_from(ATTRIBUTES)), data.draw(st.sampled_from(["1", "true", "xs:string"])))


def wrap_text(root: etree._Element, data: st.DataObject) -> None:
    leaf = _pick(root, data)
    if len(leaf) == 0:
        text, leaf.text = leaf.text, None
        etree.SubElement(leaf, data.draw(st.sampled_from(NAMES))).text = text


def add_tail(root: etree._Element, data: st.DataObject) -> None:
    el = _pick(root, data)
    if el is not root:
        el.tail = data.draw(st.sampled_from(["\n  ", "x", " \u3000 ", "\t"]))


def add_comment(root: etree._Element, data: st.DataObject) -> None:
    el = _pick(root, data, below_root=False)
    node = etree.Comment("c") if data.draw(st.booleans()) else etree.ProcessingInstruction("pi", "x")
    node.tail = data.draw(st.sampled_from([None, "", "tail", " "]))
    el.insert(data.draw(st.integers(0, len(el))), node)


MUTATIONS: list[Mutation] = [drop, duplicate, swap, retext, rename, add_attribute, wrap_text, add_tail, add_comment]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    path=st.sampled_from(SAMPLES),
    mutations=st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=3),
    data=st.data(),
)
@pytest.mark.slow
def test_mutated_samples_get_the_same_verdict_from_both_validators(
    path: Path, mutations: list[Mutation], data: st.DataObject
) -> None:
    root = parse(path.read_bytes())
    for mutate in mutations:
        mutate(root, data)
    assert_agree(root)


def _stable_shuffle(el: etree._Element, data: st.DataObject) -> None:
    """Reorder children at random but keep same-named siblings in order (so lists stay equal)."""
    children = list(el)
    queues: dict[object, Iterator[etree._Element]] = {}
    for tag in {child.tag for child in children}:
        queues[tag] = iter([child for child in children if child.tag == tag])
    for slot in data.draw(st.permutations(children)):
        el.append(next(queues[slot.tag]))
    for child in el:
        _stable_shuffle(child, data)


@settings(max_examples=60, deadline=None)
@given(path=st.sampled_from(SAMPLES), data=st.data())
@pytest.mark.slow
def test_sibling_order_shuffles_of_valid_samples_stay_valid_and_convert_the_same(
    path: Path, data: st.DataObject
) -> None:
    original = parse(path.read_bytes())
    shuffled = copy.deepcopy(original)
    _stable_shuffle(shuffled, data)
    assert schema().convert(shuffled) == schema().convert(original)
    assert schema().reference_is_valid(shuffled)
