"""The function under fuzzing: parse, schema-convert and model one body, as the endpoint does before storing it."""

from __future__ import annotations

from pathlib import Path

from relay.errors import Rejected
from relay.validate.callback import callback_from_document
from relay.validate.parse import BodyFormat, new_xml_parser, parse, sniff
from relay.validate.schema import CallbackSchema, SchemaViolation

DATA = Path(__file__).parent.parent / "data"
#: The only ways the path may refuse a body; anything else raised is a bug (the endpoint would answer 500).
ALLOWED = (Rejected, SchemaViolation)

SCHEMA = CallbackSchema.load()
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
        root = parse(body, fmt or body_format(body), PARSER)
        callback_from_document(SCHEMA.convert(root))
    except ALLOWED as refusal:
        return type(refusal).__name__
    return "accepted"
