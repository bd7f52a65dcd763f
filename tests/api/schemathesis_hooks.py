"""schemathesis hooks (loaded by tests/api/schemathesis.toml): a subscriber it creates or changes is sent to the
test's sink (RELAY_TEST_SINK), never to whatever host it made up, so the run reaches no other machine."""

from __future__ import annotations

import os
from typing import Any

import schemathesis
from yarl import URL


def _deliverable(url: str) -> bool:
    try:
        parsed = URL(url)
        return parsed.scheme in ("http", "https") and bool(parsed.host)
    except (ValueError, TypeError):
        return False


@schemathesis.hook
def before_call(context: schemathesis.HookContext, case: schemathesis.Case[Any], kwargs: dict[str, Any]) -> None:
    body = case.body
    url = body.get("url") if isinstance(body, dict) else None
    if isinstance(body, dict) and isinstance(url, str) and _deliverable(url):
        body["url"] = os.environ["RELAY_TEST_SINK"]
