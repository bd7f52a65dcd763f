"""Shared fixtures: settings on a fresh database, and a running gateway on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from relay.app import create_app
from relay.settings import Settings
from tests.live import ThreadServer

DATA = Path(__file__).parent / "data"
CALLBACK_TOKEN = "test-callback-token"
ADMIN_TOKEN = "test-admin-token"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(db_path=tmp_path / "relay.db", callback_token=CALLBACK_TOKEN, admin_token=ADMIN_TOKEN)


@pytest.fixture
def gateway(settings: Settings) -> Iterator[ThreadServer]:
    """cos-relay served by real uvicorn on 127.0.0.1."""
    server = ThreadServer(create_app(settings)).start()
    yield server
    server.stop()


@pytest.fixture
def client(gateway: ThreadServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        yield http


@pytest.fixture
def admin(gateway: ThreadServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=30) as http:
        yield http


def callback_url(token: str = CALLBACK_TOKEN) -> str:
    return f"/cos/callback?token={token}"
