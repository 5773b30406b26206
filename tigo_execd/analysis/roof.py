"""`tigo-execd layout`: the roof at a glance, every drawn panel with what it makes now.

The layout file (identity/layout.py) says where each panel sits; this module reads from InfluxDB
what each one shows (its last power, its energy today as the dashboard and Home Assistant compute
it, or its current fault kinds), places the panels to scale (`plan`, the one geometry the SVG and
Grafana share) and colours each relative to the best panel of its face on viridis, a scale that
people with any common colour vision deficiency read in order. The formats draw a `Roof`: svg
(roof_svg.py), grafana and homeassistant (roof_<format>.py, each `render(roof) -> str`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from tigo_execd import argtypes, exitcodes, influx
from tigo_execd.analysis.energy import FRESH_NS, EnergyToday
from tigo_execd.analysis.nodes import KNOWN_DAYS, current_kinds, read_registry
from tigo_execd.clock import NS, iso_utc
from tigo_execd.identity import layout as layout_file
from tigo_execd.identity.layout import Drawing, Face, Key, Known, Layout, LayoutError, Reported, Spot
from tigo_execd.identity.registry import Registry, parse_id
from tigo_execd.identity.store import Names, load_names
from tigo_execd.influx import Influx
from tigo_execd.log import log

if TYPE_CHECKING:
    from tigo_execd.cli import Subparsers

METRICS = ("power", "energy_today", "faults")
FORMATS = ("svg", "grafana", "homeassistant")
SILENCE_NS = 30 * 60 * NS  # this long without a report while others report: silent (grey)
# viridis at 0, .25, .5, .75, 1 (matplotlib's endpoints, d3's and Grafana's continuous-viridis)
SCALE = ("#440154", "#3b528b", "#21918c", "#5ec962", "#fde725")
GREY = "#9e9e9e"    # a silent panel
NIGHT = "#2f3542"   # nothing to compare: every panel of the face is at 0
# one panel in the roof plane, in mm (a common 60-cell / 108 half-cell module, portrait), and the
# gaps: clamps between panels, a margin and a title strip per face, between faces
PANEL_W, PANEL_H, GAP, MARGIN, TITLE, FACE_GAP = 1134.0, 1722.0, 30.0, 200.0, 450.0, 600.0
DEMO_LAYOUT = "data/demo-layout.txt"


class Last(NamedTuple):
    """A panel's newest report in the inventory window."""

    time_ns: int
    power_w: float | None
    barcode: str | None
    panel: str | None


@dataclass(frozen=True)
class PanelValue:
    value: float | None   # what it is coloured by: W, kWh or fault kinds; None for a silent panel
    silent: bool          # no report for SILENCE_NS while others report, or none at all
    kinds: str            # its current fault kinds, "" = none
    text: str             # as written on the panel: "312 W", "2.41 kWh", "no fault"


SILENT = PanelValue(None, True, "", "silent")


@dataclass(frozen=True)
class Roof:
    """What the formats draw: the layout, each panel's value, and whether it is night."""

    layout: Layout
    metric: str
    now_ns: int
    values: dict[Key, PanelValue]
    night: bool             # no panel reported within FRESH_NS of now
    newest_ns: int | None   # the newest report of any panel
    best: dict[str, float] = field(default_factory=dict)  # per face name, filled as it is asked

    def value(self, spot: Spot) -> PanelValue:
        return self.values.get(spot.key, SILENT) if spot.key else SILENT

    def fraction(self, face: Face, spot: Spot) -> float | None:
        """0..1, the panel's value relative to the best panel of its face (for faults: 1 with
        none, 1/(1+kinds) else); None when silent or when its face has nothing to compare."""
        v = self.value(spot)
        if v.value is None:
            return None
        if self.metric == "faults":
            return 1 / (1 + v.value)
        if face.name not in self.best:
            self.best[face.name] = max((x for x in (self.value(s).value for s in face.spots())
                                        if x is not None), default=0.0)
        best = self.best[face.name]
        return min(1.0, max(0.0, v.value / best)) if best > 0 else None

    def colour(self, face: Face, spot: Spot) -> str:
        """Its fill: on SCALE, GREY when silent, NIGHT when its face has nothing to compare."""
        if self.value(spot).silent:
            return GREY
        f = self.fraction(face, spot)
        return NIGHT if f is None else colour(f)


def colour(fraction: float) -> str:
    """The SCALE colour at 0..1, interpolated in RGB between its stops."""
    x = min(1.0, max(0.0, fraction)) * (len(SCALE) - 1)
    i = min(int(x), len(SCALE) - 2)
    a, b = (tuple(int(c[k:k + 2], 16) for k in (1, 3, 5)) for c in SCALE[i:i + 2])
    return "#" + "".join(f"{round(p + (q - p) * (x - i)):02x}" for p, q in zip(a, b))


# ------------------------------------------------------------------ reading InfluxDB

def last_reports(db: Influx, target: str, now_ns: int, days: float = KNOWN_DAYS) -> dict[Key, Last]:
    """Every panel's newest report of the `days` before now_ns, with its identity tags (the newest
    tag combination wins: a barcode or name learnt during the window gives a second series)."""
    series = db.query(f'SELECT last("power_w") AS "power_w" FROM {target} WHERE '
                      f"time > {now_ns - int(days * 86400 * NS)} AND time <= {now_ns} "
                      f'GROUP BY "gateway_id", "node_id", "barcode", "panel"')
    out: dict[Key, Last] = {}
    for tags, row in influx.rows(series):
        gw, node = parse_id(tags.get("gateway_id")), parse_id(tags.get("node_id"))
        if gw is None or node is None:
            continue
        last = Last(int(row["time"]), row["power_w"], tags.get("barcode") or None, tags.get("panel") or None)
        if (gw, node) not in out or last.time_ns >= out[gw, node].time_ns:
            out[gw, node] = last
    return out


def known_from(last: dict[Key, Last], names: Names | None = None,
               registry: Registry | None = None) -> Known:
    """What the layout's tokens may name: the names file, the registry and these reports."""
    return Known.build(names, registry, (Reported(k, v.barcode, v.panel) for k, v in last.items()))


def drawn(db: Influx, target: str, drawing: Drawing, now_ns: int, names: Names | None = None,
          registry: Registry | None = None,
          days: float = KNOWN_DAYS) -> tuple[Layout, Known, dict[Key, Last]]:
    """The drawing resolved against the names file, the registry and the reports of the `days`
    before now_ns; with what was known and each panel's newest report. Raises LayoutError and
    InfluxError (one query)."""
    last = last_reports(db, target, now_ns, days)
    if not last:
        log.warn(f"no reports in {db.db} {target} in the {days:g} days before {iso_utc(now_ns)}: "
                 "only the names file and the registry know panels (is --db right?)")
    known = known_from(last, names, registry)
    return drawing.resolve(known), known, last


def read_roof(db: Influx, target: str, layout: Layout, metric: str, now_ns: int,
              last: dict[Key, Last] | None = None, energy: EnergyToday | None = None) -> Roof:
    """Each drawn panel's value at now_ns; raises InfluxError. `last` and `energy` let a caller
    that already read them (or keeps energy today across checks) pass them in."""
    last = last_reports(db, target, now_ns) if last is None else last
    kinds = {(gw, node): k for (g, n), k in current_kinds(db, now_ns).items()
             if (gw := parse_id(g)) is not None and (node := parse_id(n)) is not None}
    if metric == "energy_today" and energy is None:
        energy = EnergyToday()
        energy.advance(db, target, now_ns)
    newest = max((v.time_ns for v in last.values()), default=None)
    values = {}
    for key in layout.ids():
        seen = last.get(key)
        if seen is None or newest is None or newest - seen.time_ns > SILENCE_NS:
            values[key] = PanelValue(None, True, kinds.get(key, ""), "silent")
            continue
        k = kinds.get(key, "")
        if metric == "power":
            fresh = now_ns - seen.time_ns <= FRESH_NS
            value = max(0.0, float(seen.power_w or 0.0)) if fresh else 0.0
            text = f"{value:.0f} W"
        elif metric == "energy_today":
            assert energy is not None
            value = round(energy.published.get((str(key[0]), str(key[1])), 0.0), 3)
            text = f"{value:.2f} kWh"
        else:
            value = float(len(k.split(","))) if k else 0.0
            text = k.replace(",", " ") if k else "no fault"
        values[key] = PanelValue(value, False, k, text)
    night = newest is None or now_ns - newest > FRESH_NS
    return Roof(layout, metric, now_ns, values, night, newest)


# ------------------------------------------------------------------ geometry

@dataclass(frozen=True)
class Box:
    """A rectangle in millimetres of the roof plane, origin at the top left of the drawing."""

    x: float
    y: float
    w: float
    h: float


@dataclass(frozen=True)
class Plan:
    width: float
    height: float
    faces: list[tuple[Face, Box]]           # each face's frame, its title strip at the top
    panels: list[tuple[Face, Spot, Box]]    # every drawn panel, to scale


def plan(layout: Layout) -> Plan:
    """Faces side by side in file order, each a grid of portrait panels with clamp gaps."""
    faces, panels = [], []
    x = 0.0
    for face in layout.faces:
        w = 2 * MARGIN + face.columns * PANEL_W + (face.columns - 1) * GAP
        h = TITLE + MARGIN + len(face.rows) * PANEL_H + (len(face.rows) - 1) * GAP
        faces.append((face, Box(x, 0.0, w, h)))
        for r, row in enumerate(face.rows):
            for c, spot in enumerate(row):
                if spot is not None:
                    panels.append((face, spot, Box(x + MARGIN + c * (PANEL_W + GAP),
                                                   TITLE + r * (PANEL_H + GAP), PANEL_W, PANEL_H)))
        x += w + FACE_GAP
    return Plan(x - FACE_GAP, max((b.h for _, b in faces), default=0.0), faces, panels)


# ------------------------------------------------------------------ command line

def register(subparsers: Subparsers) -> None:
    from tigo_execd.cli import add_log_level

    p = subparsers.add_parser(
        "layout", help="the roof at a glance: every panel where it sits, coloured by what it makes",
        description="Draw the roof from a layout file (docs/reference/layout.md) with every panel's "
                    "power, energy today or faults from InfluxDB: an SVG picture, a Grafana panel or "
                    "Home Assistant's image. Credentials: environment INFLUX_USER / INFLUX_PASS.")
    where = p.add_mutually_exclusive_group(required=True)
    layout_file.add_arguments(where)
    where.add_argument("--demo", action="store_true",
                       help="the bundled layout of the demo site (tigo-execd run --demo)")
    p.add_argument("--names", type=Path, metavar="FILE",
                   help="names file (barcode,panel,string rows): panel names a layout may use")
    p.add_argument("--state-file", type=Path, default=None, metavar="FILE",
                   help="node registry of `tigo-execd run`: barcodes a layout may use (default: as "
                        "`tigo-execd nodes`; '' = ignore it)")
    influx.add_arguments(p)
    p.add_argument("--metric", choices=METRICS, default="power",
                   help="what colours the panels: last power, energy today, or current fault kinds "
                        "(default: power)")
    p.add_argument("--format", choices=FORMATS, default="svg",
                   help="svg picture, grafana Canvas panel JSON, homeassistant image (default: svg)")
    p.add_argument("--output", type=Path, metavar="FILE", help="write here (default: stdout)")
    p.add_argument("--now", type=argtypes.rfc3339_ns, default=None, metavar="RFC3339",
                   help="the moment drawn (default: now)")
    add_log_level(p)
    p.set_defaults(func=main)


def demo_layout() -> Path:
    return Path(str(resources.files("tigo_execd").joinpath(DEMO_LAYOUT)))


def main(args: argparse.Namespace) -> int:
    if not (args.demo or args.layout):
        log.error("layout: --layout FILE or --demo (an empty --layout names no file)")
        return exitcodes.USAGE
    now_ns = args.now if args.now is not None else time.time_ns()
    db = influx.from_args(args)
    target = influx.target(args.rp, args.measurement)
    registry = read_registry(args.state_file)
    try:
        drawing = layout_file.read(demo_layout() if args.demo else args.layout,
                                   "demo layout" if args.demo else None)
        names = load_names(args.names) if args.names else {}
        layout, known, last = drawn(db, target, drawing, now_ns, names, registry)
        roof = read_roof(db, target, layout, args.metric, now_ns, last)
    except LayoutError as exc:
        return exc.report()
    note = layout.undrawn_note(known)
    if note:
        log.info(note)
    text = importlib.import_module(f"tigo_execd.analysis.roof_{args.format}").render(roof)
    try:
        if args.output:
            args.output.write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)
    except OSError as exc:
        log.error(f"layout: cannot write {args.output}: {exc.strerror or exc}")
        return exitcodes.CANTCREAT
    return exitcodes.OK
