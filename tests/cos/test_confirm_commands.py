"""``cos-relay cos release|discard CALLBACK_ID`` and ``cos-relay deliveries list --state unconfirmed``: an admin's
decision on a callback whose jobs COS did not confirm, from a terminal."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from click.testing import CliRunner

from relay.cli import main
from relay.deliver.signing import generate_secret
from relay.domain.callback import Received
from relay.domain.confirm import ConfirmScope, Verdict
from relay.domain.filters import Filter
from relay.domain.subscribers import SubscriberSpec
from relay.ingest import Ingest, Reader
from relay.store import store_for
from tests.conftest import callback_schema, job_body, job_id

AT = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
MEDIA = ConfirmScope("media", "examplebucket-1250000000", frozenset({"media"}))


def unconfirmed(db: Path, count: int) -> list[int]:
    """``count`` callbacks whose jobs COS did not know, held for a subscriber: their ids."""
    with store_for(db) as store:
        store.add_subscriber(SubscriberSpec("hook", "http://192.0.2.1/hook", generate_secret(), Filter()), AT)
        ingest = Ingest(store, Reader(callback_schema()), [MEDIA])
        ids = [
            asyncio.run(ingest.ingest(Received(AT, "127.0.0.1", "application/xml", job_body(n), "xml")))[1].callback_id
            for n in range(1, count + 1)
        ]
        waiting = asyncio.run(store.waiting_confirmations("media", 10))
        asyncio.run(
            store.settle_confirmations([Verdict(job.item_key, job.job_id, "nonexistent") for job in waiting], AT)
        )
    return ids


def test_an_admin_releases_or_discards_an_unconfirmed_callback_from_the_terminal(tmp_path: Path) -> None:
    db = tmp_path / "relay.db"
    released, discarded = unconfirmed(db, 2)
    listed = CliRunner().invoke(main, ["deliveries", "list", "--state", "unconfirmed", "--db", str(db)])
    assert listed.exit_code == 0, listed.output
    assert listed.output.count("unconfirmed") == 2
    done = CliRunner().invoke(main, ["cos", "release", str(released), "--db", str(db)])
    assert (done.exit_code, done.output) == (0, f"callback {released}: 1 unconfirmed deliveries queued\n")
    shown = CliRunner().invoke(main, ["jobs", "show", job_id(2), "--db", str(db)])
    assert f"confirmed  unconfirmed (nonexistent, COS has: no such job), callback {discarded}" in shown.output
    done = CliRunner().invoke(main, ["cos", "discard", str(discarded), "--db", str(db)])
    assert (done.exit_code, done.output) == (0, f"callback {discarded}: 1 unconfirmed deliveries cancelled\n")
    shown = CliRunner().invoke(main, ["jobs", "show", job_id(2), "--db", str(db)])
    assert f"confirmed  discarded (nonexistent, COS has: no such job), callback {discarded}" in shown.output
    again = CliRunner().invoke(main, ["cos", "release", str(released), "--db", str(db)])
    assert again.exit_code != 0
    assert f"callback {released} has no job COS did not confirm" in again.output
    assert len(again.output.strip().splitlines()) == 1
    with store_for(db) as store:
        states = {item["subject"]: item["state"] for item in store.list_deliveries().items}
    assert states == {job_id(1): "pending", job_id(2): "cancelled"}
