"""grafana/tigo-dashboard.json: import format, and every query of every panel and variable run against a
real InfluxDB 1.x holding a known synthetic day, with the figures checked against plain Python."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import time

import pytest

from support import dashboard_day as day
from support.dashboard_day import DAY0, MIN, NOW
from support.dashboard_grafana import (
    Range,
    Var,
    all_panels,
    interpolate,
    interval_ms,
    load,
    panel_range,
    resolve_variables,
)
from support.dashboard_render import render
from support.paths import ROOT
from support.proc import tigo_execd_argv
from support.rollup_history import day_lines, write_history

# Grafana unit ids (the `unit` values of Grafana's unit picker, packages/grafana-data valueFormats)
# that this dashboard may use.
GRAFANA_UNITS = {"watt", "kwatth", "volt", "amp", "celsius", "percentunit", "none", "short", "cpm", "s",
                 "Bps"}
DS_REF = {"type": "influxdb", "uid": "${datasource}"}
DASH_RANGE = Range(DAY0, NOW)  # the synthetic day, the night and the next morning up to "now"


@pytest.fixture(scope="module")
def dash() -> dict:
    return load()


def test_import_format(dash):
    assert [i["name"] for i in dash["__inputs"]] == ["DS_INFLUXDB"]
    assert dash["__inputs"][0]["pluginId"] == "influxdb"
    required = {r["id"] for r in dash["__requires"]}
    panels = all_panels(dash)
    assert {"grafana", "influxdb"} <= required
    assert {p["type"] for p in panels if p["type"] != "row"} <= required
    assert dash["uid"] == "tigo-execd-optimizers" and dash["id"] is None
    assert dash["schemaVersion"] >= 39
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))

    # the data source is chosen on import (DS_INFLUXDB) as the default of the `datasource` variable,
    # which every panel, query and query variable uses; no data source uid is written in
    ds_var = next(v for v in dash["templating"]["list"] if v["type"] == "datasource")
    assert ds_var["name"] == "datasource" and ds_var["query"] == "influxdb"
    assert ds_var["current"]["value"] == "${DS_INFLUXDB}"
    for p in panels:
        if p["type"] == "row":
            continue
        assert p["datasource"] == DS_REF, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == DS_REF and t["rawQuery"] is True, p["title"]
            assert t["query"].lstrip().upper().startswith("SELECT"), p["title"]  # InfluxQL, not Flux
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            assert v["datasource"] == DS_REF, v["name"]
    refs = []

    def walk(node):
        if isinstance(node, dict):
            refs.extend(v for k, v in node.items() if k == "datasource" and isinstance(v, dict))
            node = list(node.values())
        for child in node if isinstance(node, list) else []:
            walk(child)

    walk(dash["panels"] + dash["templating"]["list"])
    assert refs and all(r == DS_REF for r in refs)
    assert set(re.findall(r"\$\{(DS_\w+)\}", repr(dash))) == {"DS_INFLUXDB"}

    units = set()
    for p in panels:
        units.add(p.get("fieldConfig", {}).get("defaults", {}).get("unit"))
        for o in p.get("fieldConfig", {}).get("overrides", []):
            units |= {prop["value"] for prop in o["properties"] if prop["id"] == "unit"}
    units.discard(None)
    assert units <= GRAFANA_UNITS, units - GRAFANA_UNITS
    # rssi is raw 0-255, a per-minute count is not ops/s, nights are gaps
    by_title = {p["title"]: p for p in panels}
    assert by_title["RSSI"]["fieldConfig"]["defaults"]["unit"] == "none"
    assert by_title["Reports per node per minute"]["fieldConfig"]["defaults"]["unit"] == "cpm"
    for p in panels:
        if p["type"] == "timeseries":
            span = p["fieldConfig"]["defaults"]["custom"]["spanNulls"]
            assert span is not True and (span is False or span <= 3600000), p["title"]


def test_variables(dash):
    by_name = {v["name"]: v for v in dash["templating"]["list"]}
    assert by_name["rp"]["current"]["value"] == ""  # "" makes "$rp"."m" the database default RP
    assert by_name["measurement"]["current"]["value"] == "tigo_power_report"
    for name in ("gateway", "node"):
        v = by_name[name]
        assert v["multi"] and v["includeAll"] and v["sort"] == 3 and "allValue" not in v
    assert "$gateway" in by_name["node"]["query"]
    for name in ("barcode", "panel"):  # absent tags must still match "All"
        assert by_name[name]["allValue"] == ".*"


# ---- the queries, run against InfluxDB ----

@pytest.fixture(scope="module")
def solar_db(influxd):
    """A database whose default retention policy is not `autogen`, holding the synthetic day."""
    with influxd.database("dashday") as db:
        influxd.raw_query(f'CREATE RETENTION POLICY "solar" ON "{db.db}" DURATION INF REPLICATION 1 DEFAULT')
        rs = day.reports()
        lines = [r.line() for r in rs] + day.ingest_lines(rs) + day.health_lines() + day.panel_day_lines()
        for i in range(0, len(lines), 10000):
            db.write("\n".join(lines[i:i + 10000]).encode())
        yield db, rs


def run_dashboard(dash, db, variables: dict[str, Var], dash_range: Range = DASH_RANGE,
                  max_points: int = 1000) -> dict[str, list[list[dict]]]:
    """panel title -> per target, the series InfluxDB returned (epoch ms). max_points stands for the
    panel's width in pixels where the panel does not set maxDataPoints."""
    results = {}
    for p in all_panels(dash):
        if p["type"] == "row":
            continue
        rng = panel_range(p, dash_range)
        step = interval_ms(rng.from_ms, rng.to_ms, p, max_points)
        results[p["title"]] = [db.query(interpolate(t["query"], variables, rng, step), epoch="ms")
                               for t in p["targets"]]
    return results


def by_key(series: list[dict]) -> dict[tuple[str, str], dict]:
    return {(s["tags"]["gateway_id"], s["tags"]["node_id"]): s for s in series}


def approx_map(got: dict, want: dict, rel=1e-9, abs_=1e-9) -> None:
    assert got.keys() == want.keys(), (sorted(got.keys() - want.keys())[:5],
                                       sorted(want.keys() - got.keys())[:5])
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=rel, abs=abs_), k


def values(series: dict, column: int = 1) -> dict[int, float]:
    return {v[0]: v[column] for v in series["values"] if v[column] is not None}


def test_every_query_against_influxdb(dash, solar_db, output_dir):
    db, rs = solar_db
    variables = resolve_variables(dash, db, DASH_RANGE)
    assert variables["gateway"].options == ["1", "2", "3"]
    assert variables["node"].options == ["1", "2", "3", "4", "10", "11"]  # numeric, not text order
    assert "4-B0000AD" in variables["barcode"].options and variables["panel"].options == ["A1", "A2"]
    only3 = resolve_variables(dash, db, DASH_RANGE, gateway=["3"])
    assert only3["node"].options == ["2", "10", "11"]  # filtered by the chosen gateway

    results = run_dashboard(dash, db, variables)
    n_queries = sum(len(t) for t in results.values()) + sum(
        1 for v in dash["templating"]["list"] if v["type"] == "query")
    for title, targets in results.items():
        assert any(targets), f"{title}: no data"

    day_rs = day.select(rs, DASH_RANGE.from_ms, DASH_RANGE.to_ms)
    today = Range(NOW - NOW % 86400000, NOW)
    today_rs = day.select(rs, today.from_ms, today.to_ms)
    total_panel = next(p for p in all_panels(dash) if p["title"] == "Total power")
    step = interval_ms(DASH_RANGE.from_ms, DASH_RANGE.to_ms, total_panel)
    assert step == 3 * MIN

    # total power: per-node bucket means summed; nights are nulls (gaps), not zeros or lines
    total = results["Total power"][0][0]
    want_total = day.total_power(day_rs, step)
    approx_map(values(total), want_total)
    night = [v[1] for v in total["values"]
             if v[0] % 86400000 >= 23 * 3600000 or v[0] % 86400000 < 3 * 3600000]
    assert night and all(v is None for v in night)
    # a missed minute does not make the total dip (the old per-minute sum does)
    day1 = {b: p for b, p in want_total.items() if DAY0 + 8 * 3600000 <= b < DAY0 + 15 * 3600000}
    assert max(abs(p / day.true_total(b + step // 2) - 1) for b, p in day1.items()) < 0.03
    naive = {b: p for b, p in day.naive_minute_total(day_rs).items()
             if DAY0 + 8 * 3600000 <= b < DAY0 + 15 * 3600000}
    assert max(1 - p / day.true_total(b + MIN // 2) for b, p in naive.items()) > 0.05

    assert results["Peak power"][0][0]["values"] and max(values(results["Peak power"][0][0]).values()) == \
        pytest.approx(max(want_total.values()))
    last = {}
    for r in day.select(rs, NOW - 3 * MIN + 1, NOW):
        last[r.node.key] = r
    current = results["Current power"][0][0]["values"][0][1]
    assert current == pytest.approx(sum(r.power_w for r in last.values()))
    assert results["Nodes reporting"][0][0]["values"][0][1] == len(day.NODES) - 1  # the silent node

    # energy: today total and per node, and per day over the range
    kwh_today = day.energy_kwh(today_rs)
    assert sum(values(results["Energy today"][0][0]).values()) == pytest.approx(
        sum(sum(d.values()) for d in kwh_today.values()))
    approx_map({k: sum(values(s).values()) for k, s in by_key(results["Energy today per node"][0]).items()},
               {k: sum(d.values()) for k, d in kwh_today.items()})
    kwh_days: dict[int, float] = {}
    for d in day.energy_kwh(day_rs).values():
        for b, e in d.items():
            kwh_days[b] = kwh_days.get(b, 0) + e
    approx_map(values(results["Energy per day"][0][0]), kwh_days)
    # the estimate agrees with the trapezoid integral of the reports (physics, not the same formula)
    for key, d in day.energy_kwh(day_rs).items():
        pts = sorted((r.ms, r.power_w) for r in day_rs if r.node.key == key)
        trap = sum((t2 - t1) / 3.6e6 * (p1 + p2) / 2
                   for (t1, p1), (t2, p2) in itertools.pairwise(pts) if t2 - t1 < 10 * MIN)
        assert sum(d.values()) == pytest.approx(trap / 1000, rel=0.01), key

    # the per-node table: one row per optimizer, silent ones included
    rows = by_key(results["Nodes"][0])
    assert rows.keys() == {n.key for n in day.NODES}
    cols = results["Nodes"][0][0]["columns"]
    week = day.select(rs, NOW - 7 * 86400000, NOW)
    for n in day.NODES:
        row = dict(zip(cols, rows[n.key]["values"][0]))
        mine = [r for r in week if r.node.key == n.key]
        latest = max(mine, key=lambda r: r.ms)
        assert row["Last power"] == latest.power_w
        assert row["Since last report"] == pytest.approx((NOW - latest.ms) / 1000)
        hour = [r for r in mine if NOW - 3600000 < r.ms <= NOW]
        assert row["Reports last hour"] == (len(hour) or None)
        assert row["Energy today"] == pytest.approx(sum(kwh_today.get(n.key, {}).values()) or None)
        rssi = [r.rssi for r in today_rs if r.node.key == n.key]
        assert row["Mean rssi"] == (pytest.approx(sum(rssi) / len(rssi)) if rssi else None)
    assert dict(zip(cols, rows[day.SILENT]["values"][0]))["Since last report"] > 86400
    skipper = dict(zip(cols, rows[day.SKIPPER]["values"][0]))
    assert skipper["Reports last hour"] == 180 - 9 * 3  # 9 skipped minutes

    # reports per node per minute: counts, not rates per second; gateways kept apart
    rpm = by_key(results["Reports per node per minute"][0])
    assert len(rpm) == len(day.NODES)
    rpm_step = interval_ms(DASH_RANGE.from_ms, DASH_RANGE.to_ms, {"interval": "1m"})
    for n in day.NODES:
        counts: dict[int, float] = {}
        for r in day_rs:
            if r.node.key == n.key:
                b = r.ms - r.ms % rpm_step
                counts[b] = counts.get(b, 0) + MIN / rpm_step
        approx_map(values(rpm[n.key]), counts)
    assert {s["tags"]["barcode"] for s in results["Power per node"][0]} >= {n.barcode for n in day.NODES}

    raw = values(results["Raw sum of power_w (debug)"][0][0])
    raw_want: dict[int, float] = {}
    for r in day_rs:
        b = r.ms - r.ms % rpm_step
        raw_want[b] = raw_want.get(b, 0) + r.power_w
    approx_map(raw, raw_want, rel=1e-9, abs_=1e-6)

    # pipeline: counter rates, the restart's reset dropped, never negative
    ingest = results["Ingest"][0][0]
    rates = [v[1] for v in ingest["values"] if v[1] is not None]
    assert rates and min(rates) >= 0
    midday = [v[1] for v in ingest["values"] if DAY0 + 13 * 3600000 <= v[0] < DAY0 + 14 * 3600000]
    expected = sum(1 for r in rs if DAY0 + 13 * 3600000 <= r.ms < DAY0 + 14 * 3600000) / 60
    assert sum(midday) / len(midday) == pytest.approx(expected, rel=0.05)
    bus = [v[1] for v in results["RS-485 bus"][0][0]["values"]]
    assert bus and all(b == pytest.approx(1200) for b in bus), [b for b in bus if b != pytest.approx(1200)]
    health = {v[1] for v in results["Health"][0][0]["values"]}
    assert health == {0, 1}
    assert {v[1] for v in results["Health"][1][0]["values"]} == {"healthy", "night", "nodes_silent"}

    # the picture of what the panels show
    png = render(results, output_dir / "dashboard.png")
    assert png.stat().st_size > 20000
    energy = sum(values(results["Energy today"][0][0]).values())
    print(f"{n_queries} queries checked; energy today {energy:.3f} kWh")


def test_selection_and_retention_policy(dash, solar_db):
    """Multi-value selections become regexes that pick exactly those nodes (gateways kept apart); an
    explicit retention policy is honoured."""
    db, rs = solar_db
    pick = {("1", "2"), ("3", "2"), ("3", "10")}  # the selection's cross product (1/10 does not exist)
    variables = resolve_variables(dash, db, DASH_RANGE, gateway=["1", "3"], node=["2", "10"])
    variables["rp"] = Var(variables["rp"].spec, selected=["solar"])
    results = run_dashboard(dash, db, variables)
    want = day.total_power(day.select(rs, DAY0, NOW, pick), 3 * MIN)
    approx_map(values(results["Total power"][0][0]), want)
    assert set(by_key(results["Power per node"][0])) == pick

    # the range panels read the RP the resolution table names (raw: `rollup --rp`), the fixed-window
    # panels the Retention policy box
    first_query = {p["title"]: p["targets"][0]["query"] for p in all_panels(dash) if p["type"] != "row"}
    variables["res"] = Var(variables["res"].spec, selected=["autogen"])
    assert db.query(interpolate(first_query["Total power"], variables, DASH_RANGE, 3 * MIN)) == []
    variables["rp"] = Var(variables["rp"].spec, selected=["autogen"])
    assert db.query(interpolate(first_query["Energy today"], variables, DASH_RANGE)) == []


def test_panel_health_row(dash, solar_db):
    """The current findings (the latest tigo_panel_day with kinds) and each panel's daily energy ratio."""
    db, _ = solar_db
    results = run_dashboard(dash, db, resolve_variables(dash, db, DASH_RANGE))
    faults = results["Panel faults"][0]
    rows = {k: dict(zip(s["columns"], s["values"][0])) for k, s in by_key(faults).items()}
    assert rows.keys() == day.FAULTY.keys()  # not the healthy panels, not the older day's fault
    for key, (kinds, ratio) in day.FAULTY.items():
        assert (rows[key]["Kinds"], rows[key]["Energy ratio"]) == (kinds, ratio)
        assert rows[key]["Peer group"] == f"{key[0]}/a"  # the group it was judged in
        assert rows[key]["time"] == day.PANEL_DAY
    assert {s["tags"]["panel"] for s in faults} == {"", "A1"}  # names shown when known

    ratios = by_key(results["Energy ratio per panel and day"][0])
    assert ratios.keys() == {n.key for n in day.NODES}
    assert {k: values(s) for k, s in ratios.items()} == {
        n.key: {day.PANEL_DAY: day.FAULTY.get(n.key, ("", 1.0))[1]} for n in day.NODES}
    # one gateway picked: only its panels
    only1 = resolve_variables(dash, db, DASH_RANGE, gateway=["1"])
    faults1 = run_dashboard(dash, db, only1)["Panel faults"][0]
    assert set(by_key(faults1)) == {("1", "3")}


def test_readme_picture_is_committed():
    """The README shows docs/dashboard.png, a rendering of these queries (refresh it from tests/output)."""
    assert (ROOT / "docs" / "dashboard.png").stat().st_size > 20000
    assert "](docs/dashboard.png)" in (ROOT / "README.md").read_text()


# ---- resolution: raw reports for short ranges, rollups for long ones ----

HIST_DAYS = 16


@pytest.fixture(scope="module")
def hist_day0() -> int:
    """The history's first midnight, HIST_DAYS before today (read when the tests run, not at import)."""
    return (int(time.time() * 1000) // 86400000 - HIST_DAYS) * 86400000


def hist_range(day0: int) -> Range:
    return Range(day0 + 86400000, day0 + (HIST_DAYS - 1) * 86400000)  # 14 whole days


@pytest.fixture(scope="module")
def rolled_up(influxd, hist_day0):
    """A generated history of 16 days of 4 panels, rolled up by `tigo-execd rollup`."""
    with influxd.database("dashhist") as db:
        write_history(db, hist_day0, HIST_DAYS, 4)
        done = subprocess.run(tigo_execd_argv("rollup", "--influx-url", influxd.url, "--db", db.db),
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert done.returncode == 0, done.stderr
        yield db


def test_resolution_follows_time_range(dash, rolled_up, solar_db, hist_day0):
    by_name = {v["name"]: v for v in dash["templating"]["list"]}
    for name in ("res", "sfx"):  # hidden, asked again at every time range change
        v = by_name[name]
        assert v["refresh"] == 2 and v["hide"] == 2 and not v["multi"] and v["current"]["value"] == ""
        assert "${__to} - ${__from}" in v["query"]
    to = hist_range(hist_day0).to_ms
    picked = {}
    for days in (1, 6.9, 7, 30, 59, 60, 365):
        variables = resolve_variables(dash, rolled_up, Range(to - int(days * 86400000), to))
        picked[days] = (variables["res"].render(), variables["sfx"].render())
    assert picked == {1: ("", ""), 6.9: ("", ""), 7: ("tigo_rollup", "_5m"), 30: ("tigo_rollup", "_5m"),
                      59: ("tigo_rollup", "_5m"), 60: ("tigo_rollup", "_1h"), 365: ("tigo_rollup", "_1h")}
    # a database never rolled up: raw reports at every range (the variables' "None" is "")
    variables = resolve_variables(dash, solar_db[0], Range(to - 365 * 86400000, to))
    assert (variables["res"].render(), variables["sfx"].render()) == ("", "")


def test_long_ranges_draw_lines(dash):
    """Line panels read at a rollup resolution (points 20 min to hours apart) show nights as the nulls
    of fill(null), not through Grafana's "disconnect values" threshold (insertNulls), which would cut
    every line whose points are further apart than it."""
    lines = [p for p in all_panels(dash) if p["type"] == "timeseries"
             and any("$sfx" in t["query"] for t in p["targets"])
             and p["fieldConfig"]["defaults"]["custom"]["drawStyle"] == "line"]
    assert len(lines) == 11
    for p in lines:
        assert p["fieldConfig"]["defaults"]["custom"]["insertNulls"] is False, p["title"]
        assert all(t["query"].endswith("fill(null)") for t in p["targets"]), p["title"]


def merged(targets: list[list[dict]]) -> dict[tuple, dict[int, float]]:
    """All targets of a panel as one: (tags, column) -> {time: value}, nulls left out."""
    out: dict[tuple, dict[int, float]] = {}
    for series in targets:
        for s in series:
            tags = tuple(sorted(s.get("tags", {}).items()))
            for col in range(1, len(s["columns"])):
                got = {v[0]: v[col] for v in s["values"] if v[col] is not None}
                if got:
                    out.setdefault((tags, col), {}).update(got)
    return out


EXACT = {"Energy per day", "Reports per node per minute", "Raw sum of power_w (debug)"}
MEANS = {"Total power", "Peak power", "Power per node", "Input voltage", "Output voltage", "Input current",
         "Temperature", "Duty cycle", "RSSI", "Output current"}


@pytest.mark.parametrize("sfx,max_points", [("_5m", 1000), ("_1h", 150)])
def test_every_panel_same_on_raw_and_rollups(dash, rolled_up, sfx, max_points, hist_day0):
    """Forced to raw reports and to a rollup, every panel shows the same: counts, energy and sums
    exactly; means (mean of the rollup's means) within 2 % where the bucket is in full daylight."""
    rng = hist_range(hist_day0)
    variables = resolve_variables(dash, rolled_up, rng)
    assert variables["sfx"].render() == "_5m"  # what a 14-day range picks
    for name in ("res", "sfx"):
        variables[name] = Var(variables[name].spec, selected=[""])
    raw = run_dashboard(dash, rolled_up, variables, rng, max_points)
    variables["res"] = Var(variables["res"].spec, selected=["tigo_rollup"])
    variables["sfx"] = Var(variables["sfx"].spec, selected=[sfx])
    roll = run_dashboard(dash, rolled_up, variables, rng, max_points)
    step = interval_ms(rng.from_ms, rng.to_ms, {"interval": "3m"}, max_points)
    assert step % {"_5m": 300000, "_1h": 3600000}[sfx] == 0, step
    worst = {}
    for title, targets in raw.items():
        want, got = merged(targets), merged(roll[title])
        assert got.keys() == want.keys(), title
        if title not in MEANS:  # exact: counts, energy, sums, and the panels of fixed windows
            for key in want:
                assert got[key].keys() == want[key].keys(), (title, key)
                for t in want[key]:
                    assert got[key][t] == pytest.approx(want[key][t], rel=1e-9, abs=1e-9), (title, key, t)
            continue
        if title == "Peak power":  # its own 3-minute buckets: a coarser rollup shows a coarser peak
            peak = max(got[((), 1)].values()) / max(want[((), 1)].values()) - 1
            worst[title] = abs(peak)
            continue
        for key in want:
            assert got[key].keys() == want[key].keys(), (title, key)
            daylight = [t for t in want[key] if 8 * 3600000 <= t % 86400000 < 16 * 3600000 - step]
            assert daylight, (title, key)
            dev = max(abs(got[key][t] / want[key][t] - 1) for t in daylight)
            worst[title] = max(worst.get(title, 0), dev)
    assert worst.keys() == MEANS and max(worst.values()) < 0.02, worst
    assert raw.keys() >= EXACT


def test_raw_reports_outside_the_default_rp(dash, influxd, hist_day0):
    """`rollup --rp RP` records RP in the resolution table, so short ranges read the raw reports there."""
    with influxd.database("dashrp") as db:
        influxd.raw_query(f'CREATE RETENTION POLICY "raw" ON "{db.db}" DURATION INF REPLICATION 1')
        db.write("\n".join(day_lines(hist_day0, HIST_DAYS - 1, 2)).encode(), rp="raw")
        argv = tigo_execd_argv("rollup", "--influx-url", influxd.url, "--db", db.db, "--rp", "raw")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(argv, capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
        day_range = Range(hist_day0 + (HIST_DAYS - 1) * 86400000, hist_day0 + HIST_DAYS * 86400000)
        variables = resolve_variables(dash, db, day_range)
        assert (variables["res"].render(), variables["sfx"].render()) == ("raw", "")
        total = run_dashboard(dash, db, variables, day_range)["Total power"][0]
        assert total and any(v[1] for v in total[0]["values"])
