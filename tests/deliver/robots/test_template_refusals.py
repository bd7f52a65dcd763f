"""A robot template that cannot work is refused where it is written: one line from the CLI, the file and line from
the config file (the API's 400 is proved against a real server in test_live)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from relay.cli import main
from relay.deliver.ssrf import AddressPolicy
from relay.domain.errors import BadSubscriber
from relay.outbox.config_file import read_config
from relay.outbox.destinations import vet_destination
from relay.store import store_for
from relay.store.records import Target
from tests.live import db_text

URL = "https://8.8.8.8/cgi-bin/webhook/send?key=ok-wecom-key-0123456789"


def test_the_cli_refuses_a_broken_template_in_one_line(database: Target) -> None:
    with store_for(database):
        pass
    result = CliRunner().invoke(
        main,
        [
            "subscribers",
            "add",
            "team",
            "--url",
            URL,
            "--kind",
            "wecom",
            "--template",
            "{{ data.Tag ",
            "--db",
            db_text(database),
        ],
        env={"RELAY_ALLOW_NETWORKS": None, "RELAY_DB": None},
    )
    assert result.exit_code == 1
    assert result.output.startswith("Error: template: line 1: unexpected end of template")
    assert result.output.count("\n") == 1


def test_the_config_file_names_the_file_and_line_of_a_broken_template(tmp_path: Path) -> None:
    config = tmp_path / "subscribers.toml"
    config.write_text(
        f'[[subscribers]]\nname = "team"\nkind = "wecom"\nurl = "{URL}"\n'
        'template = """\n{{ data.Tag }} failed\n{{ data.Code | shout }}"""\n'
    )
    with pytest.raises(BadSubscriber) as refused:
        read_config(config, lambda url, kind: vet_destination(AddressPolicy(), url, kind))
    assert refused.value.detail == (f"{config}:5: subscribers[0].template: template: line 2: No filter named 'shout'.")
