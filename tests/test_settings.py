"""Settings from one table: serve's options, the RELAY_* variables, their parser and the reference agree."""

from __future__ import annotations

import ast
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from relay.app import serving
from relay.cli import main
from relay.cli.reference import render_reference
from relay.http.auth import Credentials
from relay.settings.kinds import Flag
from relay.settings.table import SETTINGS, Setting, Settings, setting_named
from relay.store import store_for
from relay.store.records import Target
from relay.store.sealing import generate_key
from tests.conftest import ADMIN_TOKEN, CALLBACK_TOKEN
from tests.live import ProcessServer, db_text
from tests.procfs import children

ROOT = Path(__file__).parent.parent

#: A value other than the default for each setting, as an operator would type it. A setting missing
#: here is still checked, with its default.
SAMPLES = {
    "host": "127.0.0.2",
    "port": "9091",
    "callback_token": CALLBACK_TOKEN,
    "admin_token": ADMIN_TOKEN,
    "metrics_token": "metrics-token",
    "keepalive_timeout": "2",
    "max_head": "4096",
    "max_connections": "100",
    "forwarded_allow_ips": "10.0.0.5,10.1.0.0/16",
    "allowed_hosts": "relay.example.com,*.example.net,[::1]",
    "guess_limit": "3",
    "guess_window": "30",
    "insecure_no_token": "true",
    "max_body": "1234",
    "body_timeout": "2.5",
    "durability": "full",
    "write_timeout": "0.5",
    "public_url": "https://relay.example.com",
    "workers": "3",
    "quarantine_prefix": "16",
    "gateway_id": "gw-7",
    "retry_schedule": "1,2,3",
    "allow_networks": "10.1.0.0/16",
    "disable_after": "60",
    "max_db_size": "33554432",
    "max_backlog": "500",
    "secret_grace": "0",
    "delivery_capacity": "8",
    "poll_interval": "0.25",
    "log_level": "debug",
    "log_format": "json",
}


def relay_free_environment() -> dict[str, str]:
    """This process's environment without any setting meant for a gateway."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("RELAY_") and not name.upper().startswith("PROMETHEUS_MULTIPROC")
    }


@pytest.fixture
def samples(tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "subscribers.toml"
    config.write_text("subscribers = []\n")
    keys = tmp_path / "secret.keys"
    keys.write_text(generate_key() + "\n")
    return {**SAMPLES, "db_path": str(tmp_path / "sample.db"), "config_path": str(config), "secret_key_file": str(keys)}


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Settings]]:
    """`serve` parses its options and variables; the settings it would start with are recorded instead."""
    recorded: list[Settings] = []

    def record(settings: Settings, sources: object = None) -> Credentials:
        recorded.append(settings)
        return Credentials(settings.callback_token, settings.admin_token or "admin")

    monkeypatch.setattr(serving, "prepare", record)
    monkeypatch.setattr(serving, "run", lambda settings, credentials: None)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield recorded
    root.handlers[:], root.level = handlers, level  # serve set up its own logging in this process


def sample(setting: Setting, samples: dict[str, str]) -> str:
    return samples.get(setting.field) or setting.default_text


def option_args(setting: Setting, text: str) -> list[str]:
    if isinstance(setting.kind, Flag):
        return [setting.option] if setting.parse(text) else []
    return [setting.option, text]


def serve_settings(recorded: list[Settings], args: list[str], env: dict[str, str | None]) -> Settings:
    # RELAY_* variables the test machine may have set must not leak into the comparison.
    unset: dict[str, str | None] = {name: None for name in os.environ if name.startswith("RELAY_")}
    result = CliRunner().invoke(main, ["serve", *args], env={**unset, **env})
    assert result.exit_code == 0, result.output
    return recorded.pop()


def test_every_setting_is_a_serve_option_showing_its_environment_variable_and_default() -> None:
    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0, result.output
    shown = " ".join(result.output.split())  # undo click's wrapping
    for setting in SETTINGS:
        assert f"{setting.option} " in shown, setting.field
        assert f"env var: {setting.env}" in shown, setting.field
        default = setting.default_text
        assert f"default: {default}" in shown or f"default: ({default})" in shown, setting.field


def test_every_setting_reads_the_same_value_from_its_option_and_from_its_environment_variable(
    samples: dict[str, str], started: list[Settings]
) -> None:
    for setting in SETTINGS:
        text = sample(setting, samples)
        from_option = serve_settings(started, option_args(setting, text), {})
        from_env = serve_settings(started, [], {setting.env: text})
        value = getattr(from_option, setting.field)
        assert value == getattr(from_env, setting.field) == setting.parse(text), setting.field
        if setting.field in samples:
            assert value != setting.default, f"{setting.field}: the sample should differ from the default"


def test_an_option_wins_over_its_environment_variable_which_wins_over_the_default(
    database: Target, started: list[Settings]
) -> None:
    db = ["--db", db_text(database)]
    both = serve_settings(started, [*db, "--poll-interval", "3"], {"RELAY_POLL_INTERVAL": "2"})
    assert both.poll_interval == 3.0
    env_only = serve_settings(started, db, {"RELAY_POLL_INTERVAL": "2", "RELAY_GATEWAY_ID": ""})
    assert env_only.poll_interval == 2.0
    assert env_only.gateway_id == Settings().gateway_id  # an empty variable counts as unset


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "env", "option", "variable"),
    [
        ((), {"RELAY_PORT": "abc"}, "--port", "RELAY_PORT"),
        ((), {"RELAY_POLL_INTERVAL": "0"}, "--poll-interval", "RELAY_POLL_INTERVAL"),
        ((), {"RELAY_INSECURE_NO_TOKEN": "maybe"}, "--insecure-no-token", "RELAY_INSECURE_NO_TOKEN"),
        ((), {"RELAY_DISABLE_AFTER": "five days"}, "--disable-after", "RELAY_DISABLE_AFTER"),
        (("--max-body", "-1"), {}, "--max-body", "RELAY_MAX_BODY"),
    ],
)
def test_a_bad_value_is_one_error_line_naming_the_option_and_the_variable_and_exit_status_2(
    database: Target, args: tuple[str, ...], env: dict[str, str], option: str, variable: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "relay", "serve", "--db", db_text(database), *args],
        env={**relay_free_environment(), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    [error] = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert option in error
    assert variable in error
    if isinstance(database, Path):
        assert not database.exists()  # refused before anything was opened


def test_settings_built_in_code_are_checked_by_the_same_table() -> None:
    with pytest.raises(ValueError, match=r"max_body: -1 is not an integer from 1 to 1073741824"):
        Settings(max_body=-1)
    with pytest.raises(ValueError, match=r"retry_schedule: "):
        Settings(retry_schedule=())
    assert setting_named("retry_schedule").parse(" 5, 300 ") == (5.0, 300.0)


def test_the_configuration_reference_is_what_the_settings_table_renders() -> None:
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == render_reference(), "regenerate: python -m relay.cli.reference > docs/configuration.md"
    for setting in SETTINGS:
        assert f"`{setting.env}`" in committed


def test_other_commands_read_the_database_from_the_same_setting(database: Target) -> None:
    db = database
    if isinstance(db, Path):
        # Only serve creates a database (issue 15): tokens looks for the one RELAY_DB names, then reads it.
        missing = CliRunner().invoke(main, ["tokens"], env={"RELAY_DB": str(db)})
        assert missing.exit_code == 1
        assert f"no database at {db}" in missing.output
    with store_for(db):
        pass
    result = CliRunner().invoke(main, ["tokens"], env={"RELAY_DB": db_text(db)})
    assert result.exit_code == 0, result.output
    for command in (["tokens"], ["jobs"], ["deliveries", "list"], ["subscribers", "list"]):
        shown = " ".join(CliRunner().invoke(main, [*command, "--help"]).output.split())
        assert "--db FILE" in shown, command
        assert "env var: RELAY_DB" in shown, command


@pytest.mark.slow
def test_credentials_are_resolved_once_per_start(database: Target) -> None:
    """serve resolves the tokens and hands them to the app: the insecure warning is logged once, not per app."""
    server = ProcessServer(database, args=("--insecure-no-token",)).start()
    output = server.stop()
    assert output.count("--insecure-no-token: ANYONE") == 1, output


@pytest.mark.slow
def test_serving_with_workers_leaves_the_environment_as_it_was(database: Target) -> None:
    """Workers are spawned with the supervisor's environment at that moment: it must be the one serve got."""
    environment = relay_free_environment()
    server = ProcessServer(
        database, args=("--workers", "2", "--callback-token", CALLBACK_TOKEN, "--admin-token", ADMIN_TOKEN)
    )
    server.env = environment
    server.start()
    try:
        workers = children(server.pid)
        assert len(workers) >= 2, workers
        for worker in workers:
            raw = Path(f"/proc/{worker}/environ").read_bytes()
            seen = dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)
            assert seen == environment, sorted(set(seen.items()) ^ set(environment.items()))
    finally:
        server.stop()


ENVIRON_CALLS = ("os.environ.update(", "os.environ.setdefault(", "os.environ.pop(", "os.environ.clear(", "os.putenv(")


def environ_writes(source: str) -> list[str]:
    """What in ``source`` changes os.environ: an item assigned or deleted, or a call that changes it."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign | ast.AugAssign | ast.Delete):
            targets = node.targets if isinstance(node, ast.Assign | ast.Delete) else [node.target]
            found += [ast.unparse(node) for target in targets if ast.unparse(target).startswith("os.environ[")]
        elif isinstance(node, ast.Call) and ast.unparse(node).startswith(ENVIRON_CALLS):
            found.append(ast.unparse(node))
    return found


def test_no_module_in_relay_writes_os_environ() -> None:
    assert environ_writes('os.environ["A"] = "1"\nos.environ.update(B="2")\nx = os.environ["C"]') == [
        "os.environ['A'] = '1'",
        "os.environ.update(B='2')",
    ]
    writes = {path.name: environ_writes(path.read_text()) for path in (ROOT / "relay").rglob("*.py")}
    assert {name: found for name, found in writes.items() if found} == {}
