"""Every mistake in the subscribers TOML file: one line with file, line and key, exit 1, nothing started."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.deliver.ssrf import AddressPolicy
from relay.domain.errors import BadSubscriber
from relay.domain.events import EVENT_TYPES
from relay.outbox.config_file import read_config
from relay.outbox.destinations import vet_destination
from relay.store.records import Target
from tests.live import ProcessServer, db_text
from tests.mistakes.commands import cos_relay

GOOD = '[[subscribers]]\nname = "a"\nurl = "https://8.8.8.8/a"\n'
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def read(path: Path) -> dict[str, dict[str, object]]:
    return read_config(path, lambda url, kind: vet_destination(AddressPolicy(), url, kind))


def refusal(tmp_path: Path, text: str) -> str:
    config = tmp_path / "subscribers.toml"
    config.write_text(text)
    with pytest.raises(BadSubscriber) as refused:
        read(config)
    assert "\n" not in refused.value.detail
    return refused.value.detail.removeprefix(str(config))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[[subscribers]\nname = "x"', ":1:14: not valid TOML: Expected ']]' at the end of an array declaration"),
        (GOOD + "url2 = = 1\n", ":4:8: not valid TOML: Invalid value"),
        (
            '[[subscriber]]\nname = "a"\nurl = "https://8.8.8.8/a"\n',
            ":1: subscriber: unknown key (known: subscribers, cos); the table is [[subscribers]] (plural)",
        ),
        ('colour = "red"\n' + GOOD, ":1: colour: unknown key (known: subscribers, cos)"),
        ('[subscribers]\nname = "a"\n', ":1: subscribers: must be an array of tables, [[subscribers]]"),
        (GOOD + GOOD.replace('"a"', '"b"') + 'filtres = { tag = "x" }\n', ":7: subscribers[1].filtres: unknown key"),
        (GOOD + 'filters = { tga = "x" }\n', ":4: subscribers[0].filters.tga: unknown filter key (known: tag, state"),
        (GOOD + "[subscribers.filters]\ntga = 'x'\n", ":4: subscribers[0].filters.tga: unknown filter key"),
        (GOOD + "filters.tga = 'x'\n", ":4: subscribers[0].filters.tga: unknown filter key"),
        (GOOD + 'timeout = "10"\n', ":4: subscribers[0].timeout: timeout must be a number of seconds"),
        (GOOD + "max_in_flight = 0\n", ":4: subscribers[0].max_in_flight: max_in_flight must be"),
        (
            GOOD + 'types = ["cos.jbo.*"]\n',
            ":4: subscribers[0].types: event type 'cos.jbo.*' matches no event type; known types: "
            + ", ".join(EVENT_TYPES),
        ),
        (
            '[[subscribers]]\nname = 7\nurl = "https://8.8.8.8/a"\n',
            ":2: subscribers[0].name: name is required (a string)",
        ),
        ('[[subscribers]]\nname = "a"\n', ":1: subscribers[0]: url is required (a string)"),
        (GOOD + GOOD, ":5: subscribers[1].name: 'a' is defined twice"),
        (
            '[[subscribers]]\nname = "a"\nurl = "http://127.0.0.1/a"\n',
            ":3: subscribers[0].url: the URL is not allowed: 127.0.0.1 is loopback; to allow it, add its network to"
            " RELAY_ALLOW_NETWORKS",
        ),
        (GOOD + 'secret = "short"\n', ":4: subscribers[0].secret: webhook secret"),
        (
            GOOD + 'secret_env = "COS_RELAY_TEST_UNSET_VARIABLE"\n',
            ":4: subscribers[0].secret_env: the environment variable COS_RELAY_TEST_UNSET_VARIABLE is not set",
        ),
        (
            GOOD + 'secret_file = "/nonexistent/secret"\n',
            ":4: subscribers[0].secret_file: cannot read /nonexistent/secret: No such file or directory",
        ),
        (
            GOOD + f'secret = "{SECRET}"\nsecret_env = "X"\n',
            ":5: subscribers[0].secret_env: give one of secret, secret_env",
        ),
    ],
    ids=[
        "unparseable",
        "bad-value",
        "singular-table",
        "unknown-top-key",
        "table-not-array",
        "unknown-entry-key",
        "unknown-filter-key",
        "unknown-filter-key-subtable",
        "unknown-filter-key-dotted",
        "wrong-type",
        "out-of-range",
        "type-pattern-matches-nothing",
        "name-not-a-string",
        "no-url",
        "duplicate-name",
        "loopback-url",
        "bad-secret",
        "secret-env-unset",
        "secret-file-missing",
        "two-secrets",
    ],
)
def test_a_config_mistake_is_one_line_with_the_line_and_the_key(tmp_path: Path, text: str, expected: str) -> None:
    assert refusal(tmp_path, text).startswith(expected)


def test_a_secret_may_come_from_a_file_or_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "secret").write_text(SECRET + "\n")
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    config = tmp_path / "subscribers.toml"
    config.write_text(
        f'{GOOD}secret_file = "{tmp_path / "secret"}"\n'
        '[[subscribers]]\nname = "b"\nurl = "https://8.8.8.8/b"\nsecret_env = "HOOK_SECRET"\n'
    )
    checked = read(config)
    assert checked["a"]["secret"] == SECRET
    assert checked["b"]["secret"] == SECRET


def test_serve_with_a_singular_subscriber_table_exits_1_before_creating_anything(
    tmp_path: Path, database: Target, sqlite_only: None
) -> None:
    # SQLite only: "nothing created" is the file not appearing (a PostgreSQL test database exists already).
    config = tmp_path / "subscribers.toml"
    config.write_text('[[subscriber]]\nname = "a"\nurl = "https://8.8.8.8/a"\n')
    db = database
    assert isinstance(db, Path)
    finished = cos_relay("serve", "--db", db_text(db), "--port", "0", "--config", str(config))
    assert finished.returncode == 1
    assert finished.stderr.strip().splitlines() == [
        f"Error: {config}:1: subscriber: unknown key (known: subscribers, cos); the table is [[subscribers]] (plural)"
    ]
    assert finished.stdout == ""
    assert not db.exists()


def test_serve_with_unparseable_toml_and_two_workers_prints_one_line_not_a_traceback(
    tmp_path: Path, database: Target
) -> None:
    config = tmp_path / "subscribers.toml"
    config.write_text(GOOD + "timeout = \n")
    finished = cos_relay("serve", "--db", db_text(database), "--workers", "2", "--config", str(config))
    assert finished.returncode == 1
    assert finished.stderr.strip().splitlines() == [f"Error: {config}:4:11: not valid TOML: Invalid value"]


@pytest.mark.slow
def test_serve_with_a_secret_file_signs_with_that_secret(tmp_path: Path, database: Target) -> None:
    (tmp_path / "secret").write_text(SECRET)
    config = tmp_path / "subscribers.toml"
    config.write_text(f'{GOOD}secret_file = "{tmp_path / "secret"}"\n')
    db = database
    ProcessServer(db, args=("--config", str(config))).start().stop()
    shown = cos_relay("subscribers", "secret", "a", "--db", db_text(db))
    assert shown.stdout.splitlines() == [f"secret: {SECRET}"]
