"""A leaked callback token cannot make admin reads huge or slow, against a real ``cos-relay serve`` on both
backends: every free-text field and a job's history are bounded at ingest (422, quarantined), a job's
history, callbacks and deliveries are paged in the API and the console, a listing's page is bounded in
size, and /healthz answers while the largest reads the bounds allow are served."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import httpx
import orjson
import pytest

from bench import admin_reads
from bench.stall import Prober
from relay.domain.callback import MAX_JOB_STATES
from relay.store.records import Target
from relay.store.rows import JOB_HISTORY, PAGE_CHARS
from tests.conftest import ADMIN_TOKEN, CALLBACK_TOKEN, DATA, callback_url, job_id
from tests.databases import rows
from tests.live import ProcessServer, wait_until

TOKENS = ("--callback-token", CALLBACK_TOKEN, "--admin-token", ADMIN_TOKEN, "--log-level", "warning")
#: The subscriber's address: a closed port on loopback (its deliveries fail and wait for a retry).
HOOK = "http://127.0.0.1:9/hook"
FAILED = (DATA / "samples" / "transcode_failed.xml").read_bytes()
JSON_SAMPLE = (DATA / "samples" / "json" / "transcode_task_finish.json").read_bytes()
#: A page's bound in bytes: its characters (4 bytes at most in UTF-8) and the JSON around them.
PAGE_BYTES = 4 * PAGE_CHARS + 256 * 1024
#: PostgreSQL too: its reads' own size bounds and the history cap enforced inside its transaction, through the
#: real server (one per backend for the module; a real process: the slow tier).
pytestmark = [pytest.mark.slow, pytest.mark.both_backends]


@pytest.fixture(scope="module")
def server(module_database: Target) -> Iterator[ProcessServer]:
    running = ProcessServer(module_database, args=(*TOKENS, "--allow-networks", "127.0.0.0/8")).start()
    with httpx.Client(base_url=running.url, headers={"authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
        added = http.post("/api/subscribers", json={"name": "hook", "url": HOOK, "retry_schedule": [3600]})
        assert added.status_code == 201, added.text
    yield running
    running.stop()


@pytest.fixture
def http(server: ProcessServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120, headers={"authorization": f"Bearer {ADMIN_TOKEN}"}) as client:
        yield client


def post(http: httpx.Client, body: bytes, content_type: str = "application/xml") -> httpx.Response:
    return http.post(callback_url(), content=body, headers={"content-type": content_type})


def states(job: str, count: int, first: int = 0) -> bytes:
    """One callback carrying ``count`` new states of ``job`` (EndTime one second apart)."""
    return next(admin_reads.bodies([state(job, second) for second in range(first, first + count)]))


def state(job: str, second: int) -> str:
    end = f"2024-11-05T{11 + second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}+0800"
    return (
        f"<JobsDetail><Code>E</Code><Message>m{second}</Message><JobId>{job}</JobId><Tag>Transcode</Tag>"
        f"<State>Failed</State><EndTime>{end}</EndTime></JobsDetail>"
    )


def last_quarantined(server: ProcessServer) -> dict[str, object]:
    [row] = rows(server.db_path, "SELECT * FROM quarantine ORDER BY id DESC LIMIT 1")
    return row


def pages(http: httpx.Client, path: str, limit: int) -> list[list[dict[str, object]]]:
    """Every page of a listing at ``limit`` items a page, following ``next_cursor``."""
    found, cursor = [], None
    while True:
        answer = http.get(path, params={"limit": limit, **({"cursor": cursor} if cursor else {})})
        assert answer.status_code == 200, answer.text
        page = answer.json()
        found.append(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return found


# -- bounds at ingest ---------------------------------------------------------------------------------


def _xml_with(element: str, text: str) -> bytes:
    return re.sub(f"<{element}>[^<]*</{element}>".encode(), f"<{element}>{text}</{element}>".encode(), FAILED)


def _json_with_user_data(text: str) -> bytes:
    document = orjson.loads(JSON_SAMPLE)
    document["JobsDetail"]["Operation"]["UserData"] = text
    return orjson.dumps(document)


OVERSIZED: dict[str, tuple[Callable[[int], bytes], str, str, int]] = {
    "xml Message": (
        lambda n: _xml_with("Message", "é" * n),
        "application/xml",
        "/Response/JobsDetail[1]/Message",
        4096,
    ),
    "xml Code": (lambda n: _xml_with("Code", "c" * n), "application/xml", "/Response/JobsDetail[1]/Code", 1024),
    "xml object key": (
        lambda n: _xml_with("Object", "k" * n),
        "application/xml",
        "/Response/JobsDetail[1]/Input/Object",
        4096,
    ),
    "json UserData": (
        lambda n: _json_with_user_data("u" * n),
        "application/json",
        "/Response/JobsDetail[1]/Operation/UserData",
        4096,
    ),
}


@pytest.mark.parametrize("case", sorted(OVERSIZED))
def test_a_free_text_field_over_its_bound_is_refused_422_with_its_path_and_quarantined(
    case: str, server: ProcessServer, http: httpx.Client
) -> None:
    build, content_type, path, bound = OVERSIZED[case]
    over = post(http, build(bound + 1), content_type)
    assert over.status_code == 422, over.text
    assert over.json()["path"] == path
    assert f"maxLength {bound}" in over.json()["rule"]
    quarantined = last_quarantined(server)
    assert quarantined["outcome"] == "invalid"
    assert f"maxLength {bound}" in str(quarantined["reason"])
    at_bound = post(http, build(bound), content_type)
    assert at_bound.status_code == 200, at_bound.text


def test_a_job_given_more_states_than_its_history_holds_is_refused_422_and_quarantined(
    server: ProcessServer, http: httpx.Client
) -> None:
    full, fresh = job_id(0xF011), job_id(0xF012)
    assert post(http, states(full, MAX_JOB_STATES)).status_code == 200
    one_more = post(http, states(full, 1, first=MAX_JOB_STATES))
    assert one_more.status_code == 422, one_more.text
    assert one_more.json()["detail"] == f"too many states for job {full}: its history already holds {MAX_JOB_STATES}"
    assert one_more.json()["path"] == "/Response/JobsDetail[1]/JobId"
    quarantined = last_quarantined(server)
    assert quarantined["outcome"] == "invalid"
    assert f"too many states for job {full}" in str(quarantined["reason"])
    assert sum(map(len, pages(http, f"/api/jobs/{full}/history", 500))) == MAX_JOB_STATES
    # A state already recorded is still a duplicate, not a refusal.
    assert post(http, states(full, 1, first=3)).json() == {"status": "duplicate"}
    # Within one callback: the first state past the bound names its JobsDetail; nothing of the callback is kept.
    too_many = post(http, states(fresh, MAX_JOB_STATES + 1))
    assert too_many.status_code == 422
    assert too_many.json()["path"] == f"/Response/JobsDetail[{MAX_JOB_STATES + 1}]/JobId"
    assert http.get(f"/api/jobs/{fresh}").status_code == 404


def test_the_quarantine_keeps_a_bounded_reason_and_path(server: ProcessServer, http: httpx.Client) -> None:
    name = "K" * 50_000  # libxml2's longest name; a closed element (CosHeaders) reports it in the path
    body = _xml_with("Object", "x").replace(b"</Input>", f"<CosHeaders><{name}/></CosHeaders></Input>".encode())
    refused = post(http, body)
    assert refused.status_code == 422, refused.text[:300]
    quarantined = last_quarantined(server)
    assert len(str(quarantined["error_path"])) <= 1024
    assert len(str(quarantined["reason"])) <= 1024


# -- paging -------------------------------------------------------------------------------------------

PAGED = job_id(0xA9ED)
STATES = JOB_HISTORY + 5


@pytest.fixture(scope="module")
def paged_job(server: ProcessServer) -> str:
    """A job with more states than its JSON carries, each from its own callback, each owing a delivery."""
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for second in range(STATES):
            assert post(client, states(PAGED, 1, first=second)).status_code == 200
    return PAGED


def test_a_job_carries_its_latest_states_and_a_cursor_to_the_older_ones(paged_job: str, http: httpx.Client) -> None:
    job = http.get(f"/api/jobs/{paged_job}").json()
    messages = [entry["message"] for entry in job["history"]]
    assert messages == [f"m{second}" for second in range(STATES - JOB_HISTORY, STATES)]  # the latest, oldest first
    older = http.get(f"/api/jobs/{paged_job}/history", params={"cursor": job["history_next_cursor"]}).json()
    assert [entry["message"] for entry in older["items"]] == [f"m{second}" for second in range(4, -1, -1)]
    assert older["next_cursor"] is None


@pytest.mark.parametrize("part", ["history", "callbacks", "deliveries"])
def test_a_jobs_history_callbacks_and_deliveries_page_newest_first(
    part: str, paged_job: str, http: httpx.Client
) -> None:
    found = pages(http, f"/api/jobs/{paged_job}/{part}", 10)
    assert [len(page) for page in found] == [10, 10, 5]
    items = [item for page in found for item in page]
    if part == "history":
        assert [item["message"] for item in items] == [f"m{second}" for second in range(STATES - 1, -1, -1)]
    elif part == "callbacks":
        ids = [int(str(item["id"])) for item in items]
        assert ids == sorted(set(ids), reverse=True)
    else:  # by event, newest first, each once (a row's id is the order its failure came in, not its event's)
        created = [str(item["created_at"]) for item in items]
        assert created == sorted(created, reverse=True)
        assert len({item["event_id"] for item in items}) == STATES
    if part == "deliveries":
        assert {item["subject"] for item in items} == {paged_job}
    assert http.get(f"/api/jobs/{job_id(0xDEAD)}/{part}").status_code == 404


def test_the_console_job_page_shows_twenty_of_each_with_links_to_older_ones(
    paged_job: str, server: ProcessServer
) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as browser:
        signed_in = browser.post("/console/login", data={"token": ADMIN_TOKEN}, headers={"origin": server.url})
        assert signed_in.status_code == 303
        page = browser.get(f"/console/jobs/{paged_job}").text
        counted = {
            "history": len(re.findall(r"<li>", page.split('<ol class="timeline">')[1].split("</ol>")[0])),
            # A delivery's link: by its id, or (no row: delivered in order or pending in the event log) by
            # subscriber and event.
            "deliveries": len(
                re.findall(r'href="/console/(?:deliveries/\d+|subscribers/[^"/]+/deliveries/[^"/]+)"', page)
            ),
            "callbacks": page.count("<details>"),
        }
        assert counted == {"history": 20, "deliveries": 20, "callbacks": 20}
        for part, label in (
            ("history", "Older states"),
            ("deliveries", "Older deliveries"),
            ("callbacks", "Older callbacks"),
        ):
            link = re.search(rf'href="([^"]+{part}_cursor=[0-9:%A]+)">{label}', page)
            assert link is not None, part
            older = browser.get(link[1].replace("&amp;", "&"))
            assert older.status_code == 200
            assert f"{label} →" not in older.text  # the five left fit on one page
        assert "m0 ·" in browser.get(re.search(r'href="([^"]+history_cursor=[0-9]+)"', page)[1]).text  # type: ignore[index]


# -- the size of a page, and /healthz during the largest reads ---------------------------------------


def test_a_listing_of_the_widest_jobs_stops_its_page_at_its_size_bound(http: httpx.Client) -> None:
    widest = [admin_reads.widest_job(f"jeeee{number:028x}") for number in range(120)]
    for body in admin_reads.bodies(widest):
        assert post(http, body).status_code == 200
    first = http.get("/api/jobs", params={"limit": 500})
    assert len(first.content) <= PAGE_BYTES
    assert len(first.json()["items"]) < 120
    assert first.json()["next_cursor"] is not None
    listed = {item["job_id"] for page in pages(http, "/api/jobs", 500) for item in page}
    assert {f"jeeee{number:028x}" for number in range(120)} <= listed


def test_healthz_answers_during_the_largest_admin_reads(server: ProcessServer) -> None:
    with admin_reads.admin_client(server.url, ADMIN_TOKEN) as reader:
        admin_reads.load(reader, jobs=120, token=CALLBACK_TOKEN)
        port = int(server.url.rpartition(":")[2])
        with Prober(port) as prober:
            for name, path in admin_reads.READS:
                answered = len(prober.probes)
                answer = reader.get(path)
                assert answer.status_code == 200, (name, answer.status_code)
                assert len(answer.content) <= admin_reads.BODY_ROOM + PAGE_BYTES, name
                wait_until(
                    lambda answered=answered: len(prober.probes) > answered,  # type: ignore[misc]
                    what=f"a /healthz answer since {name} began",
                )
