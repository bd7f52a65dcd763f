"""[[cos]] tables: what a source takes, its defaults, where its credentials come from, and one line naming
the table, the key and the fix for each mistake."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from relay.cos.sources import BadSource, CosSource, read_sources

KEY = "cosSecretKey0000000000000000000000"
BASE: dict[str, Any] = {
    "name": "media",
    "bucket": "examplebucket-1250000000",
    "region": "ap-guangzhou",
    "secret_id": "AKIDexample000000000000000000000000",
    "secret_key": KEY,
    "tags": ["Transcode", "Snapshot"],
}


def one(**changes: Any) -> CosSource:
    entry = {**BASE, **changes}
    return read_sources([{key: value for key, value in entry.items() if value is not None}], environ={})[0]


def test_a_source_has_cos_endpoint_and_the_documented_defaults() -> None:
    source = one()
    assert source.endpoint == "https://examplebucket-1250000000.ci.ap-guangzhou.myqcloud.com"
    assert (source.reconcile_every, source.lookback, source.confirm) == (300, 86400, False)
    assert source.tags == ("Transcode", "Snapshot")
    assert (
        one(endpoint="http://127.0.0.1:8080/", reconcile_every="1m", lookback="2h").endpoint == "http://127.0.0.1:8080"
    )


def test_credentials_come_from_a_file_or_the_environment_and_never_show(tmp_path: Path) -> None:
    (tmp_path / "key").write_text(KEY + "\n")
    entry = {**BASE, "secret_key": None, "secret_key_file": str(tmp_path / "key"), "secret_id": None}
    entry["secret_id_env"] = "COS_ID"
    [source] = read_sources([{k: v for k, v in entry.items() if v is not None}], environ={"COS_ID": "AKIDenv"})
    assert (source.credentials.secret_id, source.credentials.secret_key) == ("AKIDenv", KEY)
    assert KEY not in repr(source)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": None}, "cos[0]: name is required"),
        ({"bucket": "examplebucket"}, "cos[0].bucket: the bucket with its APPID, like examplebucket-1250000000"),
        ({"region": "Guangzhou"}, "cos[0].region: a COS region like ap-guangzhou"),
        ({"secret_key": None}, "cos[0]: secret_key is required: give secret_key, secret_key_file"),
        ({"secret_key_env": "X"}, "cos[0].secret_key_env: give one of secret_key, secret_key_env"),
        ({"secret_key": None, "secret_key_env": "NOT_SET"}, "the environment variable NOT_SET is not set"),
        ({"secret_key": None, "secret_key_file": "/nonexistent/key"}, "cannot read /nonexistent/key"),
        ({"tags": "Transcode"}, "cos[0].tags: a list of tag ids"),
        ({"tags": [], "speech": None}, "nothing to reconcile: give tags"),
        ({"speech": "yes"}, "cos[0].speech: true or false"),
        ({"reconcile_every": "5 minutes"}, "cos[0].reconcile_every: a duration like 5m"),
        ({"reconcile_every": "1s"}, "cos[0].reconcile_every: at least 10s"),
        ({"lookback": "60d"}, "cos[0].lookback: at most 30d"),
        ({"lookback": "1m"}, "cos[0].lookback: at least reconcile_every"),
        ({"endpoint": "ftp://x"}, "cos[0].endpoint: a base URL"),
        ({"secretkey": "x"}, "cos[0].secretkey: unknown key (known: name, bucket"),
    ],
)
def test_each_mistake_is_one_line_naming_the_key_and_the_fix(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(BadSource) as refused:
        one(**changes)
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)
    assert KEY not in str(refused.value)


def test_two_sources_of_one_name_and_a_table_that_is_no_table_are_refused() -> None:
    with pytest.raises(BadSource, match=r"cos\[1\]\.name: 'media' is defined twice"):
        read_sources([BASE, BASE], environ={})
    with pytest.raises(BadSource, match=r"cos must be an array of tables, \[\[cos\]\]"):
        read_sources({"name": "media"}, environ={})
