"""`tigo-execd nodes`: the weak-node report, read back from InfluxDB.

A node that sends fewer reports than its neighbours is usually the real cause of missing power, and
a node that sends nothing at all is the worst case, so the report lists, per (gateway, node), how
many reports arrived against how many were due, worst first, including nodes known from the last
days (or from the node registry) that sent nothing in the window.

Reports due: every optimizer reports every 20 s while its panel has light, 3 per minute. The
minutes of daylight are taken from the data itself: a minute counts when ANY node of the site
reported in it, so night and whole-site outages (the watchdog's business) do not count against a
node, but a node that wakes late, sleeps early or drops reports does.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from tigo_execd import argtypes, exitcodes, influx, measurements
from tigo_execd.clock import NS, iso_utc
from tigo_execd.identity.registry import Registry, id_sort_key
from tigo_execd.identity.store import default_state_file, load_state, state_path
from tigo_execd.influx import Influx
from tigo_execd.log import log

if TYPE_CHECKING:
    from tigo_execd.cli import Subparsers

REPORTS_PER_MINUTE = 3   # one every 20 s
KNOWN_DAYS = 7           # a node seen this recently is expected to report
LOW_COMPLETENESS = 0.9   # below this share of the reports due a node is marked "low"
KINDS_DAYS = 2           # a tigo_panel_day this recent (yesterday's, written today) is current
MAX_HOURS = 24 * 31      # keeps the per-minute query at most 44640 rows
SERVICE_STATE_FILE = Path("/var/lib/tigo-execd/registry.json")  # StateDirectory= of the unit
NAME_TAGS = ("barcode", "panel", "string")
COLUMNS = ("gateway_id", "node_id", "barcode", "panel", "string", "status", "reports", "expected",
           "completeness", "rssi_mean", "rssi_min", "rssi_p95", "last_seen_utc", "kinds")


@dataclass
class NodeRow:
    gateway_id: str
    node_id: str
    barcode: str = ""
    panel: str = ""
    string: str = ""
    status: str = "silent"            # silent | low | ok | idle (the site reported nothing)
    reports: int = 0
    expected: int = 0
    completeness: float | None = None  # reports / expected, None when nothing was due
    rssi_mean: float | None = None
    rssi_min: int | None = None
    rssi_p95: int | None = None
    last_seen_utc: str | None = None   # newest report within the last KNOWN_DAYS (or the window)
    kinds: str = ""                    # fault kinds of its newest tigo_panel_day (the watchdog's)


@dataclass
class Report:
    start_utc: str
    end_utc: str
    hours: float
    active_minutes: int    # minutes in which any node reported
    expected_per_node: int
    nodes: list[NodeRow]


def _ns(t: datetime) -> int:
    """A window bound as epoch ns, to the whole second."""
    return int(t.timestamp()) * NS


def _node_key(tags: dict[str, str]) -> tuple[str, str]:
    return tags.get("gateway_id", ""), tags.get("node_id", "")


def build_report(db: Influx, source: str, end: datetime, hours: float,
                 registry: Registry | None = None) -> Report:
    """Query InfluxDB (four bounded queries) and rank the nodes worst first."""
    end = end.replace(second=0, microsecond=0)  # whole minutes: every minute has 3 reports due
    start = end - timedelta(hours=hours)
    window = f"time >= {_ns(start)} AND time < {_ns(end)}"
    known_since = min(start, end - timedelta(days=KNOWN_DAYS))
    known_window = f"time >= {_ns(known_since)} AND time < {_ns(end)}"

    active = db.query(f"SELECT count(rssi) FROM {source} WHERE {window} GROUP BY time(1m) fill(none)",
                      epoch="s")
    active_minutes = sum(1 for _, v in influx.rows(active) if v["count"])
    expected = active_minutes * REPORTS_PER_MINUTE

    nodes: dict[tuple[str, str], NodeRow] = {}
    newest: dict[tuple[str, str], int] = {}

    def row_of(key: tuple[str, str]) -> NodeRow:
        return nodes.setdefault(key, NodeRow(*key))

    # one series per distinct tag combination: a node whose barcode or name was learnt during the
    # week shows up more than once, and its newest combination wins
    known = db.query(f"SELECT last(rssi) FROM {source} WHERE {known_window} "
                     f"GROUP BY gateway_id, node_id, {', '.join(map(influx.ident, NAME_TAGS))}", epoch="s")
    for tags, v in influx.rows(known):
        key = _node_key(tags)
        row = row_of(key)
        if v["time"] >= newest.get(key, -1):
            newest[key] = v["time"]
            row.last_seen_utc = iso_utc(v["time"] * NS, zulu=True)
            for tag in NAME_TAGS:
                setattr(row, tag, tags.get(tag) or getattr(row, tag))
    for (gateway, node), info in (registry.nodes.items() if registry else ()):
        row = row_of((str(gateway), str(node)))
        row.barcode = row.barcode or info.get("barcode", "")

    stats = db.query(f"SELECT count(rssi), mean(rssi), min(rssi), percentile(rssi, 95) "
                     f"FROM {source} WHERE {window} GROUP BY gateway_id, node_id", epoch="s")
    for tags, v in influx.rows(stats):
        row = row_of(_node_key(tags))
        row.reports = int(v["count"] or 0)
        row.rssi_mean = None if v["mean"] is None else round(v["mean"], 1)
        row.rssi_min, row.rssi_p95 = v["min"], v["percentile"]

    for key, kinds in current_kinds(db, _ns(end)).items():
        if key in nodes:
            nodes[key].kinds = kinds
    for row in nodes.values():
        row.expected = expected
        if expected:
            row.completeness = round(row.reports / expected, 3)
            row.status = ("silent" if not row.reports else
                          "low" if row.completeness < LOW_COMPLETENESS else "ok")
        else:
            row.status = "idle"
    ranked = sorted(nodes.values(), key=lambda r: (
        r.reports > 0, r.completeness if r.completeness is not None else math.inf,
        r.rssi_mean if r.rssi_mean is not None else math.inf,
        id_sort_key(r.gateway_id), id_sort_key(r.node_id)))
    return Report(iso_utc(_ns(start), zulu=True), iso_utc(_ns(end), zulu=True), hours,
                  active_minutes, expected, ranked)


def current_kinds(db: Influx, end_ns: int) -> dict[tuple[str, str], str]:
    """Fault kinds per (gateway, node) from its newest `tigo_panel_day` of the KINDS_DAYS before
    end_ns (the health instance writes one per panel and day, in the database's default retention
    policy); "" for a panel whose newest day had none. One bounded query."""
    days = db.query(f"SELECT last(\"kinds\") AS kinds FROM {influx.ident(measurements.PANEL_DAY)} "
                    f"WHERE time >= {end_ns - KINDS_DAYS * 86400 * NS} AND time < {end_ns} "
                    f"GROUP BY gateway_id, node_id", epoch="s")
    return {_node_key(tags): v["kinds"] or "" for tags, v in influx.rows(days)}


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def format_table(report: Report) -> str:
    head = ["gateway", "node", "barcode", "panel", "string", "status", "reports", "expected",
            "complete", "rssi_mean", "rssi_min", "rssi_p95", "last_seen_utc", "kinds"]
    body = []
    for r in report.nodes:
        cells = [_cell(getattr(r, c)) for c in COLUMNS]
        cells[8] = "" if r.completeness is None else f"{r.completeness:.1%}"
        body.append(cells)
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    numeric = {6, 7, 8, 9, 10, 11}
    lines = [f"# {report.start_utc} .. {report.end_utc} ({report.hours:g} h): the site reported "
             f"in {report.active_minutes} minutes, {report.expected_per_node} reports due per node"]
    for cells in [head, *body]:
        lines.append("  ".join(c.rjust(w) if i in numeric else c.ljust(w)
                               for i, (c, w) in enumerate(zip(cells, widths))).rstrip())
    return "\n".join(lines) + "\n"


def format_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows([_cell(getattr(r, c)) for c in COLUMNS] for r in report.nodes)
    return out.getvalue()


def format_json(report: Report) -> str:
    return orjson.dumps(asdict(report), option=orjson.OPT_INDENT_2).decode() + "\n"


FORMATS = {"table": format_table, "csv": format_csv, "json": format_json}


def register(subparsers: Subparsers) -> None:
    from tigo_execd.cli import add_log_level

    p = subparsers.add_parser(
        "nodes", help="weak-node report: reports received vs due, rssi, silent nodes",
        description="Rank the optimizers worst first by the share of their reports that reached "
                    "InfluxDB. Credentials come from the environment: INFLUX_USER, INFLUX_PASS.")
    p.add_argument("--hours", type=argtypes.number(0, MAX_HOURS, above=True, unit="hours"), default=24.0,
                   help="window length (default 24)")
    p.add_argument("--until", type=argtypes.rfc3339, default=None, metavar="TIME",
                   help="end of the window, ISO 8601 with offset (default: now)")
    p.add_argument("--format", choices=list(FORMATS), default="table")
    influx.add_arguments(p)
    p.add_argument("--state-file", type=Path, default=None, metavar="FILE",
                   help=f"node registry of `tigo-execd run`: its nodes are listed even when "
                        f"InfluxDB has nothing from them (default: the service's "
                        f"{SERVICE_STATE_FILE} when readable, else run's default; '' = ignore it)")
    add_log_level(p)
    p.set_defaults(func=main)


def registry_to_read(arg: Path | None) -> tuple[Path | None, str]:
    """The registry to list nodes from, and whose it is: --state-file when given; else the
    service's, which a person running `nodes` by hand means (run's own default is that person's
    ~/.local/state); else run's default."""
    if arg is not None or os.environ.get("STATE_DIRECTORY"):
        return state_path(arg), ""
    service = SERVICE_STATE_FILE
    if service.exists():
        if os.access(service, os.R_OK):
            return service, " (the tigo-execd service's; --state-file FILE reads another)"
        log.info(f"the service's node registry {service} is not readable by this user: reading "
                 f"{default_state_file()} instead")
    return state_path(None), ""


def read_registry(arg: Path | None) -> Registry:
    """The node registry a reading command shows names and barcodes from (registry_to_read's)."""
    registry = Registry()
    path, whose = registry_to_read(arg)
    if path:
        load_state(registry, path, whose)
    return registry


def main(args: argparse.Namespace) -> int:
    db = influx.from_args(args)
    source = influx.target(args.rp, args.measurement)
    registry = read_registry(args.state_file)
    report = build_report(db, source, args.until or datetime.now(UTC), args.hours, registry)
    if not report.nodes:
        log.warn(f"no reports in {args.db} {source} in the last {KNOWN_DAYS} days")
    elif not report.active_minutes:
        log.warn(f"no node reported between {report.start_utc} and {report.end_utc} (night?)")
    sys.stdout.write(FORMATS[args.format](report))
    return exitcodes.OK
