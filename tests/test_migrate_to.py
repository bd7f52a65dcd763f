"""`cos-relay migrate-to URL`: an SQLite database moved to PostgreSQL answers the same, and carries on."""

from __future__ import annotations

import asyncio
from pathlib import Path

from click.testing import CliRunner

from relay.cli import main
from relay.deliver.signing import generate_secret
from relay.deliver.worker import LEASE_MARGIN
from relay.domain.clock import utc_now
from relay.domain.delivery import Attempt, Decision, Finished, Outcome
from relay.domain.filters import Filter
from relay.domain.subscribers import SubscriberSpec
from relay.store import Store, store_for
from relay.store.records import Target
from tests.conftest import ingest, job_body
from tests.postgres import Cluster


def everything(db: Target) -> dict[str, object]:
    """What the API and CLI would show of ``db``."""
    with store_for(db, create=False) as store:
        jobs = asyncio.run(store.list_jobs(limit=100)).items
        return {
            "counts": store.counts(),
            "jobs": jobs,
            # With their typed detail, and the events' bodies: the SQLite file keeps these compressed.
            "details": [asyncio.run(store.get_job(job["job_id"])) for job in jobs],
            "events": store.event_bodies(limit=100),
            "callbacks": asyncio.run(store.list_callbacks(limit=100)).items,
            "deliveries": [
                store.delivery_of(d["subscriber_id"], d["event_id"]) for d in store.list_deliveries(limit=100).items
            ],
            "subscribers": store.list_subscribers(),
            "token": store.secret("callback_token", "not this one", utc_now()),
        }


def attempt_one(store: Store) -> None:
    async def attempt() -> None:
        [claim, *_] = await store.claim(utc_now(), LEASE_MARGIN, 1)
        failed = Attempt(Outcome.HTTP_5XX, 500, 0.25, None, b"boom", None)
        await store.finish(
            [Finished(claim, failed, Decision("pending", utc_now()), utc_now(), utc_now())], LEASE_MARGIN
        )

    asyncio.run(attempt())


def test_migrate_to_copies_every_row_and_the_copy_answers_as_the_file_did(tmp_path: Path, postgres: Cluster) -> None:
    # Both backends by design: an SQLite file is the source, PostgreSQL the destination.
    db = tmp_path / "relay.db"
    with store_for(db) as store:
        store.secret("callback_token", "the-token", utc_now())
        spec = SubscriberSpec("hook", "http://127.0.0.1:9/hook", generate_secret(), Filter())
        store.add_subscriber(spec, utc_now())
    ingest(db, *(job_body(number) for number in range(5)), job_body(1))
    with store_for(db) as store:
        attempt_one(store)
    url = postgres.new_database()
    result = CliRunner().invoke(main, ["migrate-to", url.url, "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "Copied" in result.output
    assert everything(url) == everything(db)
    # New rows continue after the copied ones.
    [after] = ingest(url, job_body(99))
    assert after.callback_id == 7
    again = CliRunner().invoke(main, ["migrate-to", url.url, "--db", str(db)])
    assert again.exit_code == 1
    assert again.output.strip().splitlines() == [
        f"Error: the database at {url} already holds callbacks: copy into an empty one"
    ]


def test_migrate_to_needs_a_postgres_url_and_an_existing_file(tmp_path: Path) -> None:
    # SQLite only by design: the source must be an existing SQLite file.
    missing = CliRunner().invoke(main, ["migrate-to", "postgresql://x@127.0.0.1:1/x", "--db", str(tmp_path / "no.db")])
    assert missing.exit_code == 1
    assert "no database at" in missing.output
    assert not (tmp_path / "no.db").exists()
    not_url = CliRunner().invoke(main, ["migrate-to", str(tmp_path / "other.db"), "--db", str(tmp_path / "no.db")])
    assert not_url.exit_code == 1
    assert "is not a PostgreSQL URL" in not_url.output
