"""Debian's Chromium driven by Playwright, and axe-core from the npm registry (pinned, checksum-checked, cached).

Playwright's own browser download is never used: the tests launch /usr/bin/chromium (scripts/system-packages).
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import tarfile
import urllib.request
from pathlib import Path
from typing import Any

from playwright.sync_api import Page

CHROMIUM = "/usr/bin/chromium"
#: No sandbox (root in a container), no GPU, and nothing that would reach out to the network by itself.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
AXE_VERSION = "4.14.1"
AXE_TARBALL = f"https://registry.npmjs.org/axe-core/-/axe-core-{AXE_VERSION}.tgz"
#: The registry's `dist.integrity` for that version (`npm view axe-core@4.14.1 dist.integrity`).
AXE_INTEGRITY = "sha512-FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ=="
#: What the tests fail on; moderate and minor findings are reported by axe but not fatal here.
SERIOUS = ("serious", "critical")


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cos-relay"


def axe_source() -> str:
    """axe.min.js of the pinned version: from the cache, else downloaded once and checked against its integrity."""
    cached = cache_dir() / f"axe-core-{AXE_VERSION}.min.js"
    if cached.is_file():
        return cached.read_text()
    with urllib.request.urlopen(AXE_TARBALL, timeout=60) as answer:
        tarball = answer.read()
    digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()
    if digest != AXE_INTEGRITY:
        raise AssertionError(f"axe-core {AXE_VERSION} from the registry does not match its pinned integrity")
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        member = archive.extractfile("package/axe.min.js")
        assert member is not None
        source = member.read().decode()
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(source)
    return source


def serious_violations(page: Page, axe: str) -> list[str]:
    """Run axe-core on the page; the serious and critical findings, one line each.

    axe is evaluated through the DevTools protocol, which the page's CSP does not govern: the page itself
    stays exactly as served (an injected <script> would need the CSP relaxed).
    """
    page.evaluate(axe + "\n;true")
    result: dict[str, Any] = page.evaluate("async () => await axe.run(document)")
    return [
        f"{violation['impact']}: {violation['id']} ({violation['help']}) at "
        + ", ".join(str(node["target"]) for node in violation["nodes"][:3])
        for violation in result["violations"]
        if violation["impact"] in SERIOUS
    ]
