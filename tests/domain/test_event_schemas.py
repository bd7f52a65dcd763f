"""The published event schemas: every event type has its data schema (schemas/events/) and a row in
docs/events.md, and every event made from every sample COS body (XML and JSON) is valid by them. The sink and
the fake sender also check every event a test delivers (tests/events.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from relay.domain.callback import Received
from relay.domain.events import EVENT_TYPES
from relay.ingest import Reader
from relay.validate.parse import new_xml_parser, sniff
from tests.conftest import DATA, callback_schema, job_body
from tests.events import SCHEMAS, problems

ROOT = Path(__file__).parent.parent.parent
SAMPLES = sorted(path for path in (DATA / "samples").rglob("*") if path.suffix in (".xml", ".json"))


def test_every_event_type_has_a_data_schema_and_a_row_in_the_events_page() -> None:
    page = (ROOT / "docs" / "events.md").read_text()
    for event_type in EVENT_TYPES:
        assert (SCHEMAS / "events" / f"{event_type}.schema.json").is_file(), event_type
        assert f"| `{event_type}` |" in page, event_type


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda path: str(path.relative_to(DATA)))
def test_every_event_of_every_sample_is_valid_by_the_published_schemas(sample: Path) -> None:
    body = sample.read_bytes()
    fmt = sniff(body)
    assert fmt is not None
    received = Received(datetime.now(UTC), "127.0.0.1", f"application/{fmt}", body, fmt)
    reading = Reader(callback_schema()).read(received, new_xml_parser())
    assert reading.events, sample
    for event in reading.events:
        assert problems(event.body) == [], (sample.name, event.type)


@pytest.mark.parametrize("state", ["Submitted", "Running", "Success", "Failed", "Pause", "Cancel"])
def test_a_job_event_of_each_state_is_valid_and_its_state_is_its_types(state: str) -> None:
    received = Received(datetime.now(UTC), "127.0.0.1", "application/xml", job_body(1, state), "xml")
    [event] = Reader(callback_schema()).read(received, new_xml_parser()).events
    assert problems(event.body) == []
    # The type's data schema pins State: a body whose State is another's is refused.
    other = "Running" if state != "Running" else "Success"
    assert problems(event.body.replace(f'"State":"{state}"'.encode(), f'"State":"{other}"'.encode()))
