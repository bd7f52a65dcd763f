"""``cos-relay reconcile`` against the COS stand-in: one line per source (listed, known, recorded, in flight), a
dry run that records nothing, exit 1 naming a source COS refused, and [[cos]] mistakes as one line with the
file and line."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from relay.cli import main
from relay.domain.errors import BadSubscriber
from relay.outbox.config_file import read_config
from relay.store import store_for
from tests.conftest import job_id
from tests.cos.standin import CosStandIn, Job
from tests.cos.test_client import CREDENTIALS
from tests.databases import count


@pytest.fixture(scope="module")
def standin() -> Iterator[CosStandIn]:
    server = CosStandIn(CREDENTIALS).start()
    now = datetime.now(UTC)
    server.add(*(Job(job_id(n), now - timedelta(minutes=n)) for n in range(1, 6)))
    server.add(Job(job_id(9), now - timedelta(minutes=9), state="Running"))
    yield server
    server.stop()


def config(path: Path, endpoint: str, *, key: str = CREDENTIALS.secret_key, name: str = "media") -> Path:
    path.write_text(
        f'[[cos]]\nname = "{name}"\nbucket = "examplebucket-1250000000"\nregion = "ap-guangzhou"\n'
        f'secret_id = "{CREDENTIALS.secret_id}"\nsecret_key = "{key}"\nendpoint = "{endpoint}"\n'
        'tags = ["Transcode"]\nlookback = "1h"\n'
    )
    return path


@pytest.fixture
def db(tmp_path: Path) -> Path:
    with store_for(tmp_path / "relay.db"):
        pass
    return tmp_path / "relay.db"


def test_a_run_prints_a_line_per_source_and_records_what_was_missed(
    standin: CosStandIn, tmp_path: Path, db: Path
) -> None:
    file = config(tmp_path / "relay.toml", standin.url)
    dry = CliRunner().invoke(main, ["reconcile", "--config", str(file), "--db", str(db), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert dry.output.strip() == "media: 6 listed, 0 already known, 5 would be recorded, 1 in flight"
    assert count(db, "jobs") == 0
    done = CliRunner().invoke(main, ["reconcile", "--config", str(file), "--db", str(db)])
    assert done.exit_code == 0, done.output
    assert done.output.strip() == "media: 6 listed, 0 already known, 5 recorded now, 1 in flight"
    again = CliRunner().invoke(main, ["reconcile", "--config", str(file), "--db", str(db), "--since", "2h"])
    assert again.output.strip() == "media: 6 listed, 5 already known, 0 recorded now, 1 in flight"
    assert count(db, "jobs") == 5


def test_a_source_cos_refuses_is_one_line_naming_it_and_exit_1(standin: CosStandIn, tmp_path: Path, db: Path) -> None:
    file = config(tmp_path / "relay.toml", standin.url, key="wrongSecretKey000000000000000000000")
    result = CliRunner().invoke(main, ["reconcile", "--config", str(file), "--db", str(db)])
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("media: not reconciled: COS answered GET /jobs with 403 SignatureDoesNotMatch")
    assert "wrongSecretKey" not in result.output + result.stderr


def test_an_unknown_source_name_and_a_mistake_in_a_cos_table_are_one_line(tmp_path: Path, db: Path) -> None:
    file = config(tmp_path / "relay.toml", "http://127.0.0.1:9")
    unknown = CliRunner().invoke(main, ["reconcile", "--config", str(file), "--db", str(db), "--source", "other"])
    assert unknown.exit_code == 2
    assert "no source named other" in unknown.stderr
    file.write_text(file.read_text().replace('region = "ap-guangzhou"', 'region = "Guangzhou"'))
    with pytest.raises(BadSubscriber, match=r"relay\.toml:4: cos\[0\]\.region: a COS region like ap-guangzhou"):
        read_config(file, vet=lambda url, kind: None)  # what serve --config reads at its start
