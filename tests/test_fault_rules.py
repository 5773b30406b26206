"""The panel-fault rules (tigo_execd/analysis/fault_rules.py) on slot aggregates built here, no InfluxDB:
each threshold just below and just above its edge, peers, whole-group drops, the daily records.

A day here: sun from 05:00 to 19:00 UTC (sine), 8 panels of one gateway within +-1 % of each
other, 30 reports per 10-minute slot; a test changes one panel (or all) by a factor.
"""

from __future__ import annotations

import math
import random
import statistics
from array import array
from collections.abc import Callable

import pytest

from tigo_execd.analysis.fault_rules import analyse_panels, median_without, panel_days
from tigo_execd.analysis.panel_stats import AGGREGATES, SLOT_S, Panel, Window

START = 1781481600  # 2026-06-15T00:00:00Z
DAYS = 5
SLOTS_PER_DAY = 86400 // SLOT_S
# (panel index, day, slot of day) -> {field: factor or value}
Change = Callable[[int, int, int], dict[str, float]]


def window(days: int = DAYS) -> Window:
    return Window(START, START + days * 86400, START)


def site(change: Change | None = None, count: int = 8, days: int = DAYS) -> list[Panel]:
    """`count` panels; `change(panel, day, slot)` returns factors for p/vin/cur ('p' scales the
    current), additions for t ('t'), or {'n': reports} for one slot."""
    w = window(days)
    panels = []
    for k in range(count):
        values = {name: array("f", [math.nan]) * w.slots for name in AGGREGATES}
        values["n"] = array("f", [0.0]) * w.slots
        strength = 1 + 0.01 * (k % 3 - 1)
        for i in range(w.slots):
            hour = (i % SLOTS_PER_DAY + 0.5) * SLOT_S / 3600
            sun = math.sin(math.pi * (hour - 5) / 14) if 5 < hour < 19 else 0.0
            if sun <= 0:
                continue
            c = change(k, i // SLOTS_PER_DAY, i % SLOTS_PER_DAY) if change else {}
            if c.get("n", 1) == 0:
                continue
            vin = 34 * c.get("vin", 1.0)
            cur = 9 * sun * strength * c.get("cur", 1.0) * c.get("p", 1.0)
            t = 20 + 25 * sun + c.get("t", 0.0)
            for name, value in (("n", c.get("n", 30)), ("vin", vin), ("cur", cur), ("p", vin * cur),
                                ("t", t), ("tmax", c.get("tmax", t + 1)), ("rssi", 130 + c.get("rssi", 0))):
                values[name][i] = value
        panels.append(Panel(4609, k + 2, f"4-A{k:05d}X", values=values))
    return panels


def found(change: Change | None = None, count: int = 8) -> set[tuple[int | None, str]]:
    return {(f.node_id, f.kind) for f in analyse_panels(window(), site(change, count)).findings}


def on(panel: int, **factors: float) -> Change:
    return lambda k, day, slot: factors if k == panel else {}


def test_a_clean_site_has_no_finding():
    assert found() == set()


@pytest.mark.parametrize("ratio, hit", [(0.79, True), (0.81, False)])
def test_underperforming_edge(ratio, hit):
    assert ((3, "underperforming") in found(on(1, p=ratio))) == hit


@pytest.mark.parametrize("days, hit", [(2, False), (3, True)])
def test_underperforming_needs_3_of_the_last_5_sunny_days(days, hit):
    assert ((3, "underperforming") in found(lambda k, d, s: {"p": 0.7} if k == 1 and d < days else {})) == hit


@pytest.mark.parametrize("vin, hit", [(0.77, True), (0.79, False)])
def test_bypass_diode_voltage_edge(vin, hit):
    kinds = found(on(1, vin=vin))  # current unchanged: power falls with the voltage
    assert ((3, "bypass_diode") in kinds) == hit
    if hit:
        assert (3, "underperforming") not in kinds  # one cause, said once


@pytest.mark.parametrize("cur, hit", [(1.11, True), (1.13, False)])
def test_bypass_diode_needs_the_current_of_its_peers(cur, hit):
    assert ((3, "bypass_diode") in found(on(1, vin=0.66, cur=cur))) == hit


def test_bypass_diode_needs_two_days():
    one_day = found(lambda k, d, s: {"vin": 0.66} if k == 1 and d == 4 else {})
    two_days = found(lambda k, d, s: {"vin": 0.66} if k == 1 and d >= 3 else {})
    assert (3, "bypass_diode") not in one_day and (3, "bypass_diode") in two_days


@pytest.mark.parametrize("delta, hit", [(11.5, False), (12.5, True)])
def test_hot_edge(delta, hit):
    assert found(on(1, t=delta)) == ({(3, "hot")} if hit else set())


@pytest.mark.parametrize("tmax, hit", [(69.5, False), (70.5, True)])
def test_hot_above_the_rating_once(tmax, hit):
    change: Change = lambda k, d, s: {"tmax": tmax} if k == 1 and d == 2 and s == 72 else {}  # noqa: E731
    assert found(change) == ({(3, "hot")} if hit else set())


@pytest.mark.parametrize("slots, hit", [(5, False), (6, True)])  # 50 and 60 minutes
def test_no_power_edge(slots, hit):
    change: Change = lambda k, d, s: {"p": 0.0} if k == 1 and d == 2 and 66 <= s < 66 + slots else {}  # noqa: E731
    assert found(change) == ({(3, "no_power")} if hit else set())


def test_no_power_until_dusk_is_found():
    change: Change = lambda k, d, s: {"p": 0.0} if k == 1 and d == 2 and s >= 96 else {}  # 16:00 on  # noqa: E731
    assert found(change) == {(3, "no_power")}


@pytest.mark.parametrize("share, hit", [(0.68, True), (0.72, False)])
def test_comms_edge(share, hit):
    assert found(on(1, n=30 * share)) == ({(3, "comms")} if hit else set())


@pytest.mark.parametrize("drop, hit", [(29, False), (31, True)])
def test_comms_rssi_below_its_own_baseline_edge(drop, hit):
    change: Change = lambda k, d, s: {"rssi": -drop} if k == 1 and d >= 2 else {}  # noqa: E731
    result = analyse_panels(window(), site(change))
    assert [(f.node_id, f.kind) for f in result.findings] == ([(3, "comms")] if hit else [])
    if hit:
        assert "rssi fell 31 below its own level" in result.findings[0].message
        assert result.findings[0].since.startswith("2026-06-17")


def test_rssi_of_the_whole_gateway_falling_is_no_panel_fault():
    assert found(lambda k, d, s: {"rssi": -60} if d >= 2 else {}) == set()


@pytest.mark.parametrize("slots, hit", [(1, False), (2, True), (6, True)])
def test_shaded_is_info_and_needs_a_window(slots, hit):
    change: Change = lambda k, d, s: {"p": 0.3} if k == 1 and 40 <= s < 40 + slots else {}  # noqa: E731
    result = analyse_panels(window(), site(change))
    assert [(f.kind, f.severity) for f in result.findings] == ([("shaded", "info")] if hit else [])
    if hit:
        assert "06:40-" in result.findings[0].message and "UTC" in result.findings[0].message


def test_a_deficit_over_most_of_the_day_is_not_shade():
    change: Change = lambda k, d, s: {"p": 0.5} if k == 1 and s >= 60 else {}  # 10:00 to sunset  # noqa: E731
    assert (3, "shaded") not in found(change)


def test_whole_group_drops_are_never_a_panel_fault():
    # clouds on day 1 (every other slot at 30 %), snow on day 3 (3 % with one panel at 0)
    def weather(k: int, d: int, s: int) -> dict[str, float]:
        if d == 1:
            return {"p": 0.3} if s % 2 else {}
        if d == 3:
            return {"p": 0.0 if k == 4 else 0.03}
        return {}
    assert found(weather) == set()


@pytest.mark.parametrize("count, judged", [(3, False), (4, True)])
def test_at_least_three_peers(count, judged):
    result = analyse_panels(window(), site(on(1, p=0.5), count=count))
    assert bool(result.findings) == judged
    assert (result.notes == []) == judged
    if not judged:
        assert result.notes == ["gateway 4609 has 3 panels (4609/2, 4609/3, 4609/4): too few peers to "
                                "judge (each panel needs 3 others)"]


def test_peers_are_the_string_when_names_give_one():
    def weaker_string(k: int, d: int, s: int) -> dict[str, float]:
        return {"p": 0.6} if k >= 4 else {}  # panels 6..9: another orientation, smaller modules

    by_gateway = analyse_panels(window(), site(weaker_string)).findings
    assert {(f.node_id, f.kind) for f in by_gateway} == {(n, "underperforming") for n in (6, 7, 8, 9)}
    panels = site(weaker_string)
    for k, p in enumerate(panels):
        p.string = "a" if k < 4 else "b"
    assert analyse_panels(window(), panels).findings == []


def facing(swing: float) -> Change:
    """Panels 6..9 on a face whose power ratio to the others' swings by exp(+-swing) from morning
    to evening."""
    return lambda k, d, s: {"p": math.exp(swing * ((s + 0.5) / 6 - 12) / 7)} if k >= 4 else {}


@pytest.mark.parametrize("swing, faces", [(0.04, 1), (0.5, 2)])
def test_peer_groups_split_a_gateway_only_where_the_faces_would_look_shaded(swing, faces):
    """The tolerance comes from shade_ratio (peers.tolerance): a swing of +-0.04 stays one group and
    makes no finding, +-0.5 (two faces 130 degrees apart) is two groups, judged apart."""
    result = analyse_panels(window(), site(facing(swing)))
    assert (len(result.groups), result.findings) == (faces, [])
    if faces == 2:
        assert [g.name for g in result.groups] == ["4609/a", "4609/b"]
        assert [len(g.members) for g in result.groups] == [4, 4]


def test_explicit_groups_win_over_strings_and_what_is_learned():
    panels = site(facing(0.5))
    for p in panels:
        p.string = "roof"
    strung = analyse_panels(window(), panels)
    assert strung.findings and [g.name for g in strung.groups] == ["roof"]
    assert any("its panels face 2 ways" in n for n in strung.notes)
    faces = {p.key: "east" if k < 4 else "west" for k, p in enumerate(panels)}
    explicit = analyse_panels(window(), panels, explicit=faces)
    assert (explicit.findings, explicit.notes) == ([], [])
    assert {g.name: g.basis for g in explicit.groups} == {"east": "layout", "west": "layout"}
    panels[0].string = "east"  # a string named like a layout face stays a group of its own
    faces.pop(panels[0].key)
    names = [g.name for g in analyse_panels(window(), panels, explicit=faces).groups]
    assert names == ["east", "west", "east (string)"]


def test_panel_days_carry_the_daily_figures_and_kinds():
    result = analyse_panels(window(), site(on(1, p=0.7)))
    days = [d for d in panel_days(result) if d.tags["node_id"] == "3"]
    assert len(days) == DAYS
    assert {d.fields["kinds"] for d in days} == {"underperforming"}
    assert all(abs(d.fields["energy_ratio"] - 0.7) < 0.02 for d in days)
    assert days[0].time_s == START and days[0].tags == {"gateway_id": "4609", "node_id": "3",
                                                        "barcode": "4-A00001X"}
    other = [d for d in panel_days(result) if d.tags["node_id"] == "2"]
    assert {d.fields["kinds"] for d in other} == {""}
    assert set(other[0].fields) == {"energy_kwh", "energy_ratio", "vin_ratio", "temp_delta_c",
                                    "report_ratio", "kinds", "peer_group"}
    assert other[0].fields["peer_group"] == "4609"  # one face: the gateway is the group


def test_median_without_is_the_median_of_the_others():
    rnd = random.Random(1)
    for size in range(2, 12):
        values = sorted(rnd.choice((1.0, 2.0, 3.5, rnd.random())) for _ in range(size))
        for i, v in enumerate(values):
            assert median_without(values, v) == statistics.median(values[:i] + values[i + 1:])
