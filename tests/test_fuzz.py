"""Fuzzing parse + schema + model: mutated samples are accepted or refused with a Rejected refusal, never
anything else (which the endpoint would turn into a 500). Hypothesis here; a coverage-guided run below."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st
from lxml import etree

from tests.chaos.harness import RESULTS, long_mode
from tests.fuzz.mutate import BYTE_EDITS, EDGES, edit_bytes, json_slots
from tests.fuzz.target import PARSER, READER, exercise, seeds

SEEDS = seeds()
XML_SEEDS = [seed for seed in SEEDS if seed.lstrip().startswith(b"<")]
JSON_SEEDS = [seed for seed in SEEDS if seed.lstrip().startswith(b"{")]
ROOT = Path(__file__).parent.parent
FUZZING = hypothesis_settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


def _tags() -> list[str]:
    found: set[str] = set()
    for seed in XML_SEEDS:
        found.update(str(element.tag) for element in etree.fromstring(seed).iter() if isinstance(element.tag, str))
    return sorted(found)


TAGS = _tags()
XML_TEXT = st.one_of(
    st.sampled_from(EDGES),
    st.text(st.characters(exclude_categories=("Cs", "Cc")) | st.sampled_from("\t\n\r"), max_size=40),
)


@st.composite
def cos_times(draw: st.DrawFn) -> str:
    """Any instant with any offset COS's pattern allows (±14:59), including the ends of datetime's range."""
    first, last = datetime(1000, 1, 1), datetime(9999, 12, 31, 23, 59, 59)
    moment = draw(st.sampled_from([first, last]) | st.datetimes(min_value=first, max_value=last))
    minutes = draw(st.sampled_from([-(14 * 60 + 59), 0, 14 * 60 + 59]) | st.integers(-(14 * 60 + 59), 14 * 60 + 59))
    sign = "-" if minutes < 0 else "+"
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"


def check(body: bytes) -> None:
    exercise(body)  # raises whatever is not a Rejected refusal


# -- bytes -------------------------------------------------------------------------------------------

_EDITS = st.sampled_from(BYTE_EDITS)


@FUZZING
@given(
    sample=st.sampled_from(SEEDS),
    other=st.sampled_from(SEEDS),
    edits=st.lists(st.tuples(_EDITS, st.integers(0, 1 << 16), st.binary(max_size=16)), min_size=1, max_size=6),
)
def test_byte_mutations_are_accepted_or_refused_cleanly(
    sample: bytes, other: bytes, edits: list[tuple[str, int, bytes]]
) -> None:
    check(edit_bytes(sample, edits, other))


# -- XML trees ---------------------------------------------------------------------------------------

_TREE_EDITS = st.sampled_from(["text", "time", "remove", "duplicate", "rename", "add", "attribute", "move", "tail"])


@FUZZING
@given(
    sample=st.sampled_from(XML_SEEDS),
    edits=st.lists(
        st.tuples(_TREE_EDITS, st.integers(0, 10_000), st.integers(0, 10_000), XML_TEXT, cos_times()),
        min_size=1,
        max_size=6,
    ),
)
@pytest.mark.slow
def test_xml_tree_mutations_are_accepted_or_refused_cleanly(
    sample: bytes, edits: list[tuple[str, int, int, str, str]]
) -> None:
    root = etree.fromstring(sample)
    for kind, first, second, text, moment in edits:
        elements = list(root.iter(tag=etree.Element))
        element = elements[first % len(elements)]
        parent = element.getparent()
        if kind == "text":
            element.text = text
        elif kind == "time":  # a time element, so the rest of the document can stay valid
            times = [found for found in elements if str(found.tag).endswith("Time")] or elements
            times[second % len(times)].text = moment
        elif kind == "remove" and parent is not None:
            parent.remove(element)
        elif kind == "duplicate" and parent is not None:
            parent.insert(parent.index(element), copy.deepcopy(element))
        elif kind == "rename":
            element.tag = TAGS[second % len(TAGS)]
        elif kind == "add":
            etree.SubElement(element, TAGS[second % len(TAGS)]).text = text
        elif kind == "attribute":
            element.set(TAGS[second % len(TAGS)], text)
        elif kind == "move" and parent is not None:
            target = elements[second % len(elements)]
            if element not in target.iterancestors() and target is not element:
                parent.remove(element)
                target.append(element)
        elif kind == "tail" and parent is not None:
            element.tail = text
    check(etree.tostring(root, encoding="utf-8", xml_declaration=bool(first % 2)))


# -- JSON documents ----------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | XML_TEXT | cos_times(),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(TAGS) | st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


@FUZZING
@given(
    sample=st.sampled_from(JSON_SEEDS),
    edits=st.lists(
        st.tuples(
            st.sampled_from(["set", "delete", "wrap", "add"]),
            st.integers(0, 10_000),
            JSON_VALUES,
            st.sampled_from(TAGS),
        ),
        min_size=1,
        max_size=6,
    ),
    ascii_only=st.booleans(),
)
@pytest.mark.slow
def test_json_mutations_are_accepted_or_refused_cleanly(
    sample: bytes, edits: list[tuple[str, int, Any, str]], ascii_only: bool
) -> None:
    document = json.loads(sample)
    for kind, position, value, tag in edits:
        slots = json_slots(document)
        if not slots:
            break
        container, key = slots[position % len(slots)]
        if kind == "set":
            container[key] = value
        elif kind == "delete":
            del container[key]
        elif kind == "wrap":
            container[key] = [container[key], value]
        elif kind == "add" and isinstance(container[key], dict):
            container[key][tag] = value
    check(json.dumps(document, ensure_ascii=ascii_only).encode())


@pytest.mark.parametrize("moment", ["9999-12-31T23:59:59-0800", "9999-12-31T23:59:59-1459"])
def test_a_valid_time_past_the_end_of_datetimes_range_in_utc_is_kept_as_sent(moment: str) -> None:
    """Found by the XML tree fuzzing above: this used to raise OverflowError (a 500 at the endpoint)."""
    sample = next(seed for seed in XML_SEEDS if b"<EndTime>2024-11-05T10:13:41+0800</EndTime>" in seed)
    body = sample.replace(b"2024-11-05T10:13:41+0800", moment.encode())
    assert exercise(body) == "accepted"
    [job] = READER.check(body, "xml", PARSER).jobs
    assert job.end_time is not None
    assert job.end_time.raw == moment
    assert job.end_time.utc is None  # kept as sent: there is no UTC instant datetime can hold


# -- coverage-guided ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(3700)  # the long run; the quick one is bounded by its subprocess timeout (300 s)
def test_coverage_guided_fuzzing_raises_nothing_unexpected_in_bounded_memory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """``python -m tests.fuzz.run``: 20,000 inputs here, 1,000,000 with RELAY_CHAOS_LONG=1 (or --chaos-long)."""
    long_run = long_mode(request.config)
    inputs = 1_000_000 if long_run else 20_000
    results = RESULTS / ("fuzz_coverage_guided_long.json" if long_run else "fuzz_coverage_guided.json")
    command = [sys.executable, "-m", "tests.fuzz.run", "--inputs", str(inputs), "--results", str(results)]
    command += ["--work", str(tmp_path)]
    done = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=3600 if long_run else 300,
        check=False,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    figures = json.loads(results.read_text())
    print(f"\ncoverage-guided fuzzing: {figures}")
    assert figures["inputs"] >= inputs
    assert figures["unexpected"] == 0
    assert figures["peak_rss_mib"] < 1024
