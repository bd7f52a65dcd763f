"""The console's COS parts: the overview shows each source's queues as the reconciler's queue check last recorded
them (as `cos-relay cos status` prints them, without calling COS on a page view); a callback COS did not confirm is
marked on the callbacks page and the job page, its page says why, and its buttons (CSRF-checked) release or
discard it."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta

from relay.domain.callback import Received
from relay.domain.confirm import ConfirmScope, Verdict
from relay.ingest import Ingest, Reader
from relay.settings.table import Settings
from relay.store import store_for
from tests.conftest import callback_schema, job_body, job_id
from tests.console.conftest import START, Console

MEDIA = ConfirmScope("media", "examplebucket-1250000000", frozenset({"media"}))


def test_the_overview_shows_each_sources_queues_as_last_checked(signed_in: Console, console_settings: Settings) -> None:
    assert "Not checked" in signed_in.get("/console/").text
    with store_for(console_settings.db_path) as store:
        queues = [
            ("p1", "media", "main", "Active", "https://relay.example.com/cos/callback", True),
            ("p2", "media", "bulk", "Paused", "off", False),
        ]
        asyncio.run(store.replace_queues("media", queues, START - timedelta(minutes=3)))
    page = signed_in.get("/console/").text
    rows = re.findall(r"<tr><td>media</td>.*?</tr>", page, re.S)
    assert len(rows) == 2
    assert all(part in rows[0] for part in ("p1", "main", "https://relay.example.com/cos/callback", ">yes<"))
    assert all(part in rows[1] for part in ("p2", "bulk", ">off<", "NOT this gateway"))
    assert "3 min ago" in page  # when it was checked


def held(console_settings: Settings, *reasons: str | None) -> list[int]:
    """Callbacks of jobs 1, 2, ... for a source with confirm, and COS's verdict on each (None: confirmed)."""
    with store_for(console_settings.db_path) as store:
        ingest = Ingest(store, Reader(callback_schema()), [MEDIA])
        ids = []
        for number in range(1, len(reasons) + 1):
            received = Received(START, "127.0.0.1", "application/xml", job_body(number), "xml")
            ids.append(asyncio.run(ingest.ingest(received))[1].callback_id)
        waiting = {job.job_id: job.item_key for job in asyncio.run(store.waiting_confirmations("media", 10))}
        verdicts = [
            Verdict(waiting[job_id(number)], job_id(number), reason, "Failed" if reason == "state_differs" else "")  # type: ignore[arg-type]
            for number, reason in enumerate(reasons, 1)
        ]
        asyncio.run(store.settle_confirmations(verdicts, START))
    return ids


def test_an_unconfirmed_callback_is_marked_says_why_and_is_released_by_its_button(
    signed_in: Console, console_settings: Settings
) -> None:
    signed_in.add_subscriber("hook", "/ok")
    forged, differs, real = held(console_settings, "nonexistent", "state_differs", None)
    listing = signed_in.get("/console/callbacks").text
    assert f'href="/console/callbacks/{forged}"' in listing
    assert len(re.findall(r">unconfirmed<", listing)) == 2
    assert ">confirmed<" in listing
    job = signed_in.get(f"/console/jobs/{job_id(2)}").text
    assert all(part in job for part in ("COS has it Failed", f"callback #{differs}"))
    page = signed_in.get(f"/console/callbacks/{forged}").text
    assert "COS does not know this job" in page
    assert f'action="/console/callbacks/{forged}/release"' in page
    assert "Release" not in signed_in.get(f"/console/callbacks/{real}").text  # nothing held: no button
    released = signed_in.post(f"/console/callbacks/{forged}/release")
    assert released.status_code == 303
    assert released.headers["location"] == f"/console/callbacks/{forged}?decided=release"
    assert "queued for delivery" in signed_in.get(released.headers["location"]).text
    assert signed_in.post(f"/console/callbacks/{differs}/discard").status_code == 303
    listed = signed_in.api("/api/deliveries")["items"]
    assert isinstance(listed, list)
    states = {item["state"] for item in listed}
    assert "unconfirmed" not in states
    assert "cancelled" in states
    assert signed_in.post(f"/console/callbacks/{forged}/release").status_code == 404  # decided already
    assert signed_in.get("/console/callbacks/999").status_code == 404
