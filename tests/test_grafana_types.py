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

The generated Canvas panel (`tigo-execd layout --format grafana`, the demo's layout) is checked
alone and inside the dashboard as docs/install.md puts it there; its query runs against a real
InfluxDB holding the demo day, with the dashboard's variables as Grafana fills them
(support/dashboard_grafana.py), and every drawn panel's rectangle is bound to a series it returns.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess

import pytest

from support.dashboard_grafana import Range, interpolate, resolve_variables
from support.ha_conf import load_demo
from support.paths import ROOT, TESTS
from support.proc import tigo_execd_argv

TYPES_DIR = TESTS / "grafana-types"
DRAWN = {f"{gw}/{n}" for gw, count in ((4609, 9), (4610, 7), (4611, 6)) for n in range(2, count + 2)}
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


# ---------------------------------------------------------------- the generated Canvas panel


@pytest.fixture
def demo_canvas(influx_db, tmp_path) -> tuple[dict, int]:
    """The demo day in InfluxDB and the Canvas panel of the demo's layout; (panel, midday in ms)."""
    load_demo(influx_db, tmp_path)
    done = subprocess.run(tigo_execd_argv("layout", "--demo", "--format", "grafana", "--influx-url",
                                          influx_db.url, "--db", influx_db.db, "--state-file", ""),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    [row] = influx_db.query('SELECT max("power_w") FROM "tigo_power_report"', epoch="ms")[0]["values"]
    return json.loads(done.stdout), int(row[0])


def with_roof(dash: dict, roof: dict) -> dict:
    """What docs/install.md's jq does: the roof on top, every other panel moved down by its height."""
    moved = [{**p, "gridPos": {**p["gridPos"], "y": p["gridPos"]["y"] + roof["gridPos"]["h"]}}
             for p in dash["panels"]]
    return {**dash, "panels": [roof, *moved]}


def elements(panel: dict, kind: str) -> list[dict]:
    return [e for e in panel["options"]["root"]["elements"] if e["type"] == kind]


def test_the_canvas_panel_and_the_dashboard_with_it_pass(tsc_check, demo_canvas):
    roof, _ = demo_canvas
    assert_passes(tsc_check("canvas", canvas=roof, dashboard=with_roof(dashboard(), roof)))


@pytest.mark.parametrize(("change", "says"), [
    (lambda e: e.__setitem__("placment", e.pop("placement")), "'\"placment\"' does not exist"),
    (lambda e: e["config"].__setitem__("align", "centre"), "'\"centre\"' is not assignable"),
    (lambda e: e["constraint"].__setitem__("horizontal", "middle"), "'\"middle\"' is not assignable"),
    (lambda e: e["background"]["color"].pop("fixed"), "Property 'fixed' is missing"),
])
def test_a_wrong_canvas_element_fails(tsc_check, demo_canvas, change, says):
    roof = copy.deepcopy(demo_canvas[0])
    change(elements(roof, "rectangle")[0])
    result = tsc_check("wrong-canvas", canvas=roof)
    assert result.returncode != 0
    assert says in result.stdout, result.stdout


def _threshold_colour(value: float, defaults: dict) -> str:
    """Grafana's percentage thresholds: the last step whose value the percent of min..max reaches."""
    percent = 100 * (value - defaults["min"]) / (defaults["max"] - defaults["min"])
    steps = defaults["thresholds"]["steps"]
    return [st["color"] for st in steps if st["value"] is None or percent >= st["value"]][-1]


def test_every_drawn_panel_is_bound_to_a_series_of_its_query(influx_db, demo_canvas):
    """The panel's query, with the dashboard's variables at All, at the demo's midday: one series
    per reporting panel, named GATEWAY/NODE by the alias, as the rectangles' colour bindings say;
    the thresholds then colour the weak 4610/3 apart from its face's peers."""
    roof, midday = demo_canvas
    rects = elements(roof, "rectangle")
    assert {r["background"]["color"]["field"] for r in rects} == DRAWN
    assert all(r["background"]["color"]["fixed"] == "#9e9e9e" for r in rects)  # no series: grey
    rng = Range(midday - 6 * 3600_000, midday)
    variables = resolve_variables(dashboard(), influx_db, rng)
    [target] = roof["targets"]
    series = influx_db.query(interpolate(target["query"], variables, rng), epoch="ms")
    alias = target["alias"].replace("$tag_gateway_id", "{gateway_id}").replace("$tag_node_id", "{node_id}")
    last = {alias.format(**s["tags"]): s["values"][-1][1] for s in series}
    assert set(last) == DRAWN
    colours = {p: _threshold_colour(v, roof["fieldConfig"]["defaults"]) for p, v in last.items()}
    peers = [colours[f"4610/{n}"] for n in (2, 4, 6, 7, 8)]
    assert colours["4610/3"] not in peers and len(set(peers)) <= 2, colours
    for r in rects:  # inside the panel, in percent of it (the `scale` constraint)
        place = r["placement"]
        assert r["constraint"] == {"horizontal": "scale", "vertical": "scale"}
        assert all(0 <= place[k] <= 100 for k in ("left", "top", "right", "bottom"))
        assert place["left"] + place["right"] < 100 and place["top"] + place["bottom"] < 100
