"""Grafana's own published types judge the dashboard and the generated Canvas panel.

Grafana cannot run here; its npm package @grafana/schema (11.6.16, with the Canvas, stat, time
series, bar gauge, table and state timeline panel types) and the TypeScript compiler (5.9.3), both
pinned in tests/grafana-types/package-lock.json, can. tests/grafana-types/generate.mjs writes each
JSON file as a TypeScript object literal that must `satisfy` the types of tests/grafana-types/types.ts,
and `tsc` (strict) refuses an unknown key, a wrong enum string, a missing required key.

Accepted differences (why each: in types.ts and docs/development.md): enums are compared by their
string (or number) values; the export envelope `__inputs`/`__elements`/`__requires`; a query
variable's `definition`; the InfluxQL query keys (`query`, `rawQuery`, `resultFormat`, `alias`),
which @grafana/schema leaves to each data source; missing panel options (Grafana fills them from
the panel's defaults), except on the Canvas panel, whose options are checked in full; a Canvas
element's `config` checked against Grafana's TextConfig; the state timeline's `spanNulls` and
`insertNulls`, which its module registers and its schema omits.

`npm ci` runs once into tests/grafana-types/node_modules (gitignored) and again only when the lock
file changes.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess

import pytest

from support.paths import ROOT, TESTS

TYPES_DIR = TESTS / "grafana-types"
DASHBOARD = ROOT / "grafana" / "tigo-dashboard.json"


def _installed() -> bool:
    """node_modules holds exactly what package-lock.json pins (npm's hidden lockfile says so)."""
    hidden = TYPES_DIR / "node_modules" / ".package-lock.json"
    if not hidden.exists():
        return False
    wanted = json.loads((TYPES_DIR / "package-lock.json").read_text())["packages"]
    wanted.pop("", None)
    return bool(json.loads(hidden.read_text())["packages"] == wanted)


@pytest.fixture(scope="module")
def tsc_check():
    """check(name, dashboard=..., canvas=...) -> tsc's result for those JSON values."""
    npm = shutil.which("npm")
    assert npm, "npm is missing: .ci/run installs Debian's nodejs and npm"
    if not _installed():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=TYPES_DIR, check=True,
                       capture_output=True, text=True, timeout=600)

    def check(name: str, **values: dict) -> subprocess.CompletedProcess[str]:
        out = TYPES_DIR / "generated" / name
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        pairs = []
        for kind, value in values.items():
            path = out / f"{kind}.json"
            path.write_text(json.dumps(value))
            pairs.append(f"{kind}={path}")
        subprocess.run(["node", "generate.mjs", str(out), *pairs], cwd=TYPES_DIR, check=True,
                       timeout=60)
        return subprocess.run([str(TYPES_DIR / "node_modules" / ".bin" / "tsc"), "-p", str(out)],
                              cwd=TYPES_DIR, capture_output=True, text=True, timeout=300)

    return check


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def assert_passes(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_passes(tsc_check):
    assert_passes(tsc_check("dashboard", dashboard=dashboard()))


def _mutated(path: tuple, value: object) -> dict:
    dash = copy.deepcopy(dashboard())
    target = dash
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return dash


@pytest.mark.parametrize(("path", "value", "says"), [
    (("panels", 0, "titel"), "x", "'\"titel\"' does not exist"),  # an unknown key on a panel
    (("panels", 5, "targets", 0, "rawQeury"), True, "'\"rawQeury\"' does not exist"),  # in a query
    (("panels", 0, "options", "colorMode"), "valu", "'\"valu\"' is not assignable"),  # enum string
    (("templating", "list", 3, "refresh"), 7, "'7' is not assignable"),  # numeric enum
    (("panels", 5, "fieldConfig", "defaults", "custom", "drawStyl"), "line", "'\"drawStyl\"'"),
])
def test_a_wrong_dashboard_fails(tsc_check, path, value, says):
    result = tsc_check("wrong-dashboard", dashboard=_mutated(path, value))
    assert result.returncode != 0
    assert says in result.stdout, result.stdout
