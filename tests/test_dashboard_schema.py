"""The dashboard against Grafana's own published schema: @grafana/schema's `Dashboard` type (the npm registry's
package of the schema Grafana generates its code from), checked by the TypeScript compiler. JSON has no
TypeScript enums, so each enum is taken as the union of its string values. Both packages are pinned and
installed once into the test cache (tests/browser.py's `cache_dir`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.browser import cache_dir

#: Slow tier: npm and the TypeScript compiler, a few seconds.
pytestmark = pytest.mark.slow

DASHBOARD = Path(__file__).parent.parent / "grafana" / "dashboards" / "cos-relay.json"
PACKAGES = ("typescript@5.9.3", "@grafana/schema@13.2.3")
CHECK = """import type { Dashboard } from '@grafana/schema';

type AsJson<T> = T extends string
  ? `${T}`
  : T extends (infer E)[]
    ? AsJson<E>[]
    : T extends object
      ? { [K in keyof T]: AsJson<T[K]> }
      : T;

export const dashboard: AsJson<Dashboard> = DASHBOARD;
"""


def installed() -> Path:
    folder = cache_dir() / ("grafana-schema-" + "-".join(name.rsplit("@", 1)[1] for name in PACKAGES))
    if not (folder / "node_modules" / "typescript" / "bin" / "tsc").is_file():
        npm = shutil.which("npm")
        assert npm, "npm is not installed (scripts/system-packages installs it)"
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "install", "--prefix", str(folder), "--no-audit", "--no-fund", "--silent", *PACKAGES],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return folder


def test_the_dashboard_is_a_dashboard_by_grafanas_published_schema(tmp_path: Path) -> None:
    folder = installed()
    check = folder / f"check-{tmp_path.name}.ts"  # beside node_modules, so the import resolves
    check.write_text(CHECK.replace("DASHBOARD", DASHBOARD.read_text().strip()))
    try:
        compiled = subprocess.run(
            [
                "node",
                str(folder / "node_modules" / "typescript" / "bin" / "tsc"),
                *("--noEmit", "--strict", "--skipLibCheck", "--moduleResolution", "bundler"),
                *("--module", "esnext", "--target", "es2022", str(check)),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        check.unlink()
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
