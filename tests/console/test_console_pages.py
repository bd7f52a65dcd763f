"""What the console's pages show, and that every value from COS or a subscriber is shown as text."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from relay.console.render import ago, pretty, tone
from tests.conftest import job_body, job_id
from tests.console.conftest import Console
from tests.live import wait_until

MARKUP = "<img src=x onerror=alert(1)>"


def with_object_key(number: int, key: str) -> bytes:
    escaped = key.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return job_body(number).replace(b"uploads/2024/11/lecture-01.mov", escaped.encode())


def test_finding_a_job_by_id_opens_its_page(signed_in: Console) -> None:
    signed_in.callback(job_body(7))
    answer = signed_in.get(f"/console/jobs?job_id={job_id(7)}")
    assert (answer.status_code, answer.headers["location"]) == (303, f"/console/jobs/{job_id(7)}")


def test_an_unknown_job_id_is_a_404_page_naming_it(signed_in: Console) -> None:
    answer = signed_in.get("/console/jobs?job_id=jnope")
    assert answer.status_code == 404
    assert "no job has the id &#39;jnope&#39;" in answer.text


@pytest.mark.parametrize(
    "query", ["state=bogus", "since=yesterday", "cursor=abc", "state=Failed&state=Success", "since=99999999999d"]
)
def test_a_bad_filter_is_a_400_page_saying_why_never_a_500(signed_in: Console, query: str) -> None:
    answer = signed_in.get(f"/console/jobs?{query}")
    assert answer.status_code == 400
    assert 'role="alert"' in answer.text


def test_the_jobs_list_filters_by_state_and_pages_by_cursor(signed_in: Console) -> None:
    for number in range(55):
        signed_in.callback(job_body(number, "Failed" if number % 5 == 0 else "Success"))
    first = signed_in.get("/console/jobs?state=success").text
    assert job_id(54) in first
    assert job_id(50) not in first  # Failed
    assert "Older jobs" not in first  # 44 Success jobs: one page
    everything = signed_in.get("/console/jobs").text
    assert job_id(54) in everything
    assert job_id(4) not in everything
    cursor = everything.split('href="/console/jobs?cursor=')[1].split('"')[0]
    older = signed_in.get(f"/console/jobs?cursor={cursor.replace('%3A', ':')}").text
    assert job_id(4) in older
    assert job_id(54) not in older


def test_a_job_page_shows_its_timeline_input_detail_callbacks_and_deliveries(signed_in: Console) -> None:
    signed_in.add_subscriber("billing", "/ok")
    signed_in.callback(job_body(3, "Running"))
    signed_in.callback(job_body(3, "Success"))
    wait_until(lambda: len(signed_in.sender.to("/ok")) == 2, what="both events delivered")
    page = signed_in.get(f"/console/jobs/{job_id(3)}").text
    timeline = page.split('<ol class="timeline">')[1].split("</ol>")[0]
    assert timeline.index(">Running<") < timeline.index(">Success<")
    assert "uploads/2024/11/lecture-01.mov" in page
    assert "&#34;Operation&#34;" in page  # the typed detail, as escaped JSON text
    assert page.count("<summary>Callback #") == 2
    # By id, or (delivered in order from the event log: no row) by subscriber and event.
    assert len(re.findall(r'href="/console/(?:deliveries/\d+|subscribers/billing/deliveries/[^"/]+)"', page)) == 2
    assert "cos.job.succeeded" in page


def test_a_callback_whose_object_key_carries_markup_shows_it_as_text(signed_in: Console) -> None:
    signed_in.callback(with_object_key(9, MARKUP))
    for page in ("/console/jobs", f"/console/jobs/{job_id(9)}"):
        html = signed_in.get(page).text
        assert MARKUP not in html
        assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_the_callbacks_page_shows_a_refused_body_with_its_reason_and_kept_prefix(signed_in: Console) -> None:
    signed_in.callback(b"<Response><JobsDetail>" + MARKUP.encode())
    page = signed_in.get("/console/callbacks?outcome=rejected").text
    assert ">malformed<" in page
    assert "not well-formed" in page
    assert "&lt;Response&gt;&lt;JobsDetail&gt;&lt;img" in page
    assert MARKUP not in page


def test_the_overview_counts_callbacks_per_minute_jobs_by_tag_the_outbox_and_subscribers(signed_in: Console) -> None:
    signed_in.add_subscriber("billing", "/fail")
    signed_in.callback(job_body(1))
    signed_in.callback(job_body(2, "Failed"))
    signed_in.callback(b"<nope")
    wait_until(lambda: len(signed_in.sender.to("/fail")) == 2, what="both first attempts")
    # Sent is not yet recorded: wait until both failed attempts are back in the outbox as pending.
    wait_until(
        lambda: len(signed_in.api("/api/deliveries?state=pending")["items"]) == 2,  # type: ignore[arg-type]
        what="both deliveries pending again",
    )
    page = signed_in.get("/console/").text
    assert '<script src="/console/static/overview.js" defer></script>' in page
    minute = signed_in.clock().strftime("%Y-%m-%d %H:%M")
    row = page.split(f"<td>{minute}</td>")[1].split("</tr>")[0]
    # The columns are the outcomes seen, in order: accepted, malformed (drawn as bad).
    assert row == '<td class="num">2</td><td class="num tone-bad">1</td>'
    tags = page.split('id="tags-h"')[1]
    assert ">Transcode</a>" in tags
    outbox = page.split('id="outbox-h"')[1].split("</table>")[0]
    assert "pending" in outbox
    assert ">2<" in outbox
    assert ">enabled<" in page.split('id="subs-h"')[1]


def test_a_delivery_page_shows_each_attempt_and_the_next_one(signed_in: Console) -> None:
    signed_in.add_subscriber("billing", "/fail", store_response=True)
    signed_in.callback(job_body(1))
    wait_until(lambda: len(signed_in.sender.to("/fail")) == 1, what="the first attempt")
    page = signed_in.get("/console/deliveries/1").text
    assert ">http_5xx<" in page
    assert ">500<" in page
    assert "boom" in page  # the response excerpt
    assert re.search(r">in ([89]|1[0-2]) s<", page)  # the next attempt: the schedule's 10 s, ±20% jitter
    assert "Retry now" in page
    assert "&#34;type&#34;: &#34;cos.job.succeeded&#34;" in page


def test_a_subscriber_page_shows_its_handshake_verdict_only_when_it_asks_for_one(signed_in: Console) -> None:
    signed_in.add_subscriber("asks", "/ok", handshake=True)
    signed_in.add_subscriber("plain", "/ok")
    assert "validated before delivery (CloudEvents): pending</dd>" in signed_in.get("/console/subscribers/asks").text
    assert "Handshake" not in signed_in.get("/console/subscribers/plain").text


@pytest.mark.parametrize("page", ["/console/deliveries/999", "/console/deliveries/abc", "/console/subscribers/nope"])
def test_unknown_or_malformed_ids_are_pages_saying_so(signed_in: Console, page: str) -> None:
    answer = signed_in.get(page)
    assert answer.status_code in (400, 404)
    assert 'role="alert"' in answer.text


NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (NOW - timedelta(seconds=2), "just now"),
        (NOW - timedelta(seconds=42), "42 s ago"),
        (NOW - timedelta(minutes=3, seconds=10), "3 min ago"),
        (NOW - timedelta(hours=5), "5 h ago"),
        (NOW - timedelta(days=3), "3 d ago"),
        (NOW + timedelta(seconds=10), "in 10 s"),
        ("2026-01-05T08:00:00.000000Z", "1 h ago"),
        ("not a time", ""),
        (None, ""),
    ],
)
def test_times_read_relative_to_now(moment: datetime | str | None, expected: str) -> None:
    assert ago(moment, NOW) == expected


def test_states_have_a_colour_and_unknown_ones_a_neutral_one() -> None:
    assert (tone("Success"), tone("dead"), tone("paused"), tone("<b>")) == ("good", "bad", "held", "muted")


def test_json_is_indented_and_anything_else_shown_as_it_is() -> None:
    assert pretty(b'{"b":1,"a":[2]}') == '{\n  "a": [\n    2\n  ],\n  "b": 1\n}'
    assert pretty(b"<not json>") == "<not json>"
