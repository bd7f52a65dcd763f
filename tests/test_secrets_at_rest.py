"""Secrets at rest (issue 22, item 3), against a real `cos-relay serve`: the database, its -wal and -shm and every
backup are the owner's alone whatever the umask, and with RELAY_SECRET_KEY_FILE a copy of the database (the file,
or a pg_dump) holds no working secret: not the tokens, the console's session key nor a subscriber's secrets."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from relay.store import store_for
from relay.store.records import PostgresUrl, Target
from relay.store.sealing import PREFIX, Sealer, WrongSecretKey, generate_key, key_id, parse_keys
from tests.live import ProcessServer, db_text
from tests.mistakes.commands import cos_relay
from tests.postgres import BIN

pytestmark = pytest.mark.slow

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NEWER = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"
PUBLIC_URL = "https://8.8.8.8/hooks/cos"


def umask_022() -> None:
    os.umask(0o022)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def new_key_file(path: Path) -> Path:
    made = cos_relay("secrets", "new-key", str(path))
    assert made.returncode == 0, made.stderr
    return path


def stored_copy(database: Target, tmp_path: Path) -> bytes:
    """What a copy of the database holds: the SQLite file with its WAL as they are on disk, or a pg_dump."""
    if isinstance(database, PostgresUrl):
        dump = tmp_path / "dump.sql"
        done = subprocess.run(
            [str(BIN / "pg_dump"), f"--file={dump}", database.url], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return dump.read_bytes()
    return b"".join(
        path.read_bytes() for path in (database, database.with_name(database.name + "-wal")) if path.exists()
    )


def secrets_in_use(database: Target, key_file: Path | None, admin: str) -> list[str]:
    """The tokens, the console's session key and the subscriber's signing secrets, in clear, as the gateway
    uses them."""
    with store_for(database, create=False, sealer=Sealer.from_file(key_file)) as store:
        now = datetime.now(UTC)
        session_key = store.secret("console_session_key", "unused", now)
        callback_token = store.secret("callback_token", "unused", now)
        hook = store.get_subscriber("hook")
    assert hook is not None
    assert hook.previous_secret is not None
    return [callback_token, admin, session_key, hook.secret, hook.previous_secret]


def add_and_rotate(server: ProcessServer, admin: str) -> None:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {admin}"}, timeout=30) as api:
        api.post("/api/subscribers", json={"name": "hook", "url": PUBLIC_URL, "secret": SECRET}).raise_for_status()
        api.post("/api/subscribers/hook/rotate-secret", json={"secret": NEWER}).raise_for_status()


def admin_token(database: Target, key_file: Path | None) -> str:
    env = {"RELAY_SECRET_KEY_FILE": str(key_file)} if key_file else {}
    printed = cos_relay("tokens", "--db", db_text(database), env=env)
    assert printed.returncode == 0, printed.stderr
    [line] = [line for line in printed.stdout.splitlines() if line.startswith("admin_token: ")]
    return line.removeprefix("admin_token: ")


def test_under_umask_022_the_database_its_wal_and_shm_and_a_backup_are_the_owners_alone(tmp_path: Path) -> None:
    db = tmp_path / "relay.db"
    older = tmp_path / "older.db"
    with store_for(older):  # as an older release left it: readable by everyone
        pass
    older.chmod(0o644)
    for path in (db, older):
        server = ProcessServer(path, preexec_fn=umask_022).start()
        try:
            add_and_rotate(server, admin_token(path, None))
            files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
            assert {each.name: oct(mode(each)) for each in files} == {each.name: "0o600" for each in files}
            backup = tmp_path / f"{path.stem}.backup"
            made = subprocess.run(
                [sys.executable, "-m", "relay", "backup", str(backup), "--db", str(path)],
                capture_output=True,
                text=True,
                preexec_fn=umask_022,
                timeout=60,
            )
            assert made.returncode == 0, made.stderr
            assert oct(mode(backup)) == "0o600"
        finally:
            server.stop()


@pytest.mark.both_backends
def test_with_a_key_a_copy_of_the_database_holds_no_working_secret_even_one_written_before_the_key(
    database: Target, tmp_path: Path
) -> None:
    # Started without a key (as every database before this release was): secrets in clear, said once.
    server = ProcessServer(database).start()
    try:
        admin = admin_token(database, None)
        add_and_rotate(server, admin)
    finally:
        printed = server.stop()
    assert printed.count("secrets are stored in clear") == 1
    clear = secrets_in_use(database, None, admin)
    copy = stored_copy(database, tmp_path)
    assert all(secret.encode() in copy for secret in clear)  # the test can see a secret when one is there

    key_file = new_key_file(tmp_path / "keys")
    server = ProcessServer(database, env={"RELAY_SECRET_KEY_FILE": str(key_file)}).start()
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {admin}"}, timeout=30) as api:
            shown = api.get("/api/subscribers/hook/secret").json()
        assert (shown["secret"], shown["previous_secret"]) == (NEWER, SECRET)  # the same secrets, still working
        copy = stored_copy(database, tmp_path)
    finally:
        printed = server.stop()
    assert "secrets are stored in clear" not in printed
    assert secrets_in_use(database, key_file, admin) == clear
    assert [secret for secret in clear if secret.encode() in copy] == []
    assert copy.count(PREFIX.encode()) >= len(clear)

    # Without the key, or with another one: one line naming the fix, exit 2.
    for env in ({}, {"RELAY_SECRET_KEY_FILE": str(new_key_file(tmp_path / "other"))}):
        refused = cos_relay("tokens", "--db", db_text(database), env=env)
        assert refused.returncode == 2
        assert "Traceback" not in refused.stderr
        assert refused.stderr.strip().splitlines() == [refused.stderr.strip()]
        assert "RELAY_SECRET_KEY_FILE" in refused.stderr


@pytest.mark.both_backends
def test_rotating_the_key_reseals_every_secret_and_then_the_old_key_can_go(database: Target, tmp_path: Path) -> None:
    key_file = new_key_file(tmp_path / "keys")
    old = key_id(parse_keys(key_file.read_text())[0])
    env = {"RELAY_SECRET_KEY_FILE": str(key_file)}
    server = ProcessServer(database, env=env).start()
    try:
        admin = admin_token(database, key_file)
        add_and_rotate(server, admin)
    finally:
        server.stop()
    before = secrets_in_use(database, key_file, admin)

    new_key_file(key_file)  # the new key first, the old one kept after it
    assert len(parse_keys(key_file.read_text())) == 2
    rotated = cos_relay("secrets", "rotate-key", "--db", db_text(database), env=env)
    assert rotated.returncode == 0, rotated.stderr
    new = key_id(parse_keys(key_file.read_text())[0])
    assert rotated.stdout.strip().endswith(f"sealed under key {new}.")

    key_file.write_text(key_file.read_text().splitlines()[0] + "\n")  # the old key goes
    assert secrets_in_use(database, key_file, admin) == before
    copy = stored_copy(database, tmp_path)
    assert f"{PREFIX}{old}:".encode() not in copy
    server = ProcessServer(database, env=env).start()
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {admin}"}, timeout=30) as api:
            assert api.get("/api/subscribers/hook/secret").json()["secret"] == NEWER
    finally:
        server.stop()


def test_a_sealed_secret_opens_only_under_its_key_and_unaltered() -> None:
    key = parse_keys(generate_key())[0]
    sealer = Sealer([key])
    sealed = sealer.seal("whsec_x")
    assert sealed.startswith(f"{PREFIX}{key_id(key)}:")
    assert sealed != sealer.seal("whsec_x")  # a fresh nonce each time
    assert sealer.open(sealed) == "whsec_x"
    assert sealer.open("in clear") == "in clear"
    # The payload's first character: all six of its bits are the nonce's (a last character's may be padding bits
    # that decode to the same bytes whatever they are).
    at = len(f"{PREFIX}{key_id(key)}:")
    altered = sealed[:at] + ("A" if sealed[at] != "A" else "B") + sealed[at + 1 :]
    with pytest.raises(WrongSecretKey, match="does not open"):
        Sealer([key]).open(altered)
    with pytest.raises(WrongSecretKey, match="RELAY_SECRET_KEY_FILE"):
        Sealer().open(sealed)
    with pytest.raises(ValueError, match="line 1 is not a key"):
        parse_keys("not a key")
