"""`tigo-execd faults`: which panel loses energy, and why, from what the ingest wrote to InfluxDB.

InfluxDB averages the reports per panel and 10-minute slot (panel_stats.py), the rules compare
each panel with its peers (fault_rules.py), this module is the command and its output. The
watchdog runs it hourly as a child process (`--format json-days`: the analysis takes seconds, a
minute check must not wait for it) for `panel_fault` and the daily `tigo_panel_day`.
Exit 0 no warn finding, 1 at least one; a failure exits with its code (exitcodes.TABLE).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import textwrap
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path

import orjson

from tigo_execd import argtypes, exitcodes, influx
from tigo_execd.analysis.fault_rules import (
    WARN,
    Analysis,
    PanelFault,
    SiteClock,
    Thresholds,
    analyse_panels,
    panel_days,
)
from tigo_execd.analysis.nodes import KNOWN_DAYS
from tigo_execd.analysis.panel_stats import DAY_S, SLOT_S, make_window, read
from tigo_execd.analysis.peers import PeerGroup
from tigo_execd.analysis.roof import drawn
from tigo_execd.clock import NS
from tigo_execd.identity import layout as layout_file
from tigo_execd.identity.layout import Drawing, LayoutError
from tigo_execd.identity.store import Names, load_names
from tigo_execd.influx import Influx
from tigo_execd.log import log
from tigo_execd.sun import check_location, elevations

MAX_DAYS = 90        # 90 days of 100 panels stay under 40 MB of slot aggregates
COLUMNS = [f.name for f in fields(PanelFault)]
TABLE_WIDTH = 80


@dataclass
class FaultSettings:
    influx: Influx
    rp: str = ""
    measurement: str = "tigo_power_report"
    days: float = 7.0
    latitude: float | None = None
    longitude: float | None = None
    names: Names = field(default_factory=dict)
    thresholds: Thresholds = field(default_factory=Thresholds)
    # (gateway, node) -> peer group: wins over strings and learned faces (the roof layout's faces)
    groups: Mapping[tuple[int, int], str] = field(default_factory=dict)


def analyse(s: FaultSettings, now_s: int) -> Analysis:
    """Read the window ending at `now_s` and judge it; raises InfluxError when it cannot be read."""
    window = make_window(now_s, s.days, s.longitude)
    panels = read(s.influx, influx.target(s.rp, s.measurement), window, s.names)
    sun = None
    if s.latitude is not None and s.longitude is not None:
        sun = elevations(s.latitude, s.longitude, window.start_s + SLOT_S / 2, SLOT_S, window.slots)
    return analyse_panels(window, panels, sun, s.thresholds, SiteClock.for_longitude(s.longitude),
                          s.groups)


def _peak(g: PeerGroup, result: Analysis, clock: SiteClock) -> str | None:
    if g.peak_slot is None:
        return None
    return f"{clock.hhmm(g.peak_slot, result.window.day_origin_s % DAY_S)} {clock.name}"


def format_groups(result: Analysis, clock: SiteClock, fmt: str) -> str:
    """The peer groups with their evidence (`--groups`): a table for people, JSON, or with csv a
    names file (gateway,node,panel,string rows) that keeps the groups as strings."""
    if fmt == "csv":
        rows = [(m.gateway_id, m.node_id, m.label(), g.name) for g in result.groups for m in g.members]
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows([("gateway", "node", "panel", "string"), *rows])
        return out.getvalue()
    if fmt != "table":
        return orjson.dumps([{
            "peer_group": g.name, "basis": g.basis, "peak": _peak(g, result, clock),
            "morning_share": None if g.morning_share is None else round(g.morning_share, 3),
            "panels": [{"gateway_id": m.gateway_id, "node_id": m.node_id, "barcode": m.barcode,
                        "panel": m.panel} for m in g.members]} for g in result.groups],
            option=orjson.OPT_INDENT_2).decode() + "\n"
    lines = []
    for g in result.groups:
        morning = "" if g.morning_share is None else f", {g.morning_share:.0%} of its energy before noon"
        lines.append(f"{g.name} ({g.basis}): {len(g.members)} panels, clear-day peak at "
                     f"{_peak(g, result, clock) or 'unknown'}{morning}")
        members = " ".join(f"{m.gateway_id}/{m.node_id}" for m in g.members)
        lines += textwrap.wrap(members, TABLE_WIDTH, initial_indent="  ", subsequent_indent="  ")
    return "\n".join(lines) + "\n"


def face_groups(s: FaultSettings, drawing: Drawing, now_s: int) -> dict[tuple[int, int], str]:
    """(gateway, node) -> "face NAME" for the panels of every face with an azimuth: one peer group,
    whatever their string, as the user says they face alike (FaultSettings.groups). Its tokens
    are resolved against the names file and the reports of the window; raises LayoutError and
    InfluxError."""
    layout, known, _ = drawn(s.influx, influx.target(s.rp, s.measurement), drawing, now_s * NS,
                             s.names, days=max(KNOWN_DAYS, s.days))
    note = layout.undrawn_note(known)
    if note:
        log.info(note)
    return layout.peer_groups()


# ------------------------------------------------------------------ output

def format_json(findings: list[PanelFault]) -> str:
    return orjson.dumps([asdict(f) for f in findings], option=orjson.OPT_INDENT_2).decode() + "\n"


def format_json_days(result: Analysis) -> str:
    """The findings (as `--format json`) and every panel's complete days of the window (what the
    watchdog writes as `tigo_panel_day`): {"findings": [...], "panel_days": [{time, tags, fields}]}."""
    w = result.window
    days = [asdict(d) for d in panel_days(result) if w.start_s <= d.time_s and d.time_s + DAY_S <= w.end_s]
    found = [asdict(f) for f in result.findings]
    return orjson.dumps({"findings": found, "panel_days": days}).decode() + "\n"


def format_csv(findings: list[PanelFault]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for f in findings:
        writer.writerow(["" if v is None else v for v in asdict(f).values()])
    return out.getvalue()


def format_table(findings: list[PanelFault], header: str, notes: list[str]) -> str:
    """One line per finding, warn first, cut to 80 columns; the full sentences are in JSON/CSV."""
    lines = [f"# {header}"]
    rows = [("sev", "panel", "gw/node", "kind", "since", "kWh/d", "evidence")]
    for f in findings:
        node = f"{f.gateway_id}/{'-' if f.node_id is None else f.node_id}"
        rows.append((f.severity, f.label[:14], node, f.kind, f.since[5:10],
                     f"{f.energy_lost_kwh_per_day:.2f}", f.evidence))
    widths = [max(len(r[c]) for r in rows) for c in range(6)]
    for r in rows if findings else []:
        text = "  ".join(c.rjust(w) if i == 5 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
        lines.append(f"{text}  {r[6]}"[:TABLE_WIDTH].rstrip())
    lines += [f"# {n}" for n in notes]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ command line

def _threshold(text: str) -> tuple[str, float]:
    name, _, value = text.partition("=")
    if name not in Thresholds.names():
        raise argparse.ArgumentTypeError(f"{name!r} is not a threshold; one of: "
                                         f"{', '.join(Thresholds.names())}")
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: want NAME=NUMBER") from None
    if isinstance(getattr(Thresholds(), name), int) and not (number >= 1 and number.is_integer()):
        raise argparse.ArgumentTypeError(f"{text!r}: {name} is a count, a whole number of 1 or more")
    if not number >= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a threshold is a number of 0 or more")
    return name, number


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from tigo_execd.cli import add_log_level

    p = sub.add_parser("faults", help="which panel loses energy, and why (bypass diode, dirt, shade, ...)",
                       description="Compare every panel with its peers over the last days and name the "
                                   "ones that lose energy, with the evidence and what to check. Exit 0: "
                                   "no warning, 1: at least one (the other codes: below). "
                                   "Credentials: environment INFLUX_USER / INFLUX_PASS.")
    influx.add_arguments(p)
    p.add_argument("--days", type=argtypes.number(1, MAX_DAYS, unit="days"), default=7.0,
                   help="days judged, ending at --now (default: 7)")
    p.add_argument("--now", type=argtypes.rfc3339_ns, default=None, metavar="RFC3339",
                   help="end of the window (default: now)")
    p.add_argument("--latitude", type=argtypes.optional_number,
                   help="site latitude, north positive (empty = unknown)")
    p.add_argument("--longitude", type=argtypes.optional_number,
                   help="site longitude, east positive (empty = unknown)")
    p.add_argument("--names", type=Path, metavar="FILE",
                   help="names file (barcode,panel,string rows): panel names, and peers by string")
    layout_file.add_arguments(p)
    p.add_argument("--format", choices=("table", "json", "csv", "json-days"), default="table",
                   help="table for people (80 columns), json or csv for scripts, json-days: an object "
                        "with the findings and each panel's complete days (default: table)")
    p.add_argument("--groups", action="store_true",
                   help="print the peer groups each panel is judged in (learned from the clear days' "
                        "curves, or the strings) with their evidence, instead of the findings; with "
                        "--format csv as a names file")
    p.add_argument("--threshold", type=_threshold, action="append", default=[], metavar="NAME=VALUE",
                   help="change one threshold of the rules (repeatable; see docs/reference/faults.md)")
    add_log_level(p)
    p.set_defaults(func=main)


def settings_from(args: argparse.Namespace) -> FaultSettings:
    """Raises ValueError for settings that do not go together, exitcodes.Failure for a names file
    that cannot be read."""
    check_location(args.latitude, args.longitude)
    if args.timeout <= 0:
        raise ValueError("--timeout must be a positive number of seconds")
    names: Names = load_names(args.names) if args.names else {}
    th = Thresholds()
    for name, value in args.threshold:
        th = replace(th, **{name: type(getattr(th, name))(value)})
    return FaultSettings(influx.from_args(args), args.rp, args.measurement, args.days, args.latitude,
                         args.longitude, names, th)


def main(args: argparse.Namespace) -> int:
    try:
        settings = settings_from(args)
        drawing = layout_file.read(args.layout) if args.layout else None
    except ValueError as exc:
        raise exitcodes.Failure(str(exc), exitcodes.USAGE) from None
    except LayoutError as exc:
        return exc.report()
    now_s = args.now // NS if args.now is not None else int(time.time())
    try:
        if drawing:
            settings = replace(settings, groups={**face_groups(settings, drawing, now_s), **settings.groups})
        result = analyse(settings, now_s)
    except LayoutError as exc:
        return exc.report()
    w = result.window
    if args.groups:
        sys.stdout.write(format_groups(result, SiteClock.for_longitude(settings.longitude), args.format))
        return exitcodes.OK
    warns = sum(f.severity == WARN for f in result.findings)
    notes = list(result.notes)
    if not result.panels:
        notes.append(f"no reports in {settings.influx.db} {influx.target(settings.rp, settings.measurement)} "
                     f"between {_utc(w.start_s)} and {_utc(w.end_s)}: nothing to judge")
    header = (f"{_utc(w.start_s)} .. {_utc(w.end_s)}: {len(result.panels)} panels, {warns} warn, "
              f"{len(result.findings) - warns} info")
    if args.format == "table":
        sys.stdout.write(format_table(result.findings, header, notes))
    else:
        for note in notes:
            log.info(f"faults: {note}")
        if args.format == "json-days":
            sys.stdout.write(format_json_days(result))
        else:
            sys.stdout.write((format_json if args.format == "json" else format_csv)(result.findings))
    return exitcodes.WARN if warns else exitcodes.OK


def _utc(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%MZ")
