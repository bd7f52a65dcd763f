"""The console's COS parts in a real browser (Debian's Chromium through Playwright) against a real `cos-relay serve`
with a ``[[cos]]`` source (``confirm = true``, ``RELAY_PUBLIC_URL`` set) and the COS stand-in: the overview shows
the source's queues as its reconciliation checked them; an operator follows a forged callback from the callbacks
page to its page, reads why it is held, and releases it with its button, and the real subscriber gets it. axe-core
finds nothing serious on those pages, and nothing is requested from anywhere but the gateway."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import ConsoleMessage, Page, Request, expect, sync_playwright

from tests.browser import CHROMIUM, CHROMIUM_ARGS, axe_source, serious_violations
from tests.conftest import ADMIN_TOKEN, CALLBACK_TOKEN, callback_url, job_id
from tests.cos.standin import CosStandIn, Job, Queue
from tests.cos.test_client import CREDENTIALS
from tests.cos.test_reconcile import callback_of
from tests.databases import rows
from tests.live import ProcessServer, free_port, wait_until
from tests.sink import Sink

#: Slow tier: a gateway, the stand-in, a subscriber and a browser as real processes.
pytestmark = pytest.mark.slow


def test_the_overview_shows_the_queues_and_an_operator_releases_a_forged_callback(
    standin: CosStandIn, sink: Sink, tmp_path: Path
) -> None:
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    on = {"State": "On", "Type": "Url", "Event": "TaskFinish"}
    standin.queues["p1"] = Queue("p1", "main", notify={**on, "Url": f"{public}/cos/callback?token={CALLBACK_TOKEN}"})
    standin.queues["p2"] = Queue("p2", "bulk", state="Paused")
    config = tmp_path / "relay.toml"
    config.write_text(
        f'[[subscribers]]\nname = "hook"\nurl = "{sink.url}/ok"\n\n'
        f'[[cos]]\nname = "media"\nbucket = "examplebucket-1250000000"\nregion = "ap-guangzhou"\n'
        f'secret_id = "{CREDENTIALS.secret_id}"\nsecret_key = "{CREDENTIALS.secret_key}"\n'
        f'endpoint = "{standin.url}"\ntags = ["Transcode"]\nlookback = "1h"\nconfirm = true\n'
    )
    db = tmp_path / "relay.db"
    args = (
        *("--callback-token", CALLBACK_TOKEN, "--admin-token", ADMIN_TOKEN, "--config", str(config)),
        *("--public-url", public, "--allow-networks", "127.0.0.0/8", "--poll-interval", "0.1"),
    )
    gateway = ProcessServer(db, args=args, port=port).start()
    forged = Job(job_id(7), datetime.now(UTC) - timedelta(hours=2))  # COS never ran it
    errors: list[str] = []
    elsewhere: list[str] = []
    try:
        wait_until(lambda: len(rows(db, "SELECT queue_id FROM cos_queues")) == 2, what="the queue check")
        answer = httpx.post(f"{public}{callback_url()}", content=callback_of(forged), timeout=30)
        assert answer.json() == {"status": "accepted"}
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        wait_until(
            lambda: (
                httpx.get(f"{public}/api/callbacks", headers=admin).json()["items"][0]["confirmation"] == "unconfirmed"
            ),
            what="COS's verdict",
        )
        axe = axe_source()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_context(viewport={"width": 1280, "height": 860}).new_page()

            def console(message: ConsoleMessage) -> None:
                if message.type == "error":
                    errors.append(message.text)

            def outside(request: Request) -> None:
                if not request.url.startswith(public):
                    elsewhere.append(request.url)

            page.on("console", console)
            page.on("request", outside)
            sign_in(page, public)
            queues = page.get_by_role("region", name="COS queues")
            expect(queues.get_by_role("row").filter(has_text="p1")).to_contain_text("yes")
            expect(queues.get_by_role("row").filter(has_text="p2")).to_contain_text("NOT this gateway")
            expect(queues.get_by_role("row").filter(has_text="p2")).to_contain_text("off")
            assert serious_violations(page, axe) == []
            page.goto(f"{public}/console/callbacks")
            page.get_by_role("link", name="unconfirmed").click()
            expect(page.get_by_role("heading", level=1)).to_contain_text("read back from COS")
            expect(page.get_by_role("cell", name="nonexistent: COS does not know this job")).to_be_visible()
            assert serious_violations(page, axe) == []
            assert sink.to("/ok") == []
            page.get_by_role("button", name="Release: send its events after all").click()
            expect(page.get_by_role("status")).to_contain_text("Released")
            sink.wait_for("/ok", 1)
            browser.close()
    finally:
        gateway.stop()
    assert [request.event["subject"] for request in sink.to("/ok")] == [forged.job_id]
    assert errors == []
    assert elsewhere == []


def sign_in(page: Page, public: str) -> None:
    page.goto(f"{public}/console/login")
    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{public}/console/")
