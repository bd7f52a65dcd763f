"""CloudEvents as the gateway makes them from the COS samples (tests/data/samples), as a robot reads them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from relay.domain.events import events_for
from relay.ingest import Reader
from relay.validate.parse import new_xml_parser
from tests.conftest import DATA, callback_schema

RECEIVED = datetime(2024, 11, 5, 10, 0, tzinfo=UTC)


def events(sample: str, body: bytes | None = None) -> list[dict[str, Any]]:
    """The events of ``samples/{sample}.xml`` (or of ``body``), parsed as a robot parses a claim's body."""
    xml = body if body is not None else (DATA / "samples" / f"{sample}.xml").read_bytes()
    found = Reader(callback_schema()).check(xml, "xml", new_xml_parser())
    return [orjson.loads(event.body) for event in events_for(found, "cos-relay", RECEIVED)]


def event(sample: str) -> dict[str, Any]:
    (only,) = events(sample)
    return only
