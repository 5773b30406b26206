"""Panel faults from slot aggregates: which panel loses energy, and why. Pure functions, no I/O.

Every optimizer of a gateway is measured in the same cycle, so in each 10-minute slot a panel is
compared with the median of its peers (its peer group, peers.py: the panels of its roof face,
learned from the data, or of its string): sun, clouds and heat hit peers alike and cancel out of
the ratios. A slot is judged only in daylight with enough light (sun elevation when the site is
known, and the peers' power above a share of their peak in the window), a day only when it had
enough sun, so clouds, snow and an inverter that is off, which lower every peer together, are
never a panel fault. Each kind is a signature of the ratios over days (docs/reference/faults.md
says which and why).
"""

from __future__ import annotations

import math
import statistics
from array import array
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime

from tigo_execd.analysis.panel_stats import REPORT_PERIOD_S, SLOT_S, Panel, Window
from tigo_execd.analysis.peers import GATEWAY, LEARNED, STRING, PeerGroup, peer_groups

KINDS = ("bypass_diode", "underperforming", "shaded", "hot", "no_power", "comms")
WARN, INFO = "warn", "info"
SLOT_H = SLOT_S / 3600


@dataclass(frozen=True)
class Thresholds:
    """Every threshold of the rules (`--threshold NAME=VALUE`); docs/reference/faults.md explains
    each. Shares and ratios are fractions (0.8 = 80 %)."""

    min_peers: int = 3                  # other panels needed to judge a panel
    day_elevation: float = 10.0         # sun elevation (deg) above which a slot is daylight
    light_share: float = 0.2            # slot judged when peer power >= this x the peers' peak
    min_day_slots: int = 6              # judged slots a day needs (1 h)
    sunny_day_share: float = 0.5        # a day with enough sun: peer energy >= this x the best day
    diode_vin_low: float = 0.25         # bypass_diode: voltage_in / peers within [low, high] ...
    diode_vin_high: float = 0.78
    diode_current_tolerance: float = 0.12  # ... while current / peers is within 1 +- this
    diode_slot_share: float = 0.8       # ... in this share of a day's judged slots
    diode_days: int = 2                 # ... on this many sunny days
    under_ratio: float = 0.8            # underperforming: energy / peers below this ...
    under_spread: float = 0.7           # ... with this share of the day's slots below it too
    under_days: int = 3                 # ... on this many of the last `under_lookback` sunny days
    under_lookback: int = 5
    shade_ratio: float = 0.8            # shaded: a slot of day below this ratio ...
    shade_day_share: float = 0.6        # ... on this share of the sunny days ...
    shade_min_days: int = 3             # ... (at least this many days judged) ...
    shade_min_slots: int = 2            # ... for at least this many slots (20 min) ...
    shade_max_share: float = 0.5        # ... and at most this share of the day's slots
    hot_delta_c: float = 12.0           # hot: median temperature over peers' while producing ...
    hot_days: int = 3                   # ... on this many days,
    hot_max_c: float = 70.0             # or above this (the TS4-A-O's rating) in any slot mean
    no_power_w: float = 1.0             # no_power: below this while peers produce ...
    no_power_min: float = 60.0          # ... for this many minutes in a row, reports still coming
    comms_ratio: float = 0.7            # comms: daylight reports / peers' below this over a day,
    rssi_drop: float = 30.0             # or its daylight rssi (raw 0-255) this far below its own
    rssi_days: int = 2                  # baseline (beyond its peers' change) on this many days;
    rssi_baseline_days: int = 2         # baseline: its first days in the window

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


@dataclass
class PanelFault:
    """One finding; `node_id` is None for a gateway's own problem (comms of a whole gateway)."""

    gateway_id: int
    node_id: int | None
    barcode: str | None
    panel: str | None
    string: str | None
    kind: str
    severity: str
    since: str
    energy_lost_kwh_per_day: float
    evidence: str      # a few words with the figures, for the table
    message: str       # one sentence: the evidence in numbers and what to check on the roof
    peer_group: str | None = None  # the group it was judged against (None: a gateway's own)

    @property
    def label(self) -> str:
        if self.node_id is None:
            return f"gateway {self.gateway_id}"
        return self.panel or self.barcode or f"{self.gateway_id}/{self.node_id}"


@dataclass
class Day:
    """One panel's day, accumulated slot by slot (energies in Wh, over the judged slots)."""

    start: int | None = None  # its first slot with anything counted: when a condition was seen
    judged: int = 0          # slots with light and enough peers
    own_wh: float = 0.0
    peer_wh: float = 0.0
    energy_wh: float = 0.0   # every slot it reported in
    below: int = 0           # judged slots with power ratio < under_ratio
    diode: int = 0           # judged slots with the bypass diode signature
    first_diode: int | None = None
    vin_ratios: array[float] = field(default_factory=lambda: array("f"))  # 4 bytes each: 30 days
    temp_deltas: array[float] = field(default_factory=lambda: array("f"))  # of 100 panels stay small
    deficit_wh: dict[int, float] = field(default_factory=dict)  # slot of day -> Wh under peers
    light_slots: set[int] = field(default_factory=set)          # slots of day judged
    reports: float = 0.0     # in daylight slots within its presence
    peer_reports: float = 0.0
    hottest: float = -math.inf
    rssi_sum: float = 0.0    # slot means of rssi in daylight
    rssi_slots: int = 0

    @property
    def ratio(self) -> float | None:
        return self.own_wh / self.peer_wh if self.peer_wh > 0 else None


@dataclass
class PanelDay:
    """What the daily `tigo_panel_day` metric carries for one panel (see panel_days)."""

    time_s: int
    tags: dict[str, str]
    fields: dict[str, float | str]


@dataclass
class Analysis:
    window: Window
    findings: list[PanelFault]
    notes: list[str]                                # what could not be judged, and why
    days: dict[tuple[int, int], dict[int, Day]]     # per panel, per day
    panels: list[Panel]
    kind_days: dict[tuple[int, int], dict[int, set[str]]]  # per panel, per day: kinds seen
    groups: list[PeerGroup] = field(default_factory=list)  # who was judged against whom


@dataclass(frozen=True)
class SiteClock:
    """How times of day are shown: local solar time with a longitude, else UTC."""

    offset_s: int = 0
    name: str = "UTC"

    @classmethod
    def for_longitude(cls, longitude: float | None) -> SiteClock:
        if longitude is None:
            return cls()
        return cls(round(longitude * 240), "solar time")

    def hhmm(self, slot_of_day: int, origin_offset_s: int) -> str:
        s = (slot_of_day * SLOT_S + origin_offset_s + self.offset_s) % 86400
        return f"{s // 3600:02d}:{s % 3600 // 60:02d}"


def rfc3339(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def median_without(ordered: Sequence[float], value: float) -> float:
    """Median of `ordered` (sorted, containing `value`) with one `value` taken out: the peers'."""
    i = bisect_left(ordered, value)
    k = len(ordered) - 1

    def at(j: int) -> float:
        return ordered[j] if j < i else ordered[j + 1]

    return at(k // 2) if k % 2 else (at(k // 2 - 1) + at(k // 2)) / 2


def _num(value: float) -> bool:
    return not math.isnan(value)


class _Judge:
    def __init__(self, window: Window, panels: list[Panel], sun: Sequence[float] | None,
                 th: Thresholds, clock: SiteClock) -> None:
        self.w, self.panels, self.sun, self.th, self.clock = window, panels, sun, th, clock
        self.days: dict[tuple[int, int], dict[int, Day]] = {p.key: defaultdict(Day) for p in panels}
        self.off_runs: dict[tuple[int, int], list[tuple[int, int, float]]] = defaultdict(list)
        self.judged: set[tuple[int, int]] = set()
        self.sunny: dict[str, set[int]] = {}
        self.light: dict[str, list[bool]] = {}
        self.members: dict[str, list[Panel]] = {}
        self.group_of: dict[tuple[int, int], str] = {}
        self.findings: list[PanelFault] = []
        self.notes: list[str] = []
        self.kind_days: dict[tuple[int, int], dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
        self.gateway_down: dict[int, set[int]] = defaultdict(set)  # gateway -> days of its comms

    def daylight(self, i: int) -> bool:
        return self.sun is None or self.sun[i] >= self.th.day_elevation

    # ---------------------------------------------------------------- slot by slot
    def group(self, name: str, members: list[Panel]) -> None:
        th, w = self.th, self.w
        n_slots = w.slots
        medians = [math.nan] * n_slots
        for i in range(n_slots):
            ps = [m.values["p"][i] for m in members if m.values["n"][i] > 0 and _num(m.values["p"][i])]
            if len(ps) > th.min_peers:
                medians[i] = statistics.median(ps)
        peak = max((x for x in medians if _num(x)), default=0.0)
        light = [_num(x) and peak > 0 and x >= th.light_share * peak and self.daylight(i)
                 for i, x in enumerate(medians)]
        self.light[name] = light
        self.members[name] = members
        self.group_of.update((m.key, name) for m in members)
        day_wh: dict[int, float] = defaultdict(float)
        for i, x in enumerate(medians):
            if _num(x):
                day_wh[w.day_of(i)] += x * SLOT_H
        best = max(day_wh.values(), default=0.0)
        self.sunny[name] = {d for d, wh in day_wh.items() if best > 0 and wh >= th.sunny_day_share * best}
        first = {m.key: next((i for i, n in enumerate(m.values["n"]) if n > 0), n_slots) for m in members}
        last = {m.key: max((i for i, n in enumerate(m.values["n"]) if n > 0), default=-1) for m in members}
        runs: dict[tuple[int, int], list[float]] = {}  # panel -> [start slot, length, peer Wh]
        for i in range(n_slots):
            present = [m for m in members if m.values["n"][i] > 0]
            alive = [m for m in members if first[m.key] <= i <= last[m.key]]
            day, sod = w.day_of(i), w.slot_of_day(i)
            if self.daylight(i) and len(alive) > th.min_peers:
                counts = sorted(m.values["n"][i] for m in alive)
                for m in alive:
                    peer_n = median_without(counts, m.values["n"][i])
                    if peer_n > 0:
                        d = self.days[m.key][day]
                        d.start = i if d.start is None else d.start
                        d.reports += m.values["n"][i]
                        d.peer_reports += peer_n
            for m in present:
                v = m.values
                if _num(v["p"][i]):
                    self.days[m.key][day].energy_wh += v["p"][i] * SLOT_H
                d = self.days[m.key][day]
                if _num(v["tmax"][i]):
                    d.hottest = max(d.hottest, v["tmax"][i])
                if _num(v["rssi"][i]) and self.daylight(i):
                    d.rssi_sum += v["rssi"][i]
                    d.rssi_slots += 1
            if not light[i] or len(present) <= th.min_peers:
                for key in list(runs):
                    self._end_run(key, runs.pop(key))
                continue
            cols = {f: sorted(m.values[f][i] for m in present if _num(m.values[f][i]))
                    for f in ("p", "vin", "cur", "t")}
            for m in present:
                self.judged.add(m.key)
                self.slot(m, i, day, sod, cols, runs)
            for key in [k for k in runs if k not in {m.key for m in present}]:
                self._end_run(key, runs.pop(key))
        for key, run in runs.items():
            self._end_run(key, run)

    def slot(self, m: Panel, i: int, day: int, sod: int, cols: dict[str, list[float]],
             runs: dict[tuple[int, int], list[float]]) -> None:
        th, v = self.th, m.values
        p = v["p"][i]
        if not _num(p):
            return
        peer = {f: median_without(cols[f], v[f][i]) if _num(v[f][i]) and len(cols[f]) > th.min_peers
                else math.nan for f in cols}
        peer_p = peer["p"]
        if not peer_p > 0:  # NaN too: fewer peers with a power value than needed
            return
        d = self.days[m.key][day]
        d.start = i if d.start is None else d.start
        d.judged += 1
        d.light_slots.add(sod)
        d.own_wh += p * SLOT_H
        d.peer_wh += peer_p * SLOT_H
        ratio = p / peer_p
        if ratio < th.under_ratio:
            d.below += 1
        if ratio < th.shade_ratio:
            d.deficit_wh[sod] = (peer_p - p) * SLOT_H
        if _num(peer["vin"]) and peer["vin"] > 0:
            vr = v["vin"][i] / peer["vin"]
            d.vin_ratios.append(vr)
            cr = v["cur"][i] / peer["cur"] if _num(peer["cur"]) and peer["cur"] > 0 else math.nan
            if th.diode_vin_low <= vr <= th.diode_vin_high and abs(cr - 1) <= th.diode_current_tolerance:
                d.diode += 1
                if d.first_diode is None:
                    d.first_diode = i
        if _num(peer["t"]):
            d.temp_deltas.append(v["t"][i] - peer["t"])
        if p < th.no_power_w:
            run = runs.setdefault(m.key, [i, 0, 0.0])
            run[1] += 1
            run[2] += (peer_p - p) * SLOT_H
        elif m.key in runs:
            self._end_run(m.key, runs.pop(m.key))

    def _end_run(self, key: tuple[int, int], run: list[float]) -> None:
        if run[1] * SLOT_S >= self.th.no_power_min * 60:
            self.off_runs[key].append((int(run[0]), int(run[1]), run[2]))

    # ---------------------------------------------------------------- gateways
    def gateways(self) -> None:
        """A whole gateway's reports, against the other gateways' in the slots where those see
        light: said once as the gateway's problem, and its panels' own comms are not said."""
        by_gw: dict[int, list[Panel]] = defaultdict(list)
        for p in self.panels:
            by_gw[p.gateway_id].append(p)
        if len(by_gw) < 2:
            return
        due = SLOT_S / REPORT_PERIOD_S
        size = {gw: max(sum(1 for m in ms if m.values["n"][i] > 0) for i in range(self.w.slots))
                for gw, ms in by_gw.items()}
        lit = {gw: [any(self.light.get(self.group_of.get(m.key, ""), [False] * self.w.slots)[i] for m in ms)
                    for i in range(self.w.slots)] for gw, ms in by_gw.items()}
        for _, first, end in self.w.days():
            share: dict[int, list[float]] = {}  # gateway -> share of the reports due per judged slot
            judged: dict[int, list[int]] = {}
            for gw, ms in by_gw.items():
                judged[gw] = [i for i in range(first, end) if self.daylight(i)
                              and any(lit[o][i] for o in by_gw if o != gw)]
                if len(judged[gw]) >= self.th.min_day_slots and size[gw]:
                    share[gw] = [sum(m.values["n"][i] for m in ms) / (size[gw] * due) for i in judged[gw]]
            day_share = {gw: sum(v) / len(v) for gw, v in share.items()}
            for gw, s in day_share.items():
                others = [v for o, v in day_share.items() if o != gw]
                base = statistics.median(others) if others else 0.0
                if base > 0 and s / base < self.th.comms_ratio:
                    self.gateway_down[gw].add(self.w.day_of(first))
                    start = next(i for i, x in zip(judged[gw], share[gw]) if x < self.th.comms_ratio * base)
                    self._gateway_fault(gw, start, s, base, len(judged[gw]))

    def _gateway_fault(self, gw: int, start: int, share: float, base: float, slots: int) -> None:
        if any(f.node_id is None and f.gateway_id == gw for f in self.findings):
            return  # said once
        since = rfc3339(self.w.slot_time(start))
        self.findings.append(PanelFault(
            gw, None, None, None, None, "comms", WARN, since,
            0.0, f"reports {share:.0%} vs {base:.0%}",
            f"Gateway {gw} delivered {share:.0%} of the reports due from its optimizers in "
            f"{slots * SLOT_S // 60} min of daylight on {since[:10]} while the other gateways "
            f"delivered {base:.0%}: the whole gateway drops, not its panels; check that TAP, its "
            f"cable to the CCA and its placement (or a taptap/firmware mismatch)."))

    # ---------------------------------------------------------------- days -> findings
    def judge(self, m: Panel) -> None:
        th, key = self.th, m.key
        days = self.days[key]
        sunny = sorted(d for d in self.sunny.get(self.group_of[key], set())
                       if days.get(d) and days[d].judged >= th.min_day_slots)
        found: set[str] = set()
        diode = [d for d in sunny if days[d].diode >= th.diode_slot_share * days[d].judged]
        if len(diode) >= th.diode_days:
            found.add("bypass_diode")
            vr = statistics.median(r for d in diode for r in days[d].vin_ratios)
            share = sum(days[d].diode for d in diode) / sum(days[d].judged for d in diode)
            lost = _lost(days, diode)
            self.add(m, "bypass_diode", WARN, self.w.slot_time(days[diode[0]].first_diode or 0), lost,
                     diode, f"vin {vr:.0%}, {len(diode)} days",
                     f"voltage_in is {vr:.0%} of its peers' at the same current in {share:.0%} of the "
                     f"daylight on {len(diode)} of {len(sunny)} sunny days, at any sun position "
                     f"({lost:.2f} kWh/day lost): a shorted bypass diode; check the junction box "
                     f"(the diodes) or replace the module.")
        runs = self.off_runs.get(key, [])
        if runs:
            found.add("no_power")
            minutes = max(r[1] for r in runs) * SLOT_S // 60
            run_days = sorted({self.w.day_of(i) for s, n, _ in runs for i in range(s, s + n)})
            lost = sum(r[2] for r in runs) / 1000 / len(run_days)
            times = "once" if len(runs) == 1 else f"{len(runs)} times"
            self.add(m, "no_power", WARN, self.w.slot_time(runs[0][0]), lost, run_days,
                     f"0 W for {minutes} min",
                     f"it reported under {th.no_power_w:g} W for up to {minutes} min in a row "
                     f"({times}) while its peers produced: a dead module, an open "
                     f"connector or a failed optimizer; check the cables and connectors at the panel.")
        recent = sunny[-th.under_lookback:]
        low = [d for d in recent if (days[d].ratio or 0) < th.under_ratio
               and days[d].below >= th.under_spread * days[d].judged]
        if len(low) >= th.under_days and not found:
            found.add("underperforming")
            ratio = statistics.median(days[d].ratio or 0 for d in low)
            lost = _lost(days, low)
            self.add(m, "underperforming", WARN, self.since(m, low[0]), lost, low,
                     f"energy {ratio:.0%}, {len(low)}/{len(recent)} days",
                     f"it made {ratio:.0%} of its peers' energy on {len(low)} of the last "
                     f"{len(recent)} sunny days, short all day long ({lost:.2f} kWh/day lost): look "
                     f"for dirt, leaves or droppings, cracked cells or a module of another type.")
        if not found:
            self.shade(m, sunny)
        self.hot(m)
        self.comms(m)

    def shade(self, m: Panel, sunny: list[int]) -> None:
        th, days = self.th, self.days[m.key]
        if len(sunny) < th.shade_min_days:
            return
        lit: dict[int, int] = defaultdict(int)
        short: dict[int, int] = defaultdict(int)
        for d in sunny:
            for s in days[d].light_slots:
                lit[s] += 1
                short[s] += s in days[d].deficit_wh
        usual = [s for s, n in lit.items() if n >= th.shade_min_days]
        shaded = sorted(s for s in usual if short[s] >= th.shade_day_share * lit[s])
        if len(shaded) < th.shade_min_slots or len(shaded) > th.shade_max_share * len(usual):
            return
        seen = [d for d in sunny if any(s in days[d].deficit_wh for s in shaded)]
        lost = sum(days[d].deficit_wh.get(s, 0.0) for d in seen for s in shaded) / 1000 / len(sunny)
        origin = self.w.day_origin_s % 86400
        spans = ", ".join(f"{self.clock.hhmm(a, origin)}-{self.clock.hhmm(b + 1, origin)}"
                          for a, b in _spans(shaded))
        first = min(seen)
        start = min(s for s in shaded if s in days[first].deficit_wh)
        self.add(m, "shaded", INFO, self.w.day_start(first) + start * SLOT_S, lost, seen,
                 f"{spans} {self.clock.name}",
                 f"it falls below {th.shade_ratio:.0%} of its peers' power only at {spans} "
                 f"{self.clock.name} on {len(seen)} of {len(sunny)} sunny days and keeps up the rest "
                 f"of the day ({lost:.2f} kWh/day): shade of a fixed object (chimney, tree, "
                 f"antenna, a neighbouring row); nothing is broken.")

    def hot(self, m: Panel) -> None:
        th, days = self.th, self.days[m.key]
        hot_days = [d for d, x in sorted(days.items()) if x.judged >= th.min_day_slots and
                    x.temp_deltas and statistics.median(x.temp_deltas) >= th.hot_delta_c]
        over = [i for i in range(self.w.slots) if m.values["tmax"][i] > th.hot_max_c]
        if len(hot_days) < th.hot_days and not over:
            return
        hottest = max(x.hottest for x in days.values())
        if len(hot_days) >= th.hot_days:
            delta = statistics.median(t for d in hot_days for t in days[d].temp_deltas)
            since = self.since(m, hot_days[0])
            evidence = f"+{delta:.0f} degC, {len(hot_days)} days"
            text = (f"its optimizer runs {delta:.0f} degC hotter than its peers' while producing on "
                    f"{len(hot_days)} days (up to {hottest:.0f} degC)")
        else:
            since = self.w.slot_time(over[0])
            evidence = f"{hottest:.0f} degC max"
            text = f"its optimizer reached {hottest:.0f} degC, beyond its rated {th.hot_max_c:g} degC"
        hot_days = sorted(set(hot_days) | {self.w.day_of(i) for i in over})
        self.add(m, "hot", WARN, since, _lost(days, hot_days), hot_days, evidence,
                 f"{text}: check for a loose or burnt connector, a failing optimizer, or an "
                 f"optimizer mounted in the sun or without air around it.")

    def comms(self, m: Panel) -> None:
        th, days = self.th, self.days[m.key]
        down = self.gateway_down.get(m.gateway_id, set())
        weak = [d for d, x in sorted(days.items()) if d not in down and x.peer_reports > 0
                and x.peer_reports >= th.min_day_slots * SLOT_S / REPORT_PERIOD_S
                and x.reports < th.comms_ratio * x.peer_reports]
        faded, drop = self.rssi_drops(m)
        faded = [d for d in faded if d not in down]
        if len(faded) < th.rssi_days:
            faded = []
        if not weak and not faded:
            return
        said, short = [], []
        if weak:
            share = statistics.median(days[d].reports / days[d].peer_reports for d in weak)
            said.append(f"it delivered {share:.0%} of its peers' reports in daylight on {len(weak)} days")
            short.append(f"reports {share:.0%}, {len(weak)} days")
        if faded:
            said.append(f"its rssi fell {drop:.0f} below its own level of the first days (beyond its "
                        f"peers' change) on {len(faded)} days")
            short.append(f"rssi -{drop:.0f}")
        first = min(weak[:1] + faded[:1])
        self.add(m, "comms", WARN, self.since(m, first), 0.0, sorted(set(weak) | set(faded)),
                 "; ".join(short), f"{' and '.join(said)}: a weak radio link or a failing optimizer; "
                 f"check its distance and line of sight to the TAP and for metal between them.")

    def rssi_drops(self, m: Panel) -> tuple[list[int], float]:
        """Days its daylight rssi, taken relative to its peers' median (so a change of the whole
        gateway cancels), lies `rssi_drop` below that of its first days; and the median drop."""
        th = self.th

        def level(key: tuple[int, int], day: int) -> float | None:
            x = self.days[key].get(day)
            return x.rssi_sum / x.rssi_slots if x and x.rssi_slots >= th.min_day_slots else None

        peers = [p.key for p in self.members.get(self.group_of[m.key], []) if p.key != m.key]
        offsets: dict[int, float] = {}
        for day in sorted(self.days[m.key]):
            own = level(m.key, day)
            others = [v for v in (level(k, day) for k in peers) if v is not None]
            if own is not None and len(others) >= th.min_peers:
                offsets[day] = own - statistics.median(others)
        ordered = sorted(offsets)
        if len(ordered) <= th.rssi_baseline_days:
            return [], 0.0
        base = statistics.median(offsets[d] for d in ordered[:th.rssi_baseline_days])
        low = [d for d in ordered[th.rssi_baseline_days:] if base - offsets[d] >= th.rssi_drop]
        return low, statistics.median(base - offsets[d] for d in low) if low else 0.0

    def since(self, m: Panel, day: int) -> int:
        """When a condition seen on `day` was first seen: the panel's first slot counted that day."""
        start = self.days[m.key][day].start
        return self.w.slot_time(start) if start is not None else max(self.w.start_s, self.w.day_start(day))

    def add(self, m: Panel, kind: str, severity: str, since_s: int, lost: float, days: list[int],
            evidence: str, text: str) -> None:
        for d in days:
            self.kind_days[m.key][d].add(kind)
        self.findings.append(PanelFault(
            m.gateway_id, m.node_id, m.barcode, m.panel, m.string, kind, severity, rfc3339(since_s),
            round(lost, 3), evidence, f"{m.label()} ({m.gateway_id}/{m.node_id}): {text}",
            self.group_of[m.key]))


def _lost(days: dict[int, Day], which: list[int]) -> float:
    """Mean daily energy short of the peers' over those days, kWh."""
    if not which:
        return 0.0
    return sum(max(0.0, days[d].peer_wh - days[d].own_wh) for d in which) / 1000 / len(which)


def _spans(slots: list[int]) -> Iterator[tuple[int, int]]:
    """Runs of consecutive slots as (first, last)."""
    start = prev = slots[0]
    for s in slots[1:]:
        if s != prev + 1:
            yield start, prev
            start = s
        prev = s
    yield start, prev


BASIS_WORDS = {GATEWAY: "gateway", STRING: "string", LEARNED: "learned face"}


def analyse_panels(window: Window, panels: list[Panel], sun: Sequence[float] | None = None,
                   th: Thresholds | None = None, clock: SiteClock | None = None,
                   explicit: Mapping[tuple[int, int], str] | None = None) -> Analysis:
    """The findings for `panels` over `window`; `sun` is the sun's elevation in the middle of each
    slot when the site's location is known. Peers: `explicit` groups ((gateway, node) -> name,
    the roof layout's faces) win, then strings, then the faces learned per gateway (peers.py)."""
    judge = _Judge(window, panels, sun, th or Thresholds(), clock or SiteClock())
    grouping = peer_groups(window, panels, judge.th.light_share, judge.th.shade_ratio, explicit)
    judge.notes += grouping.notes
    for g in grouping.groups:
        if len(g.members) <= judge.th.min_peers:
            ids = ", ".join(f"{m.gateway_id}/{m.node_id}" for m in g.members)
            judge.notes.append(f"{BASIS_WORDS.get(g.basis, 'face')} {g.name} has {len(g.members)} panel"
                               f"{'s' * (len(g.members) != 1)} ({ids}): too few peers to judge (each "
                               f"panel needs {judge.th.min_peers} others)")
            continue
        judge.group(g.name, g.members)
    judge.gateways()
    for p in panels:
        if p.key in judge.judged:
            judge.judge(p)
    order = {WARN: 0, INFO: 1}
    judge.findings.sort(key=lambda f: (order[f.severity], f.gateway_id,
                                       -1 if f.node_id is None else f.node_id, KINDS.index(f.kind)))
    return Analysis(window, judge.findings, judge.notes, judge.days, panels, judge.kind_days,
                    grouping.groups)


def panel_days(analysis: Analysis) -> Iterator[PanelDay]:
    """One `tigo_panel_day` record per panel and day it reported: energy_kwh, energy_ratio (to its
    peers, judged slots), vin_ratio, temp_delta_c (medians), report_ratio, the kinds seen and the
    peer group it was judged in."""
    group = {m.key: g.name for g in analysis.groups for m in g.members}
    for p in analysis.panels:
        tags = {k: str(v) for k, v in (("gateway_id", p.gateway_id), ("node_id", p.node_id),
                                       ("barcode", p.barcode), ("panel", p.panel),
                                       ("string", p.string)) if v is not None and v != ""}
        for day, d in sorted(analysis.days.get(p.key, {}).items()):
            values: dict[str, float | str | None] = {
                "energy_kwh": round(d.energy_wh / 1000, 4),
                "energy_ratio": None if d.ratio is None else round(d.ratio, 4),
                "vin_ratio": round(statistics.median(d.vin_ratios), 4) if d.vin_ratios else None,
                "temp_delta_c": round(statistics.median(d.temp_deltas), 2) if d.temp_deltas else None,
                "report_ratio": round(d.reports / d.peer_reports, 4) if d.peer_reports else None,
                "kinds": ",".join(k for k in KINDS if k in analysis.kind_days.get(p.key, {}).get(day, ())),
                "peer_group": group.get(p.key),
            }
            yield PanelDay(analysis.window.day_start(day), tags,
                           {k: v for k, v in values.items() if v is not None})
