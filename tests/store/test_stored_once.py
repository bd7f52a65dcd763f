"""Each piece of an accepted callback is stored once in the job records (issue 22, item 2): a job state's Message
and Code in its history row alone, the input's object key in the job's row alone, the rest of its detail in the
job's row; the raw body and the event keep theirs. Every read answers as before, for rows written by the
release before migration m013 too, and a job's current state is never pruned before its job."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import string
from pathlib import Path
from typing import Any

import orjson
import psycopg

from relay.deliver.signing import generate_secret
from relay.domain.clock import utc_now
from relay.domain.filters import Filter
from relay.domain.retention import Windows
from relay.domain.subscribers import SubscriberSpec
from relay.store import Store, store_for
from relay.store.packing import pack, unpack
from relay.store.records import Target
from tests.conftest import DATA, job_body, job_id, record
from tests.databases import rows

#: Columns of the job tables, read whole (a packed detail inflated): where a piece could be stored.
JOB_TABLES = ("jobs", "job_states")
RUN_ID = "icf43042c67ab601aa9e79a4f03b42e4c"
TASK_JOBS = ["j7e1b0c4a9f2d11efa3c95254001a2b3c", "j7f9a22d29f2d11ef8b1e5254001a2b3c"]


def text(seed: int, size: int) -> str:
    """Characters that compress little, as a hostile sender would send."""
    rng = random.Random(seed)
    return "".join(rng.choices(string.ascii_letters + string.digits, k=size))


def body(number: int, state: str = "Success", message: str = "", code: str = "Success", key: str = "a.mov") -> bytes:
    sent = job_body(number, state).replace(b"<Message/>", f"<Message>{message}</Message>".encode())
    sent = sent.replace(b"<Code>Success</Code>", f"<Code>{code}</Code>".encode())
    sent = sent.replace(b"uploads/2024/11/lecture-01.mov", key.encode())
    if state != "Success":  # another run of the job: an earlier EndTime
        sent = sent.replace(b"2024-11-05T10:13:41+0800", b"2024-11-05T10:13:40+0800")
    return sent


def stored_bytes(db: Target, table: str) -> list[bytes]:
    """Every value of ``table``'s rows as stored, a packed one inflated."""
    found: list[bytes] = []
    for row in rows(db, f"SELECT * FROM {table}"):  # noqa: S608
        for column, value in row.items():
            if column.endswith("_packed") or value is None:
                continue
            if isinstance(value, bytes | memoryview) and row.get(f"{column}_packed"):
                value = unpack(bytes(value), 1)
            found.append(value if isinstance(value, bytes) else str(value).encode())
    return found


def copies(db: Target, table: str, piece: str) -> int:
    return sum(value.count(piece.encode()) for value in stored_bytes(db, table))


def reads(store: Store, *jobs: str) -> dict[str, Any]:
    """What the API, the console and the CLI read of ``jobs``."""

    async def read() -> dict[str, Any]:
        got: dict[str, Any] = {"list": (await store.list_jobs(limit=500)).items}
        for job in jobs:
            got[job] = await store.get_job(job)
            got[f"{job} history"] = (await store.job_history(job, 500, None)).items  # type: ignore[union-attr]
        return got

    return asyncio.run(read())


def test_a_large_message_code_and_object_key_are_stored_once_in_the_job_records(database: Target) -> None:
    message, code, key = text(1, 4096), text(2, 1000), text(3, 4000)
    with store_for(database) as store:
        store.add_subscriber(SubscriberSpec("hook", "http://127.0.0.1:9/h", generate_secret(), Filter()), utc_now())
        asyncio.run(record(store, body(1, message=message, code=code, key=key)))
        got = reads(store, job_id(1))
        event = orjson.loads(store.event_bodies(limit=10)[0])
    for piece in (message, code, key):
        assert sum(copies(database, table, piece) for table in JOB_TABLES) == 1
        assert copies(database, "events", piece) == 1
    assert copies(database, "job_states", message) == 1  # the history holds it, the job's row reads it there
    job = got[job_id(1)]
    assert (job["message"], job["code"], job["input"]["object"]) == (message, code, key)
    assert job["detail"] == orjson.dumps(event["data"])  # as sent: Message, Code and Object in place, keys in order
    assert [entry["message"] for entry in got[f"{job_id(1)} history"]] == [message]
    [listed] = got["list"]
    assert (listed["message"], listed["code"]) == (message, code)


def test_a_new_state_reads_its_own_message_and_detail_and_the_history_keeps_each_once(database: Target) -> None:
    running, success = text(4, 3000), text(5, 3000)
    with store_for(database) as store:
        asyncio.run(record(store, body(1, "Running", message=running), body(1, message=success)))
        asyncio.run(record(store, body(1, "Running", message=running)))  # a replay: nothing new
        got = reads(store, job_id(1))
    job = got[job_id(1)]
    assert (job["state"], job["message"], orjson.loads(job["detail"])["Message"]) == ("Success", success, success)
    assert [entry["message"] for entry in got[f"{job_id(1)} history"]] == [success, running]
    assert [copies(database, "job_states", piece) for piece in (running, success)] == [1, 1]
    assert [copies(database, "jobs", piece) for piece in (running, success)] == [0, 0]


def test_a_state_arriving_late_leaves_the_current_one_and_its_text(database: Target) -> None:
    running, success = text(6, 100), text(7, 100)
    with store_for(database) as store:
        asyncio.run(record(store, body(1, message=success), body(1, "Running", message=running)))
        job = reads(store, job_id(1))[job_id(1)]
    assert (job["state"], job["message"], orjson.loads(job["detail"])["Message"]) == ("Success", success, success)
    assert [entry["state"] for entry in job["history"]] == ["Success", "Running"]


def test_an_empty_message_and_a_sample_read_back_as_sent(database: Target) -> None:
    with store_for(database) as store:
        asyncio.run(record(store, job_body(1)))
        job = reads(store, job_id(1))[job_id(1)]
        event = orjson.loads(store.event_bodies(limit=10)[0])
    assert job["detail"] == orjson.dumps(event["data"])
    assert job["message"] == event["data"].get("Message")


def test_a_workflow_runs_object_key_and_tasks_are_stored_once_and_read_back_as_sent(database: Target) -> None:
    key = text(30, 4000)
    sample = (DATA / "samples" / "workflow_finish_success.xml").read_bytes()
    sent = sample.replace(b"<Object>ugc/u_90210/v_7781.mp4</Object>", f"<Object>{key}</Object>".encode())
    with store_for(database) as store:
        asyncio.run(record(store, sent))
        run = asyncio.run(store.get_workflow(RUN_ID))
        event = orjson.loads(store.event_bodies(limit=10)[0])
    assert run is not None
    assert orjson.dumps(run["detail"]) == orjson.dumps(event["data"])  # as sent, keys in order
    assert (run["object_key"], [task["job_id"] for task in run["tasks"]]) == (key, TASK_JOBS)
    workflow_tables = ("workflow_runs", "workflow_tasks")
    assert sum(copies(database, table, key) for table in workflow_tables) == 1
    # Each task's JSON is in the run's detail alone; its row keeps what lists it and finds its run.
    assert sum(copies(database, table, "t226d4a28ca56747b7c69963aba68e325f") for table in workflow_tables) == 1
    assert rows(database, "SELECT detail FROM workflow_tasks") == [{"detail": None}] * len(TASK_JOBS)


def one_callback(*bodies: bytes) -> bytes:
    """One body carrying the JobsDetail of each of ``bodies`` (samples of one JobsDetail each)."""
    details = [sent[sent.index(b"<JobsDetail>") : sent.rindex(b"</Response>")] for sent in bodies]
    return bodies[0].replace(details[0], b"".join(details))


def test_a_jobs_current_state_goes_only_with_its_job_whatever_the_batch(database: Target) -> None:
    # Jobs of one callback share its id: a batch of one takes jobs and history rows in orders of their own.
    messages = [text(10 + n, 50) for n in range(4)]
    with store_for(database) as store:
        asyncio.run(record(store, one_callback(*(body(n, message=messages[n]) for n in range(4)))))
        cutoffs = Windows.of_seconds(0, 0).cutoffs(utc_now())
        while any(asyncio.run(store.prune(cutoffs, 1, utc_now(), 0)).values()):
            left = asyncio.run(store.list_jobs()).items
            assert [job["message"] for job in left] == [messages[int(job["job_id"][1:], 16)] for job in left]
        assert store.counts()["jobs"] == store.counts()["job_states"] == 0


def as_before_m013(db: Target, store: Store, jobs: list[str]) -> None:
    """Rewrite the job rows as the release before m013 wrote them (their own Code, Message and whole detail) and
    take the step away, so that the next open migrates them."""

    async def details() -> dict[str, Any]:
        return {job: await store.get_job(job) for job in jobs}

    found = asyncio.run(details())
    changes = []
    for job, read in found.items():
        detail = read["detail"]
        stored = pack(detail) if isinstance(db, Path) else detail.decode()
        changes.append((read["code"], read["message"], stored, job))
    if isinstance(db, Path):
        with sqlite3.connect(db) as file:
            file.executemany(
                "UPDATE jobs SET code = ?, message = ?, detail = ?, detail_packed = 1 WHERE job_id = ?", changes
            )
            file.execute("ALTER TABLE jobs DROP COLUMN state_id")
            file.execute("DELETE FROM _sqlite_migrations WHERE name = 'm013_job_state_ref'")
        return
    with psycopg.connect(db.url) as server:
        server.cursor().executemany("UPDATE jobs SET code = %s, message = %s, detail = %s WHERE job_id = %s", changes)
        server.execute("ALTER TABLE jobs DROP COLUMN state_id")
        server.execute("DELETE FROM relay_migrations WHERE version = 13")


def test_a_database_of_the_release_before_migrates_and_reads_the_same(database: Target) -> None:
    messages = {n: text(20 + n, 2000) for n in range(3)}
    jobs = [job_id(n) for n in messages]
    bodies = [body(n, "Running", message=f"{messages[n]} running") for n in messages]
    with store_for(database) as store:
        asyncio.run(record(store, *bodies, *(body(n, message=messages[n]) for n in messages)))
        before = reads(store, *jobs)
        as_before_m013(database, store, jobs)
    assert [copies(database, "jobs", messages[n]) for n in messages] == [2, 2, 2]  # message and detail: the old shape
    with store_for(database) as store:  # migrates
        assert reads(store, *jobs) == before
        later = body(0, "Failed", message="again", code="Timeout").replace(b"10:13:40+", b"10:13:42+")
        asyncio.run(record(store, later))
        after = reads(store, *jobs)
    assert (after[jobs[0]]["state"], after[jobs[0]]["message"], after[jobs[0]]["code"]) == (
        "Failed",
        "again",
        "Timeout",
    )
    assert orjson.loads(after[jobs[0]]["detail"])["Message"] == "again"
    assert [e["message"] for e in after[f"{jobs[0]} history"]][1:] == [messages[0], f"{messages[0]} running"]
    assert copies(database, "jobs", messages[0]) == 0  # its row now in the new shape
    assert {job: after[job] for job in jobs[1:]} == {job: before[job] for job in jobs[1:]}
