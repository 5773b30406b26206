"""`tigo-execd faults` on physical sites (tests/support/physsite.py: pvlib's sun, typical-year weather,
plane-of-array light per roof face, module temperature and single-diode model; optimizers that
buck and report at their own phase), through a real InfluxDB.

Each site is written twice, clean and with conditions injected as their physics goes. Clean: no
finding at all, with or without the site's location and names file. Injected: each condition
found with its kind and severity, nothing on the clean panels. The peers are learned from the
data: a site with two faces on one gateway and no names file gives the findings it gives with its
strings named.
"""

from __future__ import annotations

import csv
import io
import subprocess

import orjson
import pytest

from support import physsite as ps
from support.physsite_sites import INJECTED, SITES, SSW, WEST
from support.proc import tigo_execd_argv
from tigo_execd.analysis.fault_rules import Analysis
from tigo_execd.analysis.faults import FaultSettings, analyse
from tigo_execd.identity.store import parse_names
from tigo_execd.influx import rows

LOCATED = ["--latitude", str(ps.LATITUDE), "--longitude", str(ps.LONGITUDE)]


def site(name: str, injected: bool) -> ps.Site:
    return SITES[name].with_conditions(**INJECTED[name]) if injected else SITES[name]


def findings_of(db, s: ps.Site, located: bool = True, names: str = "", groups=None):
    """`faults`' analysis of the site in `db` (the result of one without explicit groups is kept:
    several tests judge the same site the same way)."""
    key = (db.db, s, located, names)
    if groups is None and key in _results:
        return _results[key]
    settings = FaultSettings(db, latitude=ps.LATITUDE if located else None,
                             longitude=ps.LONGITUDE if located else None,
                             names=parse_names(names, "names")[0] if names else {}, groups=groups or {})
    result = analyse(settings, s.end_s)
    if groups is None:
        _results[key] = result
    return result


_results: dict[tuple[str, ps.Site, bool, str], Analysis] = {}


def kinds(found) -> dict[tuple[int, int | None], set[tuple[str, str]]]:
    out: dict[tuple[int, int | None], set[tuple[str, str]]] = {}
    for f in found:
        out.setdefault((f.gateway_id, f.node_id), set()).add((f.kind, f.severity))
    return out


def faults(db, s: ps.Site, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(tigo_execd_argv("faults", "--influx-url", db.url, "--db", db.db, "--now", s.now,
                                          *args), capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", SITES)
def test_a_clean_site_has_no_finding(influxd, name):
    s = site(name, False)
    db = ps.database(influxd, s)
    for located in (True, False):
        result = findings_of(db, s, located)
        assert result.findings == [], (located, [f.message for f in result.findings])
        assert result.notes == [], result.notes
        assert findings_of(db, s, located, s.names_csv()).findings == []


@pytest.mark.parametrize("name", INJECTED)
def test_each_condition_is_found_with_its_kind_and_nothing_else(influxd, name):
    s = site(name, True)
    db = ps.database(influxd, s)
    for located in (True, False):
        found = findings_of(db, s, located).findings
        assert kinds(found) == s.expected(), (located, [f.message for f in found])


@pytest.mark.parametrize("name, injected", [(n, False) for n in SITES] + [(n, True) for n in INJECTED])
def test_the_learned_groups_are_the_roof_faces(influxd, name, injected):
    """Faulty panels (a third less voltage, dirt, an afternoon shadow, no power) join their face;
    the faces come in order of their clear-day peak, morning first."""
    s = site(name, injected)
    groups = findings_of(ps.database(influxd, s), s).groups
    faces = {g.name: {(m.gateway_id, m.node_id) for m in g.members} for g in groups}
    want: dict[str, set[tuple[int, int]]] = {}
    for n in s.nodes:
        want.setdefault(n.face.name, set()).add((n.gateway, n.node))
    assert sorted(faces.values(), key=sorted) == sorted(want.values(), key=sorted)
    peaks = [g.peak_slot for g in groups if g.basis == "learned"]
    assert peaks == sorted(peaks)


@pytest.mark.parametrize("name", INJECTED)
def test_without_names_the_same_findings_as_with_strings_named(influxd, name):
    s = site(name, True)
    db = ps.database(influxd, s)

    def said(found) -> set[tuple[object, ...]]:
        return {(f.gateway_id, f.node_id, f.kind, f.severity, f.since, f.energy_lost_kwh_per_day)
                for f in found}

    learned, named = findings_of(db, s).findings, findings_of(db, s, names=s.names_csv()).findings
    assert said(learned) == said(named)
    assert {f.peer_group for f in named} <= {n.face.name for n in s.nodes}


def test_json_says_each_findings_peer_group_and_groups_print_a_names_file(influxd, tmp_path):
    s = site("two faces, one gateway", True)
    db = ps.database(influxd, s)
    proc = faults(db, s, "--format", "json", *LOCATED)
    assert proc.returncode == 1, proc.stderr
    found = orjson.loads(proc.stdout)
    for f in found:
        assert list(f) == ["gateway_id", "node_id", "barcode", "panel", "string", "kind", "severity", "since",
                           "energy_lost_kwh_per_day", "evidence", "message", "peer_group"]
        assert f["barcode"] == f"4-09{f['node_id']:04X}P" and f["panel"] is None and f["string"] is None
        assert f["since"].endswith("Z") and "2026-07-07" <= f["since"] < "2026-07-14"
        assert f["message"].count(". ") == 0 and f["message"].endswith(".")
    assert {(f["node_id"], f["peer_group"]) for f in found} == {
        (3, "4609/a"), (5, "4609/a"), (7, "4609/a"), (11, "4609/b"), (13, "4609/b"), (15, "4609/b")}

    table = faults(db, s, "--groups", *LOCATED)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].startswith("4609/a (learned): 8 panels, clear-day peak at 1")
    assert "solar time" in lines[0] and "of its energy before noon" in lines[0]
    assert lines[1].split() == [f"4609/{n}" for n in range(2, 10)]
    assert lines[2].startswith("4609/b (learned): 8 panels")
    as_json = orjson.loads(faults(db, s, "--groups", "--format", "json", *LOCATED).stdout)
    morning = {g["peer_group"]: g["morning_share"] for g in as_json}
    assert morning["4609/a"] > 0.55 > 0.45 > morning["4609/b"]  # ESE makes most before noon, WSW after

    # the groups as a names file: the same findings, now judged by string
    names = tmp_path / "names.csv"
    names.write_text(faults(db, s, "--groups", "--format", "csv").stdout)
    rows = list(csv.reader(io.StringIO(names.read_text())))
    assert rows[0] == ["gateway", "node", "panel", "string"] and len(rows) == 17
    again = orjson.loads(faults(db, s, "--format", "json", "--names", str(names), *LOCATED).stdout)
    assert [(f["node_id"], f["kind"], f["peer_group"]) for f in again] == [
        (f["node_id"], f["kind"], f["peer_group"]) for f in found]


def test_a_string_whose_panels_face_two_ways_is_said(influxd, tmp_path):
    s = site("two faces, one gateway", False)
    db = ps.database(influxd, s)
    names = tmp_path / "names.csv"
    names.write_text("".join(f"{n.gateway},{n.node},P{n.node},roof\n" for n in s.nodes))
    proc = faults(db, s, "--names", str(names), *LOCATED)
    notes = [line for line in proc.stdout.splitlines() if "face 2 ways" in line]
    assert len(notes) == 1, proc.stdout
    assert notes[0].startswith("# string roof: its panels face 2 ways by their clear-day curves (4609/2, ")
    assert "check the names file" in notes[0]


def test_explicit_groups_win_over_strings_and_learned_faces(influxd):
    """The roof layout's faces come as (gateway, node) -> group: they win, here over a names file
    that puts the whole roof in one string (which would make half of it look shaded)."""
    s = site("two faces, one gateway", True)
    db = ps.database(influxd, s)
    one_string = "".join(f"{n.gateway},{n.node},P{n.node},roof\n" for n in s.nodes)
    layout = {(n.gateway, n.node): f"layout {n.face.name}" for n in s.nodes}
    result = findings_of(db, s, names=one_string, groups=layout)
    assert kinds(result.findings) == s.expected()
    assert {g.name: g.basis for g in result.groups} == {"layout ese": "layout", "layout wsw": "layout"}
    assert not [n for n in result.notes if "ways" in n]
    wrong = findings_of(db, s, names=one_string)  # without it: the string, as the names file says
    assert kinds(wrong.findings) != s.expected()


def test_a_face_too_small_to_judge_is_said_once_with_its_panels(influxd):
    """A garage roof of three panels facing west beside a south face, on one gateway."""
    s = ps.Site("small", ps.roof(4609, {SSW: 6, WEST: 3}), "summer", 5)
    result = findings_of(ps.database(influxd, s), s)
    assert result.findings == []
    assert result.notes == ["learned face 4609/b has 3 panels (4609/8, 4609/9, 4609/10): too few peers "
                            "to judge (each panel needs 3 others)"]


def test_the_optimizers_buck_a_weak_panel_and_monitors_report_no_output(influxd):
    """What the sites write is what the optimizers do: a TS4-A-O under a soiled panel steps its
    voltage down to keep the string's current (duty cycle below 1), the others pass through; a
    TS4-A-S reports voltage_out 0; every node reports every 20-30 s."""
    def by_node(s: ps.Site) -> dict[int, dict[str, float]]:
        db = ps.database(influxd, s)
        answer = db.query('SELECT mean("duty_cycle") AS duty, max("voltage_out_v") AS vout, '
                          'count("power_w") AS n FROM "tigo_power_report" WHERE "power_w" > 100 '
                          'GROUP BY "node_id"')
        return {int(tags["node_id"]): row for tags, row in rows(answer)}

    two = by_node(site("two faces, one gateway", True))
    assert two[5]["duty"] < 0.85  # 25 % soiling
    assert all(0.95 < v["duty"] <= 1 for n, v in two.items() if n not in (3, 5, 7, 13))
    mix = by_node(site("one face, TS4-A-O/-S mix", False))
    assert {n for n, v in mix.items() if v["vout"] == 0} == {2, 4, 6, 8}
    s = site("one face, TS4-A-O/-S mix", False)
    noon = (s.start_s + 17 * 3600) * 10**9  # an hour around local noon
    hour = ps.database(influxd, s).query(f'SELECT count("power_w") AS n FROM "tigo_power_report" '
                                         f'WHERE time >= {noon} AND time < {noon + 3600 * 10**9} '
                                         f'GROUP BY "node_id"')
    periods = sorted(3600 / row["n"] for _, row in rows(hour))
    assert len(periods) == 8 and 20 <= periods[0] < periods[-1] <= 30.5, periods
