"""What a chat robot's message costs to make, per attempt: the default message, and a subscriber's template
rendered in its sandbox (under the deadline's trace function); and a template's check when it is set.

Run: python -m bench.robots

Best of 5 rounds, per call, on the failed-transcode sample event (tests/data/samples/transcode_failed.xml).
"""

from __future__ import annotations

import timeit
from pathlib import Path

import orjson

from relay.deliver.robots.messages import describe
from relay.deliver.robots.templates import Templates, check_template
from relay.deliver.robots.wecom import WeCom
from relay.domain.clock import utc_now
from relay.domain.events import events_for
from relay.ingest import Reader
from relay.validate.parse import new_xml_parser
from relay.validate.schema import CallbackSchema

SAMPLE = Path(__file__).parent.parent / "tests" / "data" / "samples" / "transcode_failed.xml"
TEMPLATE = "{{ data.Tag }} {{ data.Code }} on {{ data.Input.Object }}\n{{ message }}"


def main() -> None:
    found = Reader(CallbackSchema.load()).check(SAMPLE.read_bytes(), "xml", new_xml_parser())
    (made,) = events_for(found, "cos-relay", utc_now())
    event = orjson.loads(made.body)
    platform = WeCom()
    templates = Templates(platform.escape)

    def default() -> None:
        message = describe(event, "https://relay.example")
        platform.payload(message, platform.markdown(message), made.id)

    def templated() -> None:
        message = describe(event, "https://relay.example")
        text = templates.render(TEMPLATE, event, message, platform.markdown(message))
        platform.payload(message, text, made.id)

    for name, call, number in (
        ("default message", default, 20_000),
        ("templated message", templated, 5_000),
        ("template check when set", lambda: check_template(TEMPLATE), 500),
    ):
        best = min(timeit.repeat(call, number=number, repeat=5)) / number
        print(f"{name}: {best * 1e6:.0f} µs")


if __name__ == "__main__":
    main()
