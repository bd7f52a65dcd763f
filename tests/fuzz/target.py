"""The function under fuzzing: the ingest pipeline's read (parse, convert, model, limits), as the endpoint runs it."""

from __future__ import annotations

from pathlib import Path

from relay.domain.errors import Rejected
from relay.ingest import Reader
from relay.validate.parse import BodyFormat, new_xml_parser, sniff
from relay.validate.schema import CallbackSchema

DATA = Path(__file__).parent.parent / "data"
#: The only ways the path may refuse a body; anything else raised is a bug (the endpoint would answer 500).
ALLOWED = (Rejected,)

SCHEMA = CallbackSchema.load()
READER = Reader(SCHEMA)
PARSER = new_xml_parser()


def seeds() -> list[bytes]:
    """Every valid sample (XML and JSON) and every known-invalid one: the starting corpus."""
    paths = [*(DATA / "samples").rglob("*.xml"), *(DATA / "samples").rglob("*.json"), *(DATA / "invalid").glob("*.xml")]
    return [path.read_bytes() for path in sorted(paths)]


def body_format(body: bytes) -> BodyFormat:
    """As the endpoint decides for a generic Content-Type: the first non-blank byte, else XML."""
    return sniff(body) or "xml"


def exercise(body: bytes, fmt: BodyFormat | None = None) -> str:
    """Run the path; return ``accepted`` or the refusal's class name. Any other exception propagates."""
    try:
        READER.check(body, fmt or body_format(body), PARSER)
    except ALLOWED as refusal:
        return type(refusal).__name__
    return "accepted"
