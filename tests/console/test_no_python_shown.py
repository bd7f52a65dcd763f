"""Nothing shows Python to a user: a value COS did not send is left out or shown as a dash, never as ``None``,
in the CLI and the console; a finished delivery has no next attempt to show (issue 25, items 5 and 6)."""

from __future__ import annotations

import anyio.to_thread
import pytest
from click.testing import CliRunner

from relay.cli import main
from relay.settings.table import Settings
from tests.conftest import CALLBACK_TOKEN, DATA, Outbox, job_body
from tests.console.conftest import Console
from tests.live import db_text

#: The document sample's Input has an Object only: no bucket, no region.
DOC = (DATA / "samples" / "doc_process_success.xml").read_bytes()
DOC_JOB = "d15401d9d4f929b0e6e0b6a2dc21ac767"


def test_the_console_shows_a_job_without_bucket_or_region_without_none(signed_in: Console) -> None:
    assert signed_in.http.post(f"/cos/callback?token={CALLBACK_TOKEN}", content=DOC).status_code == 200
    page = signed_in.http.get(f"/console/jobs/{DOC_JOB}")
    assert page.status_code == 200
    assert "docs/q3-report.pptx" in page.text
    assert "None" not in page.text


@pytest.mark.anyio
async def test_the_cli_shows_neither_none_nor_a_next_attempt_of_a_dead_delivery(
    outbox: Outbox, outbox_settings: Settings
) -> None:
    outbox.add("hook", "/fail")  # 500 each time: dead after the schedule (10, 60, 300 s)
    await outbox.ingest(DOC, job_body(1))
    await outbox.step()
    for delay in (10, 60, 300):
        await outbox.after(delay)
    assert {delivery["state"] for delivery in outbox.deliveries()} == {"dead"}
    db = db_text(outbox_settings.db_path)
    # The CLI runs its own event loop: off this test's.
    shown = await anyio.to_thread.run_sync(lambda: CliRunner().invoke(main, ["jobs", "show", DOC_JOB, "--db", db]))
    assert shown.exit_code == 0, shown.output
    assert "docs/q3-report.pptx" in shown.output
    assert "None" not in shown.output
    listed = CliRunner().invoke(main, ["deliveries", "list", "--db", db])
    assert listed.exit_code == 0, listed.output
    header, *rows = listed.output.splitlines()
    assert header.split()[-2:] == ["next_attempt_at", "event_id"]
    assert rows
    assert all(row.split()[1] == "dead" and row.split()[-2] == "-" for row in rows)


@pytest.mark.anyio
async def test_the_cli_shows_a_subscribers_flags_in_words(outbox: Outbox, outbox_settings: Settings) -> None:
    outbox.add("hook", "/ok")
    shown = CliRunner().invoke(main, ["subscribers", "show", "hook", "--db", db_text(outbox_settings.db_path)])
    assert shown.exit_code == 0, shown.output
    assert "store_response" in shown.output
    assert "False" not in shown.output
    assert "True" not in shown.output
