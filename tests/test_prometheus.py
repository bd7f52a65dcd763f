"""Metrics, the Grafana dashboard and the alert rules, checked by a real Prometheus scraping a real gateway."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from relay.app.factory import create_app
from relay.cos.sources import CosSource
from relay.metrics.counters import CALLBACK_OUTCOMES, WRITE_ERROR_KINDS
from relay.settings.table import Settings
from relay.store.records import PostgresUrl, Target
from relay.store.sqlite.writer import error_kind
from tests.conftest import ADMIN_TOKEN, CALLBACK_TOKEN, DATA, callback_schema, callback_url, job_id
from tests.cos.standin import CosStandIn, Job, Queue
from tests.cos.test_client import CREDENTIALS
from tests.databases import locked
from tests.live import ProcessServer, ThreadServer, free_port
from tests.sink import Sink

#: Slow tier: a real Prometheus and multi-worker gateways.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).parent.parent
GRAFANA = ROOT / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "cos-relay.json"
ALERTS = GRAFANA / "alerts.yaml"
ALERT_TESTS = GRAFANA / "alerts.test.yaml"

SAMPLES = DATA / "samples"
#: Every sample callback: the XML ones, the extra variants and the CallBackFormat=JSON one.
SAMPLE_FILES = [*sorted(SAMPLES.glob("*.xml")), *sorted(SAMPLES.glob("extra/*.xml")), *sorted(SAMPLES.glob("json/*"))]
#: Samples also sent with State Failed (their ``<State>Success</State>`` becomes Failed).
FAILED_TOO = ("transcode_success.xml", "speech_recognition_success.xml", "doc_process_success.xml")

#: Grafana's built-in interval variables, as Grafana would fill them in for a short time range.
GRAFANA_INTERVALS = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m"}
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")

#: (alert, subscriber) the traffic below must set off.
EXPECTED_ACTIVE = {
    ("CosRelayDeliveriesGivenUp", "failing"),
    ("CosRelaySubscriberDisabled", "gone"),
    ("CosRelayCallbacksRefused", ""),
}

#: Nothing in this traffic makes the database unwritable, leaves a delivery pending for 30 minutes, says
#: callbacks are expected, fills a backlog or sets a size bound, and nobody keeps guessing tokens.
QUIET = {
    "CosRelayStoreNotWritable",
    "CosRelayDeliveryBacklogOld",
    "CosRelayNoCallbacks",
    "CosRelayPruneStopped",
    "CosRelayDatabaseFillingDisk",
    "CosRelayBacklogDropped",
    "CosRelayDatabaseNearBound",
    "CosRelayDatabaseAtBound",
    "CosRelayTokenGuessing",
}

DEADLINE = 30.0


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not installed: run apt-get install prometheus")
    return path


def lint_metrics(exposition: str) -> None:
    """``promtool check metrics``: the exposition parses and follows Prometheus's naming conventions."""
    command = [tool("promtool"), "check", "metrics"]
    lint = subprocess.run(command, input=exposition, capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def wait_for(what: str, check: Callable[[], bool], timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


# -- a real Prometheus --------------------------------------------------------------------------------


class Prometheus:
    """``prometheus`` on 127.0.0.1, scraping one target every second and evaluating ``rule_files``."""

    def __init__(self, workdir: Path, target: str, rule_files: tuple[Path, ...] = ()) -> None:
        self.port = free_port()
        self.workdir = workdir
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [{"job_name": "cos-relay", "static_configs": [{"targets": [target]}]}],
        }
        self.config = workdir / "prometheus.yml"
        self.config.write_text(json.dumps(config))  # JSON is YAML
        self.log = workdir / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)

    def start(self) -> Prometheus:
        command = [
            tool("prometheus"),
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        wait_for("prometheus to be ready", self._ready)
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited: {self.log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            return self.http.get("/-/ready").status_code == 200
        return False

    def stop(self) -> None:
        self.http.close()
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def api(self, path: str, **params: str) -> Any:
        response = self.http.get(f"/api/v1/{path}", params=params)
        body = response.json()
        assert body["status"] == "success", f"{path} {params}: {body.get('errorType')}: {body.get('error')}"
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data["resultType"])
        return list(data["result"])

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None


# -- traffic ------------------------------------------------------------------------------------------

IDS = re.compile(rb"<(?:JobId|RunId|NonExistJobIds)>([^<]+)<|\"(?:JobId|RunId)\":\s*\"([^\"]+)\"")
TIME = re.compile(rb"((?:CreationTime|EndTime)(?:>|\":\s*\"))(\d{4}-\d\d-\d\d)([T ])(\d\d:\d\d:\d\d[+-]\d{4})")
CHINA = timezone(timedelta(hours=8))


def variant(body: bytes, serial: int, *, failed: bool = False) -> bytes:
    """``body`` as a new job: fresh JobIds, RunIds and NonExistJobIds, created minutes ago and ended just now."""
    ids = {one for match in IDS.findall(body) for one in b"".join(match).split(b",")}
    for old in ids:
        digest = hashlib.sha256(old + b"-%d" % serial).hexdigest()[: len(old) - 1].encode()
        body = body.replace(old, old[:1] + digest)
    now = datetime.now(CHINA)
    created = now - timedelta(seconds=(5, 40, 200, 900, 4000)[serial % 5])
    ended = now - timedelta(seconds=1)

    def stamp(match: re.Match[bytes]) -> bytes:
        at = created if match.group(1).startswith(b"CreationTime") else ended
        return match.group(1) + at.strftime(f"%Y-%m-%d{match.group(3).decode()}%H:%M:%S+0800").encode()

    body = TIME.sub(stamp, body)
    return body.replace(b"<State>Success</State>", b"<State>Failed</State>") if failed else body


def media_type(path: Path) -> str:
    return "application/json" if path.suffix == ".json" else "application/xml"


class Traffic:
    """Posts callbacks to the gateway and counts what it should have answered."""

    def __init__(self, http: httpx.Client, db: Target) -> None:
        self.http = http
        self.db = db
        self.sent: dict[str, int] = {}
        self.serial = 0

    def post(
        self, body: bytes, expected: int, *, outcome: str | None, token: str = CALLBACK_TOKEN, **headers: str
    ) -> None:
        """Post ``body``; ``outcome`` None means accepted or duplicate, as the gateway answers."""
        headers.setdefault("Content-Type", "application/xml")
        response = self.http.post(callback_url(token), content=body, headers=headers)
        assert response.status_code == expected, (outcome, response.status_code, response.text)
        answered = response.json().get("status") if expected == 200 else outcome
        assert outcome in (None, answered), (outcome, response.text)
        assert answered is not None
        self.sent[answered] = self.sent.get(answered, 0) + 1

    def wave(self, first: bool) -> None:
        """A 503, every sample (new the first time, duplicates after), a new variant of each, failures, refusals."""
        transcode = (SAMPLES / "transcode_success.xml").read_bytes()
        self.serial += 1
        with locked(self.db):  # another client holds the write lock past the gateway's write timeout
            self.post(variant(transcode, self.serial), 503, outcome="unavailable")
        for path in SAMPLE_FILES:
            body = path.read_bytes()
            kind = media_type(path)
            # The JSON sample is the same job state as workflow_task_finish.xml: a duplicate even the first time.
            self.post(body, 200, outcome=None if first else "duplicate", **{"Content-Type": kind})
            self.serial += 1
            self.post(variant(body, self.serial), 200, outcome="accepted", **{"Content-Type": kind})
            if path.name in FAILED_TOO:
                self.serial += 1
                self.post(variant(body, self.serial, failed=True), 200, outcome="accepted")
        for _ in range(3):
            self.post(transcode, 401, outcome="unauthorized", token="wrong-token")
            self.post(b"\x89PNG\r\n\x1a\n", 415, outcome="unsupported_type", **{"Content-Type": "image/png"})
            self.post(b"<Response><JobsDetail>", 400, outcome="malformed")
            self.post(b"<Other><JobId>j1234</JobId></Other>", 422, outcome="invalid")
        self.post(b"<Response>" + b" " * 300_000 + b"</Response>", 413, outcome="too_large")

    @property
    def total(self) -> int:
        return sum(self.sent.values())


# -- the dashboard ------------------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def data_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in board["panels"]:
        panels.extend(panel.get("panels", []))  # a collapsed row keeps its panels inside
        if panel["type"] != "row":
            panels.append(panel)
    return panels


def variable_values(board: dict[str, Any]) -> dict[str, str]:
    """What each template variable stands for when every value is selected."""
    values = dict(GRAFANA_INTERVALS)
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            assert variable.get("includeAll"), variable["name"]
            values[variable["name"]] = variable.get("allValue") or ".*"
    return values


def substitute(expr: str, values: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        assert name in values, f"unknown variable ${name} in {expr}"
        return values[name]

    return VARIABLE.sub(one, expr)


def panel_queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    values = variable_values(board)
    return [
        (f"{panel['title']} [{target['refId']}]", substitute(target["expr"], values))
        for panel in data_panels(board)
        for target in panel["targets"]
    ]


def variable_queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """Grafana's ``label_values(metric, label)`` as the PromQL it amounts to."""
    queries = []
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            found = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["query"]["query"])
            assert found, variable["query"]
            metric, label = found.groups()
            queries.append((f"variable {variable['name']}", f"group by ({label}) ({metric})"))
    return queries


def shows_something(result: list[dict[str, Any]]) -> bool:
    """At least one series with a number a panel would draw (0 counts; NaN, from 0/0 or no rate, does not)."""
    return any(not math.isnan(float(series["value"][1])) for series in result)


# -- tests ----------------------------------------------------------------------------------------------


def test_dashboard_has_schema_39_the_datasource_variable_on_every_panel_and_a_question_in_each_description() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 39
    assert board["uid"] == "cos-relay"
    assert board["id"] is None  # Grafana assigns it
    [datasource] = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert (datasource["name"], datasource["query"]) == ("datasource", "prometheus")
    uid = "${datasource}"
    panels = data_panels(board)
    ids = [row["id"] for row in board["panels"] if row["type"] == "row"] + [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    rows = [panel["title"] for panel in board["panels"] if panel["type"] == "row"]
    assert rows == ["Job completion", "Ingest", "Delivery", "Store", "Access", "COS"]
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        assert panel["description"].strip().endswith(("?", ".", ")")), panel["title"]
        assert "?" in panel["description"], f"{panel['title']}: the description should ask the panel's question"
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
            expr = target["expr"]
            for window in re.findall(r"\[([^\]]+)\]", expr):
                assert window == "$__rate_interval", f"{panel['title']}: use $__rate_interval, not [{window}]"
            if "histogram_quantile" in expr:
                assert re.search(r"sum by \(le\b", expr), f"{panel['title']}: aggregate buckets by le"
        position = panel["gridPos"]
        assert position["x"] + position["w"] <= 24, panel["title"]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"] == {"type": "prometheus", "uid": uid}


def test_outcome_and_error_labels_cover_every_refusal_and_write_error_kind() -> None:
    from relay.domain.errors import (
        AtSizeBound,
        BodyTimeout,
        Invalid,
        Malformed,
        Throttled,
        TooLarge,
        Unauthorized,
        Unavailable,
        UnsupportedType,
    )

    refusals = (
        Unauthorized,
        BodyTimeout,
        TooLarge,
        UnsupportedType,
        Malformed,
        Invalid,
        Unavailable,
        Throttled,
        AtSizeBound,
    )
    assert {refusal.outcome for refusal in refusals} | {"accepted", "duplicate"} == set(CALLBACK_OUTCOMES)
    messages = (
        "database is locked",
        "database table is locked",
        "attempt to write a readonly database",
        "database or disk is full",
        "disk I/O error",
        "database is busy",
        "no such table: x",
    )
    assert {error_kind(sqlite3.OperationalError(message)) for message in messages} == set(WRITE_ERROR_KINDS)


def test_alert_rules_pass_promtool_check_and_their_unit_tests() -> None:
    promtool = tool("promtool")
    check = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run(
        [promtool, "test", "rules", str(ALERT_TESTS)], capture_output=True, text=True, timeout=60, cwd=GRAFANA
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr
    assert "SUCCESS" in unit.stdout


def test_example_prometheus_config_is_valid() -> None:
    command = [tool("promtool"), "check", "config", str(GRAFANA / "prometheus.yml")]
    check = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.both_backends
def test_prometheus_scrapes_the_gateway_and_every_panel_and_alert_query_works_on_real_traffic(
    tmp_path: Path, settings: Settings, sink: Sink
) -> None:
    tool("promtool")
    sink_url = sink.url
    relay_settings = settings.replace(
        allow_networks="127.0.0.0/8",
        retry_schedule=(0.2, 0.4),
        poll_interval=0.1,
        write_timeout=0.3,
        max_body=256 * 1024,
    )
    # A COS source (the stand-in: a job in flight, a queue calling back here), so the COS panels have data.
    standin = CosStandIn(CREDENTIALS).start()
    now = datetime.now(UTC)
    # Only a job in flight: a finished one would be recorded at the start and delivered before the first scrape.
    standin.add(Job(job_id(901), now - timedelta(minutes=5), state="Running"))
    relay_settings = relay_settings.replace(public_url="https://relay.example.com")
    callback = f"https://relay.example.com/cos/callback?token={CALLBACK_TOKEN}"
    standin.queues["p1"] = Queue("p1", "main", notify={"State": "On", "Type": "Url", "Url": callback})
    source = CosSource(
        "media", "examplebucket-1250000000", "ap-guangzhou", CREDENTIALS, standin.url, tags=("Transcode",)
    )
    # A source with confirm = true on a bucket the traffic does not name: its confirmation counters exist at 0.
    confirming = replace(source, name="confirmed", bucket="otherbucket-1250000000", confirm=True)
    app = create_app(relay_settings, schema=callback_schema(), cos_sources=[source, confirming])
    gateway = ThreadServer(app).start()
    prometheus = Prometheus(tmp_path, f"127.0.0.1:{gateway.port}", (ALERTS,))
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    try:
        with httpx.Client(base_url=gateway.url, headers=headers, timeout=30) as http:
            for name, path in (("healthy", "/ok"), ("failing", "/fail"), ("gone", "/gone")):
                response = http.post("/api/subscribers", json={"name": name, "url": f"{sink_url}{path}"})
                assert response.status_code == 201, response.text
            prometheus.start()
            # Before any traffic: each subscriber's give-up counter is scraped at 0, so increase() sees the first.
            wait_for(
                "a scrape with the give-up counters at 0",
                lambda: len(prometheus.query('relay_deliveries_given_up_total{reason="retries_exhausted"} == 0')) == 3,
            )

            def settled() -> bool:
                items = http.get("/api/deliveries", params={"limit": "500", "state": "in_flight"}).json()["items"]
                failing = http.get("/api/deliveries", params={"subscriber": "failing", "state": "pending"}).json()
                return not items and not failing["items"]

            traffic = Traffic(http, relay_settings.db_path)
            traffic.wave(first=True)
            wait_for("deliveries to settle (failing ones dead)", settled)
            # Scraped at least once between the waves, so every counter and histogram also has a rate.
            wait_for(
                "Prometheus to see the first wave",
                lambda: prometheus.value('sum(relay_callbacks_received_total{job="cos-relay"})') == traffic.total,
            )
            traffic.wave(first=False)
            wait_for("deliveries to settle (failing ones dead)", settled)
            wait_for(
                "Prometheus to see the second wave and the settled outbox",
                lambda: (
                    prometheus.value("sum(relay_callbacks_received_total)") == traffic.total
                    and prometheus.value('relay_outbox_deliveries{state="in_flight"}') == 0
                    and prometheus.value('relay_outbox_deliveries{state="dead"}')
                    == prometheus.value('sum(relay_deliveries_given_up_total{subscriber="failing"})')
                ),
            )
            exposition = http.get("/metrics").text

        # What the gateway counted is what was sent, outcome by outcome.
        counted = {
            sample["metric"]["outcome"]: round(float(sample["value"][1]))
            for sample in prometheus.query("relay_callbacks_received_total")
        }
        assert {outcome: n for outcome, n in counted.items() if n} == traffic.sent
        assert set(counted) == set(CALLBACK_OUTCOMES)

        lint_metrics(exposition)

        board = dashboard()
        no_data = []
        for title, expr in variable_queries(board) + panel_queries(board):
            if not shows_something(prometheus.query(expr)):
                no_data.append(f"{title}: {expr}")
        # Free pages and free disk are SQLite's file: PostgreSQL's store leaves those gauges out (docs/metrics.md).
        file_only = {"relay_store_reusable_bytes", "relay_store_filesystem_free_bytes"}
        if isinstance(settings.db_path, PostgresUrl):
            no_data = [query for query in no_data if not any(metric in query for metric in file_only)]
        assert not no_data, "panel queries without data:\n" + "\n".join(no_data)

        rules = [rule for group in prometheus.api("rules")["groups"] for rule in group["rules"]]
        assert len(rules) == ALERTS.read_text().count("- alert:")
        for rule in rules:
            prometheus.query(rule["query"])  # parses and evaluates on real series
        wait_for(
            "every rule to be evaluated healthy",
            lambda: all(
                rule["health"] == "ok" for group in prometheus.api("rules")["groups"] for rule in group["rules"]
            ),
        )

        def active() -> set[tuple[str, str]]:
            return {
                (alert["labels"]["alertname"], alert["labels"].get("subscriber", ""))
                for alert in prometheus.api("alerts")["alerts"]
            }

        wait_for("the alerts this traffic sets off", lambda: active() >= EXPECTED_ACTIVE, timeout=15)
        # CosRelayDown is left out: a scrape slower than 1 s on a busy machine may start it, rightly.
        assert {name for name, _ in active()} & QUIET == set()
    finally:
        prometheus.stop()
        gateway.stop()
        standin.stop()


@pytest.mark.timeout(240)  # its loop waits up to 90 s for the second worker
def test_counters_add_up_across_uvicorn_workers(tmp_path: Path, database: Target) -> None:
    # serve puts its multiprocess directory under TMPDIR: there each worker's counts can be seen apart.
    server = ProcessServer(
        database,
        args=("--workers", "2", "--callback-token", CALLBACK_TOKEN, "--admin-token", ADMIN_TOKEN),
        env={"TMPDIR": str(tmp_path)},
    ).start()
    transcode = (SAMPLES / "transcode_success.xml").read_bytes()
    posted = 0

    def post(serial: int) -> None:
        # A new connection each time, so either worker may take it.
        response = httpx.post(
            f"{server.url}{callback_url()}",
            content=variant(transcode, serial),
            headers={"Content-Type": "application/xml"},
            timeout=30,
        )
        assert response.status_code == 200, response.text

    def accepted_by_worker() -> list[float]:
        counts = []
        for path in sorted(tmp_path.glob("cos-relay-metrics-*/counter_*.db")):
            families = MultiProcessCollector.merge([str(path)], accumulate=False)  # type: ignore[no-untyped-call]
            counts.append(
                sum(
                    sample.value
                    for family in families
                    for sample in family.samples
                    if sample.name == "relay_callbacks_received_total" and sample.labels["outcome"] == "accepted"
                )
            )
        return counts

    try:
        # Until both have answered: on a busy machine the second worker may start accepting a minute late.
        deadline = time.monotonic() + 90
        with ThreadPoolExecutor(max_workers=8) as pool:
            while time.monotonic() < deadline:
                list(pool.map(post, range(posted, posted + 16)))
                posted += 16
                counts = accepted_by_worker()
                if len(counts) >= 2 and all(counts):
                    break
        counts = accepted_by_worker()
        assert len(counts) == 2, f"two workers should have counted callbacks: {counts}"
        assert all(counts), f"both workers should have answered callbacks: {counts}"
        assert sum(counts) == posted
        for _ in range(6):
            exposition = httpx.get(f"{server.url}/metrics", timeout=10).text  # a new connection: any worker
            families = {family.name: family for family in text_string_to_metric_families(exposition)}
            received = families["relay_callbacks_received"].samples
            accepted = [sample.value for sample in received if sample.labels["outcome"] == "accepted"]
            assert accepted == [posted]
            assert len(families["relay_store_database_size_bytes"].samples) == 1  # the store is read once
            lint_metrics(exposition)
    finally:
        server.stop()
