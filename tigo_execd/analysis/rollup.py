"""`tigo-execd rollup`: 5-minute and 1-hour rollups of the power reports, live and for old history.

Live rollups are InfluxDB continuous queries (CQs), not Telegraf aggregators: a CQ groups by the
reports' own timestamps and, with RESAMPLE ... FOR, recomputes the last hour(s) on every run, so
reports that arrive late (Telegraf's buffer after an outage, a replayed taptap log) still land in
their bucket; Telegraf aggregators group by arrival window, drop what falls outside it and lose
their partial aggregates on a restart. History (and anything later than the CQs' window) is rolled
up by this command with the same SELECTs, run server-side with `SELECT ... INTO` one day at a time:
memory stays bounded whatever the span, and a bucket written twice is overwritten (same series and
timestamp), so re-running never duplicates anything.

Energy is each node's 5-minute mean power x 5 minutes, the definition the dashboard uses on the
raw reports, so energy from rollups equals energy from raw reports up to rounding.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

from tigo_execd import argtypes, exitcodes, influx, lineproto
from tigo_execd.cli import Terminated
from tigo_execd.influx import Influx, InfluxError, InfluxUnreachable, ident, retrying
from tigo_execd.log import log

ROLLUP_RP = "tigo_rollup"
RESOLUTION_MEASUREMENT = "tigo_resolution"  # what the dashboard reads to pick its resolution
PROGRESS_MEASUREMENT = "tigo_rollup_progress"
# Dashboard settings are written far in the future (2200-01-01) so that no retention policy, however
# short, ever expires them and no "last N days" query ever sees them.
SETTINGS_TIME_S = 7258118400
FIELDS = ("voltage_in_v", "voltage_out_v", "current_in_a", "current_out_a", "power_w", "duty_cycle",
          "temperature_c", "rssi")
DAY_NS = 86400 * 10**9  # one chunk of the backfill: a day


@dataclass(frozen=True)
class Resolution:
    suffix: str          # rollup measurement = raw measurement + suffix
    bucket: str          # GROUP BY time(...)
    min_range_s: int     # the dashboard uses it for time ranges at least this long
    resample: str        # CQ: RESAMPLE EVERY bucket FOR resample (late reports within it are counted)


FINE = Resolution("_5m", "5m", 7 * 86400, "1h")
COARSE = Resolution("_1h", "1h", 60 * 86400, "3h")


@dataclass(frozen=True)
class Names:
    """Where the raw reports are and where their rollups go. `rp` is the raw reports' retention
    policy as resolved (never empty: a CQ is stored with the default RP's name anyway)."""
    db: str
    rp: str
    measurement: str

    @property
    def raw(self) -> str:
        return f"{ident(self.db)}.{ident(self.rp)}.{ident(self.measurement)}"

    def rollup(self, res: Resolution) -> str:
        return f"{ident(self.db)}.{ident(ROLLUP_RP)}.{ident(self.measurement + res.suffix)}"


def means() -> str:
    return ", ".join(f"mean({ident(f)}) AS {ident(f)}" for f in FIELDS)


def statements(n: Names) -> list[tuple[str, Resolution, str]]:
    """(CQ name, resolution, SELECT ... INTO without WHERE and GROUP BY) in the order they must run:
    the 1 h energy is summed from the 5 min rollup."""
    m = n.measurement
    fine = (f'SELECT {means()}, count("power_w") AS "reports", mean("power_w") / 12 AS "energy_wh" '
            f"INTO {n.rollup(FINE)} FROM {n.raw}")
    coarse = f'SELECT {means()}, count("power_w") AS "reports" INTO {n.rollup(COARSE)} FROM {n.raw}'
    energy = f'SELECT sum("energy_wh") AS "energy_wh" INTO {n.rollup(COARSE)} FROM {n.rollup(FINE)}'
    return [(f"{m}_rollup_5m", FINE, fine), (f"{m}_rollup_1h", COARSE, coarse),
            (f"{m}_rollup_1h_energy", COARSE, energy)]


def group_by(res: Resolution) -> str:
    return f" GROUP BY time({res.bucket}), *"


def create_rp(db: str) -> str:
    return f"CREATE RETENTION POLICY {ident(ROLLUP_RP)} ON {ident(db)} DURATION INF REPLICATION 1"


def create_cq(n: Names, name: str, res: Resolution, select: str) -> str:
    return (f"CREATE CONTINUOUS QUERY {ident(name)} ON {ident(n.db)} RESAMPLE EVERY {res.bucket} "
            f"FOR {res.resample} BEGIN {select}{group_by(res)} END")


def settings_lines(n: Names, raw_rp: str) -> bytes:
    """The dashboard's resolution table: for time ranges of at least min_range_s it reads
    rp.(measurement + suffix); raw_rp is --rp as given ("" = the default RP)."""
    tag = lineproto.tag_value(n.measurement)
    rows = [("", raw_rp, 0), (FINE.suffix, ROLLUP_RP, FINE.min_range_s),
            (COARSE.suffix, ROLLUP_RP, COARSE.min_range_s)]
    return "\n".join(
        f"{RESOLUTION_MEASUREMENT},measurement={tag} rp={lineproto.string_field(rp)},suffix=\"{suffix}\","
        f"min_range_s={lo}i {(SETTINGS_TIME_S + i) * 10**9}"
        for i, (suffix, rp, lo) in enumerate(rows)).encode()


def _norm(q: str) -> str:
    """A CQ compared the way InfluxDB shows it: without quotes, case or spaces."""
    return "".join(q.replace('"', "").split()).lower()


def _denied(exc: InfluxError) -> bool:
    return "not authorized" in str(exc) or "requires admin" in str(exc)


class NoPermission(Exception):
    """The user may not create retention policies or continuous queries."""


def resolve_rp(db: Influx, name: str, rp: str) -> str:
    """The raw reports' RP by name (the default one for ""); InfluxError when it is missing, as
    InfluxDB says of a query on it."""
    series = db.query(f"SHOW RETENTION POLICIES ON {ident(name)}")
    rows = [row for s in series for row in s["values"]]
    names = [row[0] for row in rows]
    if rp and rp not in names:
        raise InfluxError(f"retention policy {rp!r} does not exist in database {name!r} (--rp); it has: "
                     + ", ".join(names))
    return rp or next(row[0] for row in rows if row[-1] is True)


def first_report(db: Influx, n: Names) -> int | None:
    """Time (ns) of the oldest raw report, None when there is none."""
    series = db.query(f'SELECT first("power_w") FROM {n.raw}')
    return series[0]["values"][0][0] if series else None


def ensure_setup(db: Influx, n: Names, raw_rp: str) -> None:
    """Create the rollup RP and the CQs unless they are there as wanted; write the dashboard's table."""
    rps = {row[0] for s in db.query(f"SHOW RETENTION POLICIES ON {ident(n.db)}") for row in s["values"]}
    todo = [] if ROLLUP_RP in rps else [create_rp(n.db)]
    try:
        shown = db.query("SHOW CONTINUOUS QUERIES")
    except InfluxError as exc:
        raise NoPermission(str(exc)) if _denied(exc) else exc from None
    have = {row[0]: row[1] for s in shown if s["name"] == n.db for row in s.get("values", [])}
    for name, res, select in statements(n):
        create = create_cq(n, name, res, select)
        if name not in have:
            todo.append(create)
        elif _norm(have[name]) != _norm(create):
            todo += [f"DROP CONTINUOUS QUERY {ident(name)} ON {ident(n.db)}", create]
    for q in todo:
        try:
            db.query(q)
        except InfluxError as exc:
            raise NoPermission(str(exc)) if _denied(exc) else exc from None
        log.info(f"{q.split(' ON ')[0].lower()} on {n.db}")
    db.write(settings_lines(n, raw_rp))  # the default RP: where the dashboard looks, RP unknown


def admin_commands(n: Names) -> list[str]:
    """The shell commands an InfluxDB admin runs once when this user may not (-password '' prompts)."""
    lines = [create_rp(n.db)] + [create_cq(n, *s) for s in statements(n)]
    return [f"influx -username ADMIN -password '' -execute '{q}'" for q in lines]


# ---- backfill ----

def _progress_key(n: Names) -> str:
    tags = f"measurement={lineproto.tag_value(n.measurement)},rp={lineproto.tag_value(n.rp)}"
    return f"{PROGRESS_MEASUREMENT},{tags}"


def read_progress(db: Influx, n: Names) -> tuple[int, int, int] | None:
    """(from, until, done) in ns of the last backfill of this source, None when there was none."""
    series = db.query(f'SELECT "from", "until", "done" FROM {ident(n.db)}.{ident(ROLLUP_RP)}.'
                      f'{ident(PROGRESS_MEASUREMENT)} WHERE "measurement" = \'{_esc(n.measurement)}\' '
                      f"AND \"rp\" = '{_esc(n.rp)}' AND time >= {SETTINGS_TIME_S}s")
    if not series:
        return None
    _, frm, until, done = series[0]["values"][-1]
    return int(frm), int(until), int(done)


def write_progress(db: Influx, n: Names, frm: int, until: int, done: int) -> None:
    db.write(f"{_progress_key(n)} from={frm}i,until={until}i,done={done}i {SETTINGS_TIME_S * 10**9}".encode(),
             rp=ROLLUP_RP)


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def roll_up_day(db: Influx, n: Names, day: int, retry_s: float) -> int:
    """Roll up the UTC day starting at `day` at both resolutions (again: the same points are
    overwritten); returns the reports rolled up."""
    where = f" WHERE time >= {day} AND time < {day + DAY_NS}"
    for _name, res, select in statements(n):
        retrying(f"rolling up {_iso(day)[:10]}", partial(db.query, select + where + group_by(res)),
                   retry_s)
    count = f'SELECT sum("reports") FROM {n.rollup(FINE)}{where}'
    counted = retrying("counting", partial(db.query, count), retry_s)
    return int(counted[0]["values"][0][1]) if counted else 0


def rolled_up(db: Influx, name: str) -> bool:
    """Whether `tigo-execd rollup` has set up rollups in the database (its retention policy exists)."""
    return any(row[0] == ROLLUP_RP for s in db.query(f"SHOW RETENTION POLICIES ON {ident(name)}")
               for row in s["values"])


def backfill(db: Influx, n: Names, start: int, end: int, retry_s: float) -> int:
    """Roll up [start, end) one day at a time (both on day boundaries); returns the reports rolled
    up. Progress is recorded after each day, so a run cut short resumes where it stopped."""
    last = read_progress(db, n)
    origin = start
    if last and last[0] <= start < last[2] < last[1]:
        log.info(f"resuming the backfill interrupted at {_iso(last[2])}")
        start = last[2]
    days, reports = (end - start) // DAY_NS, 0
    for i, t in enumerate(range(start, end, DAY_NS), 1):
        reports += roll_up_day(db, n, t, retry_s)
        retrying("recording progress", partial(write_progress, db, n, origin, end, t + DAY_NS), retry_s)
        log.info(f"rolled up {_iso(t)[:10]} ({i}/{days} days, {reports} reports so far)")
    return reports


# ---- command line ----

def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from tigo_execd.cli import add_log_level

    p = subparsers.add_parser(
        "rollup", help="5 min and 1 h rollups of the power reports: live (continuous queries) and history",
        description="Create the rollup retention policy and continuous queries (idempotent) and roll up "
                    "the existing history, one day at a time, server-side. Safe to interrupt and re-run. "
                    "Credentials come from the environment: INFLUX_USER, INFLUX_PASS.")
    span = p.add_mutually_exclusive_group()
    span.add_argument("--days", type=argtypes.number(0, 100000), metavar="N",
                      help="roll up the last N days (0: only create what live rollups need); default: "
                           "all history")
    span.add_argument("--since", type=argtypes.rfc3339, metavar="RFC3339", help="roll up from this time on")
    p.add_argument("--retry-for", type=argtypes.number(0, 100000), default=60.0, metavar="S",
                   help="how long to wait for InfluxDB to come back mid-backfill before giving up "
                        "(default 60; a re-run resumes where it stopped)")
    influx.add_arguments(p, timeout=120.0)
    add_log_level(p)
    p.set_defaults(func=main)


def _day_floor(ns: int) -> int:
    return ns - ns % DAY_NS


def main(args: argparse.Namespace) -> int:
    db = influx.from_args(args)
    try:
        rp = retrying("connecting", partial(resolve_rp, db, args.db, args.rp), args.retry_for)
        n = Names(args.db, rp, args.measurement)
        first = first_report(db, n)
        if first is None:
            log.error(f"no reports in {args.db}.{rp}.{args.measurement}: check --db, --rp and "
                      f"--measurement (the measurement of `tigo-execd run`, default tigo_power_report)")
            return exitcodes.NOINPUT
        ensure_setup(db, n, args.rp)
        now = time.time_ns()
        if args.days == 0:
            log.info("live rollups are set up; no history rolled up (--days 0)")
            return exitcodes.OK
        if args.since is not None:
            start = int(args.since.timestamp()) * 10**9
        elif args.days is not None:
            start = now - int(args.days * 86400) * 10**9
        else:
            start = first
        start, end = _day_floor(max(start, first)), _day_floor(now) + DAY_NS
        began = time.monotonic()
        try:
            reports = backfill(db, n, start, end, args.retry_for)
        except (KeyboardInterrupt, Terminated):
            log.info("rollup: the same command run again resumes after the last day rolled up")
            raise
        log.info(f"rollup done: {_iso(start)} .. {_iso(min(end, now))}, {reports} reports in "
                 f"{time.monotonic() - began:.1f} s; live data is rolled up by continuous queries")
        return exitcodes.OK
    except NoPermission as exc:
        log.error(f"InfluxDB user {db.user or '(none)'} may not create retention policies or continuous "
                  f"queries ({exc}). Ask an admin to run these once, then run this again (it needs only "
                  "read and write access on the database then):")
        for command in admin_commands(n):
            log.error(command)
        return exitcodes.NOPERM
    except InfluxUnreachable:
        log.info("rollup: run the same command again when InfluxDB is back: it resumes where it stopped")
        raise
