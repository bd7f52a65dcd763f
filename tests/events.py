"""The published event schemas (schemas/cloudevent.schema.json and, per event type, schemas/events/), loaded once
for the tests that check what subscribers receive: the sink and the fake sender check every event they get."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource

SCHEMAS = Path(__file__).parent.parent / "schemas"
CONTENT_TYPE = "application/cloudevents+json"


@functools.cache
def validator() -> jsonschema.Draft202012Validator:
    """The envelope's validator, every per-type data schema reachable from it by its relative ``$ref``."""
    documents = [json.loads(path.read_text()) for path in sorted((SCHEMAS / "events").glob("*.schema.json"))]
    registry: Registry[Any] = Registry().with_resources(
        (document["$id"], Resource.from_contents(document)) for document in documents
    )
    envelope = json.loads((SCHEMAS / "cloudevent.schema.json").read_text())
    return jsonschema.Draft202012Validator(envelope, registry=registry, format_checker=jsonschema.FormatChecker())


def claims_to_be_an_event(body: bytes) -> bool:
    """A body that says it is a CloudEvent (what the gateway sends), not one a test made up to exercise a sender."""
    try:
        return isinstance(event := json.loads(body), dict) and "specversion" in event
    except ValueError:
        return False


def problems(body: bytes) -> list[str]:
    """What is wrong with an event's body by the published schemas (nothing: an empty list)."""
    try:
        event = json.loads(body)
    except ValueError as error:
        return [f"not JSON: {error}"]
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator().iter_errors(event)]
