"""The console's buttons: pause, resume, rotate the secret, recover, retry a delivery."""

from __future__ import annotations

from typing import Any

from tests.conftest import job_body
from tests.console.conftest import Console
from tests.live import wait_until


def delivery(console: Console, number: int) -> dict[str, Any]:
    return console.api(f"/api/deliveries/{number}")


def test_pause_then_resume_change_the_subscribers_state(signed_in: Console) -> None:
    signed_in.add_subscriber("billing", "/ok")
    answer = signed_in.post("/console/subscribers/billing/pause")
    assert (answer.status_code, answer.headers["location"]) == (303, "/console/subscribers/billing")
    assert signed_in.api("/api/subscribers/billing")["state"] == "paused"
    page = signed_in.get("/console/subscribers/billing").text
    assert ">paused<" in page
    assert ">Resume<" in page
    signed_in.post("/console/subscribers/billing/resume")
    assert signed_in.api("/api/subscribers/billing")["state"] == "enabled"


def test_a_rotated_secret_is_shown_once_on_the_answer_and_never_again(signed_in: Console) -> None:
    signed_in.add_subscriber("billing", "/ok")
    answer = signed_in.post("/console/subscribers/billing/rotate-secret")
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "no-store"
    secret = signed_in.api("/api/subscribers/billing/secret")["secret"]
    assert isinstance(secret, str)
    assert secret in answer.text
    assert "shown this once" in answer.text
    assert secret not in signed_in.get("/console/subscribers/billing").text
    assert secret not in signed_in.get("/console/subscribers").text


def test_recover_queues_failed_deliveries_again_and_says_how_many(signed_in: Console) -> None:
    signed_in.add_subscriber("billing", "/fail")
    signed_in.callback(job_body(1))
    signed_in.callback(job_body(2))
    wait_until(lambda: len(signed_in.sender.to("/fail")) == 2, what="both first attempts")
    answer = signed_in.post("/console/subscribers/billing/recover", {"since": "1h"})
    assert answer.headers["location"] == "/console/subscribers/billing?requeued=2"
    assert "Recovery queued 2 deliveries again." in signed_in.get(answer.headers["location"]).text
    wait_until(lambda: len(signed_in.sender.to("/fail")) == 4, what="both attempted again")


def test_recover_with_a_bad_time_is_a_400_page(signed_in: Console) -> None:
    signed_in.add_subscriber("billing", "/fail")
    answer = signed_in.post("/console/subscribers/billing/recover", {"since": "last tuesday"})
    assert answer.status_code == 400
    assert "since must" in answer.text


def test_retry_sends_a_delivery_again_now(signed_in: Console) -> None:
    signed_in.add_subscriber("billing", "/ok")
    signed_in.callback(job_body(1))

    def listed() -> list[dict[str, Any]]:
        items = signed_in.api("/api/deliveries")["items"]
        assert isinstance(items, list)
        return items

    wait_until(lambda: [d["state"] for d in listed()] == ["delivered"], what="the first delivery")
    # Delivered in order from the event log, it has no row: its page and button are by subscriber and event.
    [first] = listed()
    by_event = f"/console/subscribers/billing/deliveries/{first['event_id']}"
    assert "Retry now" in signed_in.get(by_event).text
    answer = signed_in.post(f"{by_event}/retry")  # written as a row first: it has an id from then on
    assert (answer.status_code, answer.headers["location"]) == (303, "/console/deliveries/1?retried=1")
    wait_until(lambda: len(signed_in.sender.to("/ok")) == 2, what="the retried attempt")
    wait_until(lambda: delivery(signed_in, 1)["attempts"] == 2, what="the attempt recorded")
    page = signed_in.get("/console/deliveries/1?retried=1").text
    assert "Queued again" in page
    assert ">manual<" in page


def test_retrying_an_unknown_delivery_is_a_404_page(signed_in: Console) -> None:
    answer = signed_in.post("/console/deliveries/77/retry")
    assert answer.status_code == 404
    assert "no delivery has id 77" in answer.text


def test_the_subscribers_list_shows_each_with_its_recent_success(signed_in: Console) -> None:
    signed_in.add_subscriber("billing", "/ok", types=["cos.job.*"])
    signed_in.add_subscriber("audit", "/fail")
    signed_in.callback(job_body(1))

    def settled() -> bool:
        found = signed_in.api("/api/deliveries")["items"]
        assert isinstance(found, list)
        return {item["subscriber"]: item["last_outcome"] for item in found} == {
            "billing": "success",
            "audit": "http_5xx",
        }

    wait_until(settled, what="both attempted")
    page = signed_in.get("/console/subscribers").text
    billing = page.split('href="/console/subscribers/billing"')[1].split("</tr>")[0]
    audit = page.split('href="/console/subscribers/audit"')[1].split("</tr>")[0]
    assert "100% of 1" in billing
    assert "cos.job.*" in billing
    assert "0% of 1" in audit
