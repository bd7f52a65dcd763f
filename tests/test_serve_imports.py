"""What a gateway imports at start: only what it uses (`python -m tests.start_cost` measures a start's CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_a_gateway_on_sqlite_imports_no_client_it_does_not_use_yet(tmp_path: Path) -> None:
    """What `cos-relay serve` imports at start on SQLite: not xmlschema (the schema is read back compiled), httpx
    (the COS client's, made for a COS source), asyncpg (PostgreSQL's) nor aiohttp (made at the first delivery):
    from a twentieth to a quarter of a second of CPU each, and the test suite starts a few hundred gateways."""
    start = (
        "import sys, relay.app.serving; from relay.store import store_for;"
        "from relay.validate.schema import CallbackSchema; CallbackSchema.load();"
        f"store = store_for(__import__('pathlib').Path({str(tmp_path / 'relay.db')!r})); store.open(); store.close();"
        "print(sorted(set(sys.modules) & {'xmlschema', 'elementpath', 'httpx', 'asyncpg', 'aiohttp'}))"
    )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-c", start], env=env, check=True, capture_output=True)  # leaves the cache
    imported = subprocess.run([sys.executable, "-c", start], env=env, check=True, capture_output=True, text=True)
    assert imported.stdout.strip() == "[]"
