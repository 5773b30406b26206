"""Peer groups: which panels see the sun alike, learned from the window's clearest days.

A panel is judged against the median of its peers, which only cancels sun, clouds and heat when
the peers face the same way. The bus does not say which panel is on which roof face, so the panels
of each gateway (or named string) are grouped by the shape of their clear-day power curve: on one
face the ratio of two panels' power is the same at every hour, on two faces it swings from morning
to evening. A uniform loss (a shorted bypass diode, dirt) leaves the shape alone, and a shadow or
an outage touches too few hours to move the middle of the ratio's spread, so a faulty panel still
joins its face. An explicit grouping (the roof layout's faces) wins over a names-file `string`,
which wins over what is learned.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from string import ascii_lowercase

from tigo_execd.analysis.panel_stats import SLOT_S, Panel, Window

SLOTS_PER_DAY = 86400 // SLOT_S
CLEAR_DAY_SHARE = 0.8    # a clear day: the group's energy at least this share of its best day's
OWN_DAY_SHARE = 0.2      # a panel's day counts for its curve when it made this share of its best
SPREAD_LOW, SPREAD_HIGH = 0.3, 0.7  # the middle of the log ratio's spread: 30 % of slots each side
MIN_COMMON_SLOTS = 6     # lit slots two curves need in common to be compared (1 h)
# the basis of a group, strongest first
LAYOUT, STRING, LEARNED, GATEWAY = "layout", "string", "learned", "gateway"


@dataclass
class PeerGroup:
    """Panels judged against each other; `peak_slot` and `morning_share` are the evidence of the
    group's clear-day curve (slot of day of its peak, share of its energy before noon)."""

    name: str
    basis: str
    members: list[Panel]
    peak_slot: int | None = None
    morning_share: float | None = None


def tolerance(shade_ratio: float) -> float:
    """How far apart two curves may be and stay one group. Panels of another face swing against
    the group's median by +-a (log of their power ratio) over the day and look shaded once
    exp(-a) < shade_ratio; half of that keeps a margin for the slots' noise. The spread measured
    (30th to 70th percentile) of a ratio swinging evenly by +-a is 0.8 a."""
    return 0.8 * -math.log(shade_ratio) / 2


def clear_days(window: Window, panels: list[Panel]) -> list[int]:
    """The days whose energy over these panels is within CLEAR_DAY_SHARE of the best day's."""
    energy: dict[int, float] = defaultdict(float)
    for p in panels:
        for i, x in enumerate(p.values["p"]):
            if x > 0:
                energy[window.day_of(i)] += x
    best = max(energy.values(), default=0.0)
    return sorted(d for d, e in energy.items() if best > 0 and e >= CLEAR_DAY_SHARE * best)


def curve(window: Window, p: Panel, days: list[int]) -> list[float] | None:
    """Its power per slot of day, the median over `days` it produced on (an outage of a day or a
    dead connector leaves the others); None when it produced on none of them."""
    power = p.values["p"]
    first = [(window.day_start(d) - window.start_s) // SLOT_S for d in days]
    energy = [sum(x for x in power[max(0, f):max(0, f + SLOTS_PER_DAY)] if x > 0) for f in first]
    best = max(energy, default=0.0)
    starts = [f for f, e in zip(first, energy) if best > 0 and e >= OWN_DAY_SHARE * best]
    if not starts:
        return None
    out = []
    for s in range(SLOTS_PER_DAY):
        xs = [power[f + s] for f in starts if 0 <= f + s < len(power) and power[f + s] > 0]
        out.append(statistics.median(xs) if xs else 0.0)
    return out


def distance(a: list[float], b: list[float], light_share: float) -> float:
    """The spread of log(a / b) over the slots both are lit (30th to 70th percentile): 0 for two
    panels of one face, whatever their size; a shadow or outage in fewer than 30 % of the slots
    does not move it."""
    floor_a, floor_b = light_share * max(a), light_share * max(b)
    logs = sorted(math.log(x / y) for x, y in zip(a, b) if x > floor_a and y > floor_b)
    if len(logs) < MIN_COMMON_SLOTS:
        return 0.0  # too little light in common to tell them apart
    n = len(logs) - 1
    return logs[round(SPREAD_HIGH * n)] - logs[round(SPREAD_LOW * n)]


def cluster(curves: dict[tuple[int, int], list[float]], light_share: float,
            limit: float) -> list[list[tuple[int, int]]]:
    """Average-linkage clustering: merge the two closest groups while their mean distance is
    within `limit`; the groups, largest first."""
    keys = sorted(curves)
    groups = {k: [k] for k in keys}
    dist = {(a, b): distance(curves[a], curves[b], light_share) for i, a in enumerate(keys)
            for b in keys[i + 1:]}
    while len(groups) > 1:
        (a, b), d = min(dist.items(), key=lambda kv: kv[1])
        if d > limit:
            break
        na, nb = len(groups[a]), len(groups[b])
        groups[a] += groups.pop(b)
        for c in groups:
            if c != a:
                dac, dbc = dist.pop(_pair(a, c)), dist.pop(_pair(b, c))
                dist[_pair(a, c)] = (na * dac + nb * dbc) / (na + nb)
        del dist[_pair(a, b)]
    return sorted(groups.values(), key=lambda g: (-len(g), g))


def _pair(a: tuple[int, int], b: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    return (a, b) if a < b else (b, a)


def noon(curves: dict[tuple[int, int], list[float]]) -> int:
    """The slot of day halfway between the first and the last light of any of the curves: the
    sun's noon, with or without the site's location."""
    lit = [s for s in range(SLOTS_PER_DAY) if any(c[s] > 0 for c in curves.values())]
    return (lit[0] + lit[-1] + 1) // 2 if lit else SLOTS_PER_DAY // 2


def evidence(members: list[Panel], curves: dict[tuple[int, int], list[float]],
             noon_slot: int) -> tuple[int | None, float | None]:
    """(slot of day of the peak, share of the energy before `noon_slot`) of the median of the
    members' curves, each scaled to its own peak."""
    scaled = [[x / max(c) for x in c] for c in (curves.get(m.key) for m in members) if c and max(c) > 0]
    if not scaled:
        return None, None
    median = [statistics.median(col) for col in zip(*scaled)]
    total = sum(median)
    peak = max(range(len(median)), key=median.__getitem__)
    return peak, sum(median[:noon_slot]) / total if total else None


@dataclass
class Grouping:
    groups: list[PeerGroup]
    notes: list[str]


def peer_groups(window: Window, panels: list[Panel], light_share: float, shade_ratio: float,
                explicit: Mapping[tuple[int, int], str] | None = None) -> Grouping:
    """Every panel in one group. `explicit` maps (gateway, node) to a group name and wins (the
    roof layout's faces); then a panel's `string` (names file, else the reports' tag); the rest
    of each gateway is split into the faces its clear-day curves show. A named string whose
    panels clearly face two ways is kept, and said in a note."""
    explicit = explicit or {}
    base: dict[tuple[str, str], list[Panel]] = defaultdict(list)
    for p in panels:
        if p.key in explicit:
            base[(LAYOUT, explicit[p.key])].append(p)
        elif p.string:
            base[(STRING, p.string)].append(p)
        else:
            base[(GATEWAY, str(p.gateway_id))].append(p)
    limit = tolerance(shade_ratio)
    out = Grouping([], [])
    for (basis, name), members in sorted(base.items()):
        days = clear_days(window, members)
        curves = {m.key: c for m in members if (c := curve(window, m, days)) is not None}
        noon_slot = noon(curves)
        faces = cluster(curves, light_share, limit) if basis != LAYOUT else [sorted(curves)]
        if basis == GATEWAY and len(faces) > 1:
            blind = [m for m in members if m.key not in curves]  # no curve: joins the largest face
            found = [[m for m in members if m.key in set(f)] for f in faces]
            found[0] += blind
            learned = [PeerGroup("", LEARNED, f, *evidence(f, curves, noon_slot)) for f in found]
            learned.sort(key=lambda g: (g.peak_slot is None, g.peak_slot))  # morning first
            for i, g in enumerate(learned):
                g.name = f"{name}/{ascii_lowercase[i] if i < len(ascii_lowercase) else i + 1}"
            out.groups += learned
            continue
        peak, morning = evidence(members, curves, noon_slot)
        out.groups.append(PeerGroup(name, basis, members, peak, morning))
        two_ways = [f for f in faces if len(f) >= 2]
        if basis == STRING and len(two_ways) > 1:
            ways = "; ".join(", ".join(f"{gw}/{node}" for gw, node in f) for f in two_ways)
            out.notes.append(f"string {name}: its panels face {len(two_ways)} ways by their clear-day "
                             f"curves ({ways}); judged as one string as the names file says, which "
                             f"makes the panels of the smaller side look shaded: check the names file")
    taken: set[str] = set()
    for g in out.groups:  # a layout face and a string of one name are still two groups
        g.name = g.name if g.name not in taken else f"{g.name} ({g.basis})"
        taken.add(g.name)
    return out
