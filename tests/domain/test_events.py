"""Events from a callback: one per item, ids stable across duplicates, bodies as sent; filters and fan-out."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from relay.domain.callback import Callback
from relay.domain.events import Event, event_id, events_for
from relay.domain.fanout import fan_out
from relay.domain.filters import Filter
from relay.domain.subscribers import Subscriber
from relay.ingest import Reader
from relay.validate.parse import new_xml_parser
from relay.validate.schema import CallbackSchema

SAMPLES = Path(__file__).parent.parent / "data" / "samples"
RECEIVED = datetime(2024, 11, 5, 10, 0, tzinfo=UTC)
READER = Reader(CallbackSchema.load())


def any_job_sample() -> Callback:
    for path in sorted(SAMPLES.rglob("*.xml")):
        found = READER.check(path.read_bytes(), "xml", new_xml_parser())
        if found.jobs:
            return found
    raise AssertionError("no sample carries a job")


def event(type_: str = "cos.job.succeeded", **match: str | None) -> Event:
    return Event("id", type_, "j1", "job:j1:Success:", b"{}", **match)


def test_a_job_becomes_one_cloudevent_whose_id_is_stable_for_its_item() -> None:
    found = any_job_sample()
    events = events_for(found, "gw", RECEIVED)
    assert len(events) == len(found.jobs) + len(found.workflows) + (1 if found.nonexistent_job_ids else 0)
    first, job = events[0], found.jobs[0]
    assert first.id == event_id(job.dedup_key)
    assert events_for(found, "gw", RECEIVED)[0].body == first.body  # the same bytes every time
    body = orjson.loads(first.body)
    assert body["specversion"] == "1.0"
    assert body["id"] == first.id
    assert body["type"] == first.type
    assert body["type"].startswith("cos.job.")
    assert body["subject"] == job.job_id
    assert body["source"].startswith("/cos-relay/gw")
    assert body["data"] == job.detail


def test_nonexistent_job_ids_make_one_event_listing_them() -> None:
    found = Callback(event_name=None, nonexistent_job_ids=("a", "b"))
    [only] = events_for(found, "gw", RECEIVED)
    assert only.type == "cos.job.nonexistent"
    assert orjson.loads(only.body)["data"] == {"NonExistJobIds": ["a", "b"]}
    assert orjson.loads(only.body)["time"] == "2024-11-05T10:00:00Z"


def test_an_empty_callback_makes_no_events() -> None:
    assert events_for(Callback(event_name=None), "gw", RECEIVED) == []


@pytest.mark.parametrize(
    ("filter_", "candidate", "matches"),
    [
        (Filter(), event(), True),
        (Filter(("cos.job.*",)), event(), True),
        (Filter(("cos.workflow.*",)), event(), False),
        (Filter(("cos.job.failed", "cos.job.succeeded")), event(), True),
        (Filter(match={"tag": "Transcode"}), event(tag="Transcode"), True),
        (Filter(match={"tag": "Transcode"}), event(tag="Snapshot"), False),
        (Filter(match={"object_prefix": "in/"}), event(object_key="in/a.mp4"), True),
        (Filter(match={"object_prefix": "in/"}), event(object_key="out/a.mp4"), False),
        (Filter(match={"object_prefix": "in/"}), event(), False),
        (Filter(match={"bucket": "b-1", "state": "Success"}), event(bucket="b-1", state="Success"), True),
        (Filter(match={"bucket": "b-1", "state": "Success"}), event(bucket="b-1", state="Failed"), False),
    ],
)
def test_a_filter_matches_types_by_wildcard_and_attributes_exactly(
    filter_: Filter, candidate: Event, matches: bool
) -> None:
    assert filter_.matches(candidate) is matches


def test_only_the_default_filter_matches_everything_without_looking() -> None:
    assert Filter().everything
    assert not Filter(("cos.job.*",)).everything
    assert not Filter(match={"tag": "x"}).everything


@pytest.mark.parametrize(
    ("types", "pairs", "message"),
    [((), ["tag"], "KEY=VALUE"), ((), ["=x"], "KEY=VALUE"), ((), ["colour=red"], "unknown filter key")],
)
def test_a_filter_refuses_what_it_cannot_match(types: tuple[str, ...], pairs: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Filter.parse(types, pairs)


def test_filter_parse_reads_cli_pairs_and_defaults_to_every_type() -> None:
    assert Filter.parse([], ["tag=Transcode", "object_prefix=a=b"]) == Filter(
        ("*",), {"tag": "Transcode", "object_prefix": "a=b"}
    )


def test_fan_out_owes_each_event_to_every_matching_subscriber_whatever_its_state() -> None:
    everyone = Subscriber(1, "all", "https://a.example/", "whsec_x", Filter())
    jobs_only = Subscriber(2, "jobs", "https://b.example/", "whsec_x", Filter(("cos.job.*",)))
    tagged = Subscriber(3, "tagged", "https://c.example/", "whsec_x", Filter(match={"tag": "Other"}))
    owed = fan_out([event(tag="Transcode"), event("cos.workflow.succeeded")], [everyone, jobs_only, tagged])
    assert [o.subscriber_ids for o in owed] == [(1, 2), (1,)]
