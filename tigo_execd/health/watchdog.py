"""`tigo-execd watchdog`: is data arriving, and if not, why? One check per newline on stdin.

Run by its own Telegraf instance (inputs.execd, `signal = "STDIN"`): each `\\n` runs one check and
prints one `tigo_health` line plus one `tigo_node_health` line per optimizer that needs attention;
at most hourly it runs `tigo-execd faults` beside the checks (PanelFaults) and once a day adds the
previous day's `tigo_panel_day` lines.
`--once` prints a one-line summary for people and scripts and exits with the verdict's code
(exitcodes.OK, WARN, CRIT).

It reads back what the ingest wrote: the newest report per (gateway, node) over the last days, and
the ingest's own `tigo_ingest` self-metrics; every query has a time window (ending at the check's
`now`, so a point dated in the future cannot hide staleness) and an HTTP timeout. With a location
the sun's elevation tells night from an outage; without one the old 240-minute lag limit applies.

Reasons, in order of precedence (the first that applies wins):
  influx_auth_failed, influx_unreachable, influx_query_failed   CRIT  the check itself cannot run
  ingest_stopped        CRIT  self-metrics were written before, none in the last window
  source_disconnected   CRIT  every self-metric of the window says the bus source is disconnected
  taptap_not_running    CRIT  every self-metric of the window says taptap is not running
  no_data               CRIT  the measurement has no series at all
  nodes_silent          WARN  data is fresh, but some optimizers have been silent for too long
  panel_fault           WARN  data is fresh, and the hourly `tigo-execd faults` found warn findings
  healthy               OK    data is fresh
  night                 OK    data is stale, but the sun is (or was until recently) below the horizon
  bus_silent            CRIT  stale in daylight, and the ingest sees no bytes (or taptap prints nothing)
  no_reports_decoded    CRIT  stale in daylight, bytes or lines arrive but no report is decoded
  stale_data            CRIT  stale in daylight for any other reason (the message says what is known)
The ingest faults come first because they hold day and night and are the cause behind the others.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from tigo_execd import argtypes, exitcodes, influx, lineproto, measurements, sun
from tigo_execd.cli import Subparsers, add_log_level, waiting_for_telegraf
from tigo_execd.clock import NS, iso_utc
from tigo_execd.health import autoheal
from tigo_execd.identity import layout as layout_file
from tigo_execd.identity.registry import id_sort_key
from tigo_execd.influx import Influx, InfluxAuthFailed, InfluxError, InfluxUnreachable
from tigo_execd.log import log

OK, WARN, CRIT = "OK", "WARN", "CRIT"
CODES = {OK: exitcodes.OK, WARN: exitcodes.WARN, CRIT: exitcodes.CRIT}  # `code` field, --once exit
STATUS = {"healthy": OK, "night": OK, "nodes_silent": WARN, "panel_fault": WARN}  # every other reason is CRIT
NS_PER_MIN = 60 * NS
BUS_QUIET_S = 60.0        # a powered CCA polls all the time: a minute without a byte is not normal
MAX_LISTED_NODES = 50     # silent_nodes stays a readable string even when a whole TAP is gone
POWER_FIELD = "power_w"   # present in every report (schema contract)
MAX_FAULTS_S = 600.0      # an hourly analysis still running after this long (or its period) is ended


@dataclass
class Settings:
    influx: Influx
    rp: str
    measurement: str
    ingest_measurement: str
    latitude: float | None
    longitude: float | None
    max_lag_min: float
    day_lag_min: float
    node_silence_min: float
    day_elevation: float
    inventory_days: float
    ingest_window_min: float

    @property
    def located(self) -> bool:
        return self.latitude is not None and self.longitude is not None


@dataclass
class Node:
    gateway_id: str
    node_id: str
    barcode: str | None
    last_ns: int

    def label(self) -> str:
        text = f"{self.gateway_id}/{self.node_id}"
        return f"{text} ({self.barcode})" if self.barcode else text


@dataclass
class Verdict:
    reason: str
    message: str
    silent: list[Node] = field(default_factory=list)

    @property
    def status(self) -> str:
        return STATUS.get(self.reason, CRIT)


@dataclass
class Facts:
    """What one check found out; `nodes` is None when InfluxDB could not be asked."""

    now_ns: int
    nodes: list[Node] | None = None
    reporting: int | None = None  # nodes heard within --node-silence-min
    sun_elevation: float | None = None
    faults: int | None = None         # warn findings of the last hourly analysis (None: none yet)
    fault_panels: str | None = None
    failure: InfluxError | None = None  # why InfluxDB could not be asked (--once exits with its code)

    @property
    def last_ns(self) -> int | None:
        return max((n.last_ns for n in self.nodes), default=None) if self.nodes else None

    def lag_min(self) -> float | None:
        last = self.last_ns
        return None if last is None else (self.now_ns - last) / NS_PER_MIN


def _minutes(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


class Check:
    """One health check against InfluxDB; `run()` never raises for InfluxDB trouble."""

    def __init__(self, s: Settings, now_ns: int) -> None:
        self.s = s
        self.now_ns = now_ns
        self.target = influx.target(s.rp, s.measurement)
        self.ingest_target = influx.target(s.rp, s.ingest_measurement)
        self.facts = Facts(now_ns)

    def _window(self, minutes: float, future: bool = False) -> str:
        span = int(minutes * NS_PER_MIN)
        if future:
            return f"time > {self.now_ns} AND time <= {self.now_ns + span}"
        return f"time > {self.now_ns - span} AND time <= {self.now_ns}"

    def _query(self, q: str) -> list[dict[str, Any]]:
        log.debug(f"watchdog query: {q}")
        return self.s.influx.query(q)

    def run(self) -> Verdict:
        try:
            return self._judge()
        except InfluxError as exc:
            self.facts.failure = exc
            if isinstance(exc, InfluxAuthFailed):
                reason = "influx_auth_failed"
            elif isinstance(exc, InfluxUnreachable):
                reason = "influx_unreachable"
            else:
                reason = "no_data" if isinstance(exc, influx.InfluxNoDatabase) else "influx_query_failed"
            log.warn(str(exc), key=reason)
            return Verdict(reason, str(exc))

    # ------------------------------------------------------------------ gathering

    def _nodes(self) -> list[Node]:
        """Newest report per (gateway, node) within the inventory window."""
        series = self._query(
            f"SELECT last({influx.ident(POWER_FIELD)}) AS {influx.ident(POWER_FIELD)}, \"barcode\" "
            f"FROM {self.target} WHERE {self._window(self.s.inventory_days * 1440)} "
            f'GROUP BY "gateway_id", "node_id"')
        nodes = [Node(tags.get("gateway_id", ""), tags.get("node_id", ""), row.get("barcode"),
                      int(row["time"])) for tags, row in influx.rows(series)]  # one row each: last()
        return sorted(nodes, key=lambda n: (id_sort_key(n.gateway_id), id_sort_key(n.node_id)))

    def _has_series(self) -> bool:
        return bool(self._query(f"SHOW SERIES FROM {self.target} LIMIT 1"))

    def _ingest_rows(self) -> dict[str, list[dict[str, Any]]]:
        """Self-metric rows per source within --ingest-window-min, oldest first."""
        series = self._query(f"SELECT * FROM {self.ingest_target} "
                             f'WHERE {self._window(self.s.ingest_window_min)} GROUP BY "source"')
        by_source: dict[str, list[dict[str, Any]]] = {}
        for tags, row in influx.rows(series):
            by_source.setdefault(tags.get("source", ""), []).append(row)
        return by_source

    def _last_ns(self, q: str) -> int | None:
        """The time of the one row a `SELECT last(...)` answers; None when nothing matched."""
        series = self._query(q)
        return int(series[0]["values"][0][0]) if series else None

    def _ingest_seen_ns(self) -> int | None:
        """Time of the newest self-metric within the inventory window."""
        return self._last_ns(f'SELECT last("lines_read") FROM {self.ingest_target} '
                             f"WHERE {self._window(self.s.inventory_days * 1440)}")

    def _future_last_ns(self) -> int | None:
        return self._last_ns(f"SELECT last({influx.ident(POWER_FIELD)}) FROM {self.target} "
                             f"WHERE {self._window(self.s.inventory_days * 1440, future=True)}")

    def _sun(self, at_ns: int) -> float:
        latitude, longitude = self.s.latitude, self.s.longitude
        assert latitude is not None and longitude is not None  # asked only when located
        return sun.elevation(latitude, longitude, at_ns / NS)

    # ------------------------------------------------------------------ judging

    def _judge(self) -> Verdict:
        s, f = self.s, self.facts
        f.nodes = self._nodes()
        silence = int(s.node_silence_min * NS_PER_MIN)
        f.reporting = sum(1 for n in f.nodes if self.now_ns - n.last_ns <= silence)
        if s.located:
            f.sun_elevation = round(self._sun(self.now_ns), 2)
        ingest = self._ingest_rows()
        lag = f.lag_min()

        verdict = self._ingest_fault(ingest, lag)
        if verdict:
            return verdict
        if not f.nodes and not self._has_series():
            return Verdict("no_data",
                           f"Nothing has ever been written to {self.target} in '{s.influx.db}': check "
                           f"that the Telegraf data instance runs `tigo-execd run` and writes there.")
        limit = s.day_lag_min if s.located else s.max_lag_min
        if lag is not None and lag <= limit:
            return self._fresh(lag)
        if s.located and self._night(limit):
            return Verdict("night", self._night_message(limit))
        return self._stale(ingest, lag, limit)

    def _ingest_fault(self, ingest: dict[str, list[dict[str, Any]]], lag: float | None) -> Verdict | None:
        window = _minutes(self.s.ingest_window_min)
        if not ingest:
            fresh = lag is not None and lag <= self.s.ingest_window_min
            seen = None if fresh else self._ingest_seen_ns()
            if seen is not None:
                return Verdict("ingest_stopped",
                               f"tigo-execd run has written no self-metrics ({self.s.ingest_measurement})"
                               f" since {iso_utc(seen)}: check the Telegraf data instance "
                               f"(systemctl status telegraf; journalctl -u telegraf).")
            return None
        for source, rows in ingest.items():
            if all(r.get("source_connected") == 0 for r in rows):
                reconnects = rows[-1].get("source_reconnects")
                tries = f" after {reconnects} reconnects" if reconnects else ""
                return Verdict("source_disconnected",
                               f"The bus source ({source}) has been disconnected for over {window} min"
                               f"{tries}: check that the RS-485 adapter is plugged in or the TCP "
                               f"converter is powered and reachable at the configured address.")
        for source, rows in ingest.items():
            uses_taptap = source == "taptap-cmd" or any((r.get("taptap_starts") or 0) > 0 for r in rows)
            if uses_taptap and all(r.get("taptap_running") == 0 for r in rows):
                starts = rows[-1].get("taptap_starts") or 0
                return Verdict("taptap_not_running",
                               f"taptap has not been running for over {window} min ({starts} starts): "
                               f"read its errors in the Telegraf log (journalctl -u telegraf) and check "
                               f"the taptap path and serial port permissions (group dialout).")
        return None

    def _fresh(self, lag: float) -> Verdict:
        f, s = self.facts, self.s
        assert f.nodes is not None
        silence = int(s.node_silence_min * NS_PER_MIN)
        silent = [n for n in f.nodes if self.now_ns - n.last_ns > silence]
        settled = lag <= s.node_silence_min and (
            not s.located or min(f.sun_elevation or 0.0,
                                 self._sun(self.now_ns - silence)) >= s.day_elevation)
        if silent and settled:
            listed = ", ".join(n.label() for n in silent[:3]) + (", ..." if len(silent) > 3 else "")
            return Verdict("nodes_silent",
                           f"{len(silent)} of {len(f.nodes)} optimizers have sent nothing for over "
                           f"{_minutes(s.node_silence_min)} min while the others report ({listed}): "
                           f"check their panels, connectors and cabling.", silent)
        return Verdict("healthy", f"{f.reporting} of {len(f.nodes)} optimizers reporting, newest report "
                                  f"{_minutes(lag)} min old.")

    def _night(self, limit: float) -> bool:
        """Night, or the sun rose above --day-elevation less than `limit` minutes ago."""
        earlier = self._sun(self.now_ns - int(limit * NS_PER_MIN))
        return min(self.facts.sun_elevation or 0.0, earlier) < self.s.day_elevation

    def _night_message(self, limit: float) -> str:
        elevation = self.facts.sun_elevation or 0.0
        if elevation < self.s.day_elevation:
            return (f"The sun is at {elevation:.1f} deg (below {self.s.day_elevation:g} deg): the "
                    f"optimizers sleep, reports resume after sunrise; nothing to do.")
        return (f"The sun rose above {self.s.day_elevation:g} deg less than {_minutes(limit)} min "
                f"ago: waiting for the optimizers to wake up; nothing to do yet.")

    def _stale(self, ingest: dict[str, list[dict[str, Any]]], lag: float | None, limit: float) -> Verdict:
        age = (f"The newest report is {_minutes(lag)} min old (limit {_minutes(limit)} min)"
               if lag is not None else
               f"No report in the last {self.s.inventory_days:g} days")
        future = self._future_last_ns()
        if future is not None:
            ahead = (future - self.now_ns) / NS_PER_MIN
            return Verdict("stale_data",
                           f"{age} but reports are stored up to {_minutes(ahead)} min in the future: "
                           f"fix the clock of the machine running taptap (NTP) and of this one.")
        if not self.s.located:  # at night the bus looks broken too: name no cause that may be wrong
            return Verdict("stale_data",
                           f"{age}; without --latitude/--longitude night cannot be told from an "
                           f"outage: set them to stop night alarms and to get the cause named.")
        for source, rows in ingest.items():
            verdict = _diagnose(source, rows, age, limit)
            if verdict:
                return verdict
        if not ingest:
            return Verdict("stale_data",
                           f"{age} and tigo-execd run writes no self-metrics: check that the Telegraf "
                           f"data instance runs (systemctl status telegraf) and can write to InfluxDB.")
        return Verdict("stale_data",
                       f"{age} although tigo-execd decodes reports: check the InfluxDB output of the "
                       f"Telegraf data instance (journalctl -u telegraf) and that --db, --rp and "
                       f"--measurement match what it writes.")


def _delta(rows: list[dict[str, Any]], key: str) -> int:
    """Growth of a cumulative counter over the rows; a restart (counter went down) counts from 0."""
    values: list[int] = [r[key] for r in rows if r.get(key) is not None]
    if not values:
        return 0
    if len(values) == 1:
        return values[0]
    return values[-1] - values[0] if values[-1] >= values[0] else values[-1]


def _diagnose(source: str, rows: list[dict[str, Any]], age: str, limit: float) -> Verdict | None:
    """Why a source delivers no data in daylight, from its newest self-metrics; None if it looks fine."""
    newest = rows[-1]
    report_age = newest.get("last_report_age_s")
    reports_fresh = report_age is not None and report_age <= limit * 60
    if "bus_bytes" in newest and newest["bus_bytes"] is not None:
        byte_age = newest.get("last_byte_age_s")
        if byte_age is None or byte_age > BUS_QUIET_S:
            return Verdict("bus_silent",
                           f"{age} and no byte has come from the RS-485 bus ({source}) for over "
                           f"{BUS_QUIET_S:.0f} s: check the wiring to the CCA (A and B swapped?), the "
                           f"port name and that the CCA is powered.")
    elif not reports_fresh and _delta(rows, "lines_read") == 0:
        return Verdict("bus_silent",
                       f"{age} and taptap prints nothing: check the RS-485 wiring (A and B swapped?), "
                       f"the port and the CCA's power; if they are fine, update taptap (old builds "
                       f"print nothing for CCA firmware 4.0.x).")
    if not reports_fresh:
        return Verdict("no_reports_decoded",
                       f"{age}: the bus is busy but no power report was decoded ({source}); update "
                       f"taptap and tigo-execd, the CCA firmware is probably newer than they understand.")
    return None


def health_lines(verdict: Verdict, facts: Facts,
                 extra: dict[str, lineproto.Field | None] | None = None) -> str:
    """The `tigo_health` line (plus `extra` fields) and one `tigo_node_health` line per silent
    optimizer."""
    nodes, lag, last = facts.nodes, facts.lag_min(), facts.last_ns
    listed = ", ".join(n.label() for n in verdict.silent[:MAX_LISTED_NODES])
    if len(verdict.silent) > MAX_LISTED_NODES:
        listed += f", +{len(verdict.silent) - MAX_LISTED_NODES} more"
    known = nodes is not None
    health: dict[str, lineproto.Field | None] = {
        "status": verdict.status,
        "code": CODES[verdict.status],
        "reason": verdict.reason,
        "message": verdict.message,
        "lag_min": None if lag is None else round(lag, 2),
        "last_ts_utc": None if last is None else iso_utc(last),
        "nodes_expected": len(nodes) if nodes is not None else None,
        "nodes_reporting": facts.reporting,
        "nodes_silent": len(verdict.silent) if known else None,
        "silent_nodes": listed if known else None,
        "sun_elevation": facts.sun_elevation,
        "faults": facts.faults,
        "fault_panels": facts.fault_panels,
        **(extra or {}),
    }
    out = [lineproto.line(measurements.HEALTH, {}, health, facts.now_ns)]
    for n in verdict.silent:
        tags = {"gateway_id": n.gateway_id, "node_id": n.node_id, "barcode": n.barcode or ""}
        out.append(lineproto.line(measurements.NODE_HEALTH, tags, {
            "status": WARN, "code": CODES[WARN], "reason": "node_silent",
            "lag_min": round((facts.now_ns - n.last_ns) / NS_PER_MIN, 2),
            "last_ts_utc": iso_utc(n.last_ns)}, facts.now_ns))
    return "".join(line for line in out if line)


# ------------------------------------------------------------------ panel faults (hourly)

class PanelFaults:
    """`tigo-execd faults` beside the minute checks, at most once per `every_s`: the analysis takes
    seconds, so it runs as a child process whose JSON goes to a temporary file. The check loop only
    looks whether the child has finished (`poll`, never a wait), so no check is delayed by it, and
    uses the last finished result. Each new complete day of the result is written once as
    `tigo_panel_day` lines (a restart rewrites the same points, which InfluxDB overwrites)."""

    def __init__(self, argv: list[str], env: dict[str, str], every_s: float) -> None:
        self.argv, self.env, self.every_s = argv, env, every_s
        self.child: subprocess.Popen[bytes] | None = None
        self.out: IO[bytes] | None = None
        self.started = -math.inf
        self.warns: list[dict[str, Any]] | None = None  # warn findings of the last finished run
        self.day_lines = ""                              # tigo_panel_day lines not yet written
        self.written_day: int | None = None

    def tick(self) -> None:
        """Collect a finished run (or end one that outlived its period); start the next when due."""
        if self.child is not None and self.child.poll() is None and \
                time.monotonic() - self.started >= max(self.every_s, MAX_FAULTS_S):
            log.warn(f"watchdog: tigo-execd faults still runs after {max(self.every_s, MAX_FAULTS_S):.0f} s: "
                     f"ended (is InfluxDB slow?)", key="faults_failed")
            self.stop()
        if self.child is not None and self.child.poll() is not None:
            self._collect(self.child.returncode)
        if self.child is None and self.every_s > 0 and time.monotonic() - self.started >= self.every_s:
            self.started = time.monotonic()
            self.out = tempfile.TemporaryFile()  # noqa: SIM115 - open until the child has finished
            log.debug(f"watchdog: starting {' '.join(self.argv)}")
            self.child = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self.out,
                                          env=self.env)  # stderr: the watchdog's, the Telegraf log

    def _collect(self, code: int) -> None:
        assert self.out is not None
        self.out.seek(0)
        text = self.out.read()
        self.out.close()
        self.child = self.out = None
        if code not in (exitcodes.OK, exitcodes.WARN):  # the child said why on stderr
            log.warn(f"watchdog: tigo-execd faults exited {code}; keeping the previous panel faults",
                     key="faults_failed")
            return
        try:
            result = orjson.loads(text)
            self.warns = [f for f in result["findings"] if f["severity"] == "warn"]
            days: list[dict[str, Any]] = result["panel_days"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            log.warn(f"watchdog: cannot read the output of tigo-execd faults: {exc}", key="faults_failed")
            return
        newest = max((d["time_s"] for d in days), default=None)
        if newest is not None and newest != self.written_day:
            self.written_day = newest
            lines = (lineproto.line(measurements.PANEL_DAY, d["tags"], d["fields"], d["time_s"] * NS)
                     for d in days if d["time_s"] == newest)
            self.day_lines = "".join(line for line in lines if line)

    def judge(self, verdict: Verdict, facts: Facts) -> Verdict:
        """Fill the facts' fault fields; warn findings turn `healthy` into `panel_fault`."""
        if self.warns is None:
            return verdict
        facts.faults = len(self.warns)
        labels = [f"{_fault_label(f)} {f['kind']}" for f in self.warns]
        facts.fault_panels = ", ".join(labels[:MAX_LISTED_NODES]) + (
            f", +{len(labels) - MAX_LISTED_NODES} more" if len(labels) > MAX_LISTED_NODES else "")
        if verdict.reason != "healthy" or not self.warns:
            return verdict
        listed = ", ".join(labels[:3]) + (", ..." if len(labels) > 3 else "")
        return Verdict("panel_fault",
                       f"{len(labels)} panel fault{'s' * (len(labels) != 1)} ({listed}); "
                       f"{verdict.message} Run `tigo-execd faults` for the evidence and what to check "
                       f"on the roof.")

    def lines(self) -> str:
        """The pending tigo_panel_day lines, once."""
        out, self.day_lines = self.day_lines, ""
        return out

    def stop(self) -> None:
        if self.child is not None:
            self.child.terminate()
            self.child.wait()


def _fault_label(f: dict[str, Any]) -> str:
    if f.get("node_id") is None:
        return f"gateway {f['gateway_id']}"
    ids = f"{f['gateway_id']}/{f['node_id']}"
    name = f.get("panel") or f.get("barcode")
    return f"{ids} ({name})" if name else ids


def panel_faults(args: argparse.Namespace, s: Settings) -> PanelFaults:
    """The hourly analysis with the watchdog's own settings; credentials go to the child through
    its environment, never its command line."""
    argv = [sys.executable, "-m", "tigo_execd", "faults", "--format", "json-days",
            "--influx-url", s.influx.url, "--db", s.influx.db, "--rp", s.rp,
            "--measurement", s.measurement, "--timeout", f"{s.influx.timeout:g}",
            "--latitude", "" if s.latitude is None else repr(s.latitude),
            "--longitude", "" if s.longitude is None else repr(s.longitude),
            "--log-level", "warn"]
    if args.now is not None:
        argv += ["--now", iso_utc(args.now)]
    if args.layout:  # its faces with an azimuth are peer groups
        argv += ["--layout", str(args.layout)]
    env = {k: v for k, v in os.environ.items() if k not in ("INFLUX_USER", "INFLUX_PASS")}
    env.update({k: v for k, v in (("INFLUX_USER", s.influx.user), ("INFLUX_PASS", s.influx.password)) if v})
    return PanelFaults(argv, env, args.faults_every_min * 60)


def summary(verdict: Verdict, facts: Facts) -> str:
    """One line for a person: `STATUS reason lag_min=.. last_ts_utc=.. nodes=R/E: message`."""
    parts = [verdict.status, verdict.reason]
    lag = facts.lag_min()
    if lag is not None:
        parts += [f"lag_min={lag:.1f}", f"last_ts_utc={iso_utc(facts.last_ns or 0)}"]
    if facts.nodes is not None:
        parts.append(f"nodes={facts.reporting}/{len(facts.nodes)}")
    if facts.sun_elevation is not None:
        parts.append(f"sun_elevation={facts.sun_elevation:.1f}")
    return " ".join(parts) + ": " + verdict.message


def register(sub: Subparsers) -> None:
    p = sub.add_parser("watchdog", help="health check of the data flow (Telegraf inputs.execd, STDIN)",
                       description="Check that reports arrive in InfluxDB and say why not. Without "
                                   "--once: one check per line on stdin (Telegraf execd, signal = "
                                   "\"STDIN\"), line protocol on stdout. Credentials: environment "
                                   "INFLUX_USER / INFLUX_PASS.")
    p.add_argument("--once", action="store_true",
                   help="run one check, print a summary, exit "
                        + " / ".join(f"{code} {status}" for status, code in CODES.items()))
    influx.add_arguments(p)
    p.add_argument("--ingest-measurement", default=measurements.INGEST,
                   help=f"measurement of tigo-execd run's self-metrics (default: {measurements.INGEST})")
    p.add_argument("--latitude", type=argtypes.optional_number,
                   help="site latitude in degrees, north positive (empty = unknown)")
    p.add_argument("--longitude", type=argtypes.optional_number,
                   help="site longitude in degrees, east positive (empty = unknown)")
    p.add_argument("--max-lag-min", type=argtypes.number(0, above=True), default=240.0, metavar="MIN",
                   help="staleness limit without a location, as the old check (default: 240)")
    p.add_argument("--day-lag-min", type=argtypes.number(0, above=True), default=15.0, metavar="MIN",
                   help="staleness limit in daylight when the location is known (default: 15)")
    p.add_argument("--node-silence-min", type=argtypes.number(0, above=True), default=30.0, metavar="MIN",
                   help="an optimizer silent this long while others report is listed (default: 30)")
    p.add_argument("--day-elevation", type=float, default=5.0, metavar="DEG",
                   help="sun elevation above which reports are expected (default: 5)")
    p.add_argument("--inventory-days", type=argtypes.number(0, above=True), default=7.0, metavar="DAYS",
                   help="optimizers seen in this many days are expected to report (default: 7)")
    p.add_argument("--ingest-window-min", type=argtypes.number(0, above=True), default=10.0, metavar="MIN",
                   help="window of tigo_ingest self-metrics looked at (default: 10)")
    p.add_argument("--faults-every-min", type=argtypes.number(0), default=60.0, metavar="MIN",
                   help="run the panel-fault analysis (tigo-execd faults) at most this often, not with "
                        "--once; 0 = never (default: 60)")
    autoheal.add_arguments(p)
    layout_file.add_arguments(p)
    p.add_argument("--now", type=argtypes.rfc3339_ns, help=argparse.SUPPRESS)  # tests: a fixed clock
    add_log_level(p)
    p.set_defaults(func=main)


def settings_from(args: argparse.Namespace) -> Settings:
    sun.check_location(args.latitude, args.longitude)
    if args.timeout <= 0:
        raise ValueError("--timeout must be a positive number of seconds")
    return Settings(influx.from_args(args), args.rp, args.measurement, args.ingest_measurement, args.latitude,
                    args.longitude, args.max_lag_min, args.day_lag_min, args.node_silence_min,
                    args.day_elevation, args.inventory_days, args.ingest_window_min)


def check(settings: Settings, now_ns: int) -> tuple[Verdict, Facts]:
    c = Check(settings, now_ns)
    verdict = c.run()
    return verdict, c.facts


def main(args: argparse.Namespace) -> int:
    try:
        settings = settings_from(args)
    except ValueError as exc:
        raise exitcodes.Failure(str(exc), exitcodes.USAGE) from None
    clock: Callable[[], int] = (lambda: args.now) if args.now is not None else time.time_ns
    if not settings.located:
        log.info("watchdog: no --latitude/--longitude, so night cannot be told from an outage: "
                 f"data older than --max-lag-min {args.max_lag_min:g} min is CRIT, day or night")
    if args.once:
        verdict, facts = check(settings, clock())
        print(summary(verdict, facts), flush=True)
        if facts.failure:  # not a verdict on the data flow: the check could not be made
            raise facts.failure
        return CODES[verdict.status]
    waiting_for_telegraf("watchdog", "runs one check")
    faults = panel_faults(args, settings)
    healing = autoheal.from_args(args, settings.influx, settings.rp)
    try:
        for _ in iter(sys.stdin.buffer.readline, b""):  # one check per "\n" from Telegraf, until EOF
            faults.tick()
            verdict, facts = check(settings, clock())
            verdict = faults.judge(verdict, facts)
            extra = healing.after_check(verdict.reason, facts.now_ns) if healing else None
            try:
                sys.stdout.write(health_lines(verdict, facts, extra) + faults.lines())
                sys.stdout.flush()
            except BrokenPipeError:
                return exitcodes.OK
    finally:
        faults.stop()
    return exitcodes.OK
