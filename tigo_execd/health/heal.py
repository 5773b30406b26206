"""`tigo-execd heal`: write back into InfluxDB the reports the journal holds and InfluxDB lacks.

It compares, hour by hour and optimizer by optimizer, how many reports the journal (journal.py)
holds with how many InfluxDB holds (`SELECT count(power_w) ... GROUP BY time(1h), gateway_id,
node_id`, one day per query), and rewrites the journal's lines of the (hour, optimizer) pairs that
InfluxDB has fewer of, in batches of BATCH_LINES. Rewriting a point InfluxDB already has changes
nothing (same series and timestamp = the same point), so a heal is harmless and a second run finds
nothing to do. Every line carries its measurement, so a `run --measurement` other than the default
is healed into its own measurement. Reports younger than SETTLE_NS are left alone: they may still
be on their way through Telegraf.

The work is a generator (`Healer.steps`) that yields after each file read, query or batch written:
the command runs it to the end, the watchdog (autoheal.py) a slice per check.
"""

from __future__ import annotations

import argparse
import re
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tigo_execd import argtypes, exitcodes, influx, journal
from tigo_execd.analysis import rollup
from tigo_execd.cli import Subparsers, add_log_level
from tigo_execd.clock import NS, iso_utc
from tigo_execd.influx import Influx, InfluxError, InfluxNoDatabase
from tigo_execd.journal import HOUR_NS
from tigo_execd.log import log

SETTLE_NS = 120 * NS      # Telegraf flushes every 10 s and retries: younger reports may be on the way
QUERY_SPAN_NS = 24 * HOUR_NS
BATCH_LINES = 5000
COUNTED_FIELD = "power_w"  # in every power report (schema contract)
_SERIES = re.compile(rb"(?:[^\\ ]|\\.)+")       # measurement and tags: up to the first unescaped space
_MEASUREMENT = re.compile(rb"(?:[^\\, ]|\\.)+")
_GATEWAY = re.compile(rb",gateway_id=([^,]+)")
_NODE = re.compile(rb",node_id=([^,]+)")

Key = tuple[str, int, str, str]  # measurement, hour (ns), gateway_id, node_id


def parse(line: bytes) -> tuple[Key, bytes, int] | None:
    """(key, series, timestamp) of a journal line; None for one that is not a power report."""
    series = _SERIES.match(line)
    ts = line[line.rfind(b" ") + 1:]
    if series is None or not ts.isdigit():
        return None
    gateway = _GATEWAY.search(line, 0, series.end())
    node = _NODE.search(line, 0, series.end())
    if gateway is None or node is None:
        return None
    measurement = _MEASUREMENT.match(line)
    assert measurement is not None  # series matched, so it starts with a measurement
    name = measurement[0].decode("utf-8", "replace").replace("\\,", ",").replace("\\ ", " ")
    t = int(ts)
    return (name, t - t % HOUR_NS, gateway[1].decode(), node[1].decode()), series[0], t


@dataclass
class Summary:
    """Reports per key in one journal file, cached while the file is unchanged and complete."""

    stamp: tuple[int, int]  # size, mtime
    counts: dict[Key, int]


@dataclass
class Result:
    files: int = 0
    torn: int = 0                 # files whose end was torn (power loss): their complete lines count
    journal_reports: int = 0      # within the window
    unreadable: int = 0           # lines that are not power reports
    keys: int = 0                 # (hour, optimizer) pairs compared
    first_ns: int | None = None
    last_ns: int | None = None
    missing: dict[tuple[str, int], int] = field(default_factory=dict)  # (measurement, hour) -> reports
    restored: int = 0             # reports InfluxDB lacked and now has (or would have, dry run)
    written: int = 0              # lines written (a batch holds all the lines of a key)
    rolled_up_days: int = 0       # days whose rollups were recomputed (when rollups are set up)

    @property
    def healed_hours(self) -> list[tuple[str, int]]:
        """The (measurement, hour) pairs written to: what rollups must recompute."""
        return sorted(self.missing)


class NoDatabaseToHeal(InfluxNoDatabase):
    """The database to heal is missing and --create-db was not given."""

    hint = ""


class Healer:
    """Compares the journal with InfluxDB and writes back what is missing."""

    def __init__(self, directory: Path, client: Influx, rp: str = "", dry_run: bool = False,
                 create_db: bool = False) -> None:
        self.dir, self.client, self.rp, self.dry_run = directory, client, rp, dry_run
        self.create_db = create_db  # else a missing database (a typo in --db) ends the heal
        self._cache: dict[Path, Summary] = {}
        self._distinct: dict[Key, tuple[int, int]] = {}  # key -> (journal count, distinct reports)

    def steps(self, since_ns: int, until_ns: int, result: Result) -> Iterator[None]:
        """The heal of [since, until) in small steps; InfluxError ends it."""
        since_ns -= since_ns % HOUR_NS
        self._distinct = {k: v for k, v in self._distinct.items() if k[1] >= since_ns}
        counts: dict[Key, int] = defaultdict(int)
        files_of: dict[Key, list[Path]] = defaultdict(list)
        files = journal.journal_files(self.dir)
        self._cache = {p: s for p, s in self._cache.items() if p in files}
        for path in files:
            for key, n in self._summary(path, until_ns, result).items():
                if key[1] >= since_ns:
                    counts[key] += n
                    files_of[key].append(path)
            yield
        result.files = len(files)
        result.journal_reports = sum(counts.values())
        result.keys = len(counts)
        stored: dict[Key, int] = {}
        for name in sorted({k[0] for k in counts}):
            hours = [k[1] for k in counts if k[0] == name]
            start = min(hours)
            while start < min(max(hours) + HOUR_NS, until_ns):
                end = min(start + QUERY_SPAN_NS, until_ns)
                stored.update(self._stored(name, start, end))
                start = end
                yield
        missing = [k for k, n in counts.items()
                   if self._known_distinct(k, n) > stored.get(k, 0)]
        by_hour: dict[tuple[str, int], list[Key]] = defaultdict(list)
        for key in missing:
            by_hour[key[0], key[1]].append(key)
        for hour in sorted(by_hour):
            yield from self._restore(by_hour[hour], files_of, counts, stored, until_ns, result)
        if result.healed_hours and not self.dry_run:
            yield from self._roll_up(result)

    def _roll_up(self, result: Result) -> Iterator[None]:
        """The rollups of the healed days, where `tigo-execd rollup` set them up: its continuous
        queries recompute only their last hours, so an older healed hour would stay short there."""
        if not rollup.rolled_up(self.client, self.client.db):
            return
        rp = rollup.resolve_rp(self.client, self.client.db, self.rp)
        for name, day in sorted({(name, hour - hour % rollup.DAY_NS) for name, hour in result.healed_hours}):
            rollup.roll_up_day(self.client, rollup.Names(self.client.db, rp, name), day, retry_s=0)
            result.rolled_up_days += 1
            yield

    def _summary(self, path: Path, until_ns: int, result: Result) -> dict[Key, int]:
        try:
            st = path.stat()
        except OSError:
            return {}
        stamp = (st.st_size, st.st_mtime_ns)
        cached = self._cache.get(path)
        if cached is not None and cached.stamp == stamp:
            return cached.counts
        read = journal.read_file(path)
        result.torn += read.torn
        counts: dict[Key, int] = defaultdict(int)
        newest = 0
        for line in read.lines:
            parsed = parse(line)
            if parsed is None:
                result.unreadable += 1
                continue
            key, _, ts = parsed
            newest = max(newest, ts)
            if ts < until_ns:
                counts[key] += 1
                result.first_ns = ts if result.first_ns is None else min(result.first_ns, ts)
                result.last_ns = ts if result.last_ns is None else max(result.last_ns, ts)
        if newest < until_ns:  # nothing left out: valid for every later heal while unchanged
            self._cache[path] = Summary(stamp, counts)
        return counts

    def _known_distinct(self, key: Key, count: int) -> int:
        """The journal's count, or the distinct reports in it when a restore found duplicates."""
        known = self._distinct.get(key)
        return known[1] if known and known[0] == count else count

    def _stored(self, name: str, start: int, end: int) -> dict[Key, int]:
        q = (f"SELECT count({influx.ident(COUNTED_FIELD)}) FROM {influx.target(self.rp, name)} "
             f"WHERE time >= {start} AND time < {end} "
             f'GROUP BY time(1h), "gateway_id", "node_id" fill(none)')
        try:
            series = self.client.query(q)
        except InfluxNoDatabase as exc:
            if not self.create_db:
                raise NoDatabaseToHeal(f"{exc.reason}; heal writes only into a database that exists: "
                                       f"fix --db, or give --create-db to create it") from None
            if not self.dry_run:
                log.info(f"heal: database '{self.client.db}' does not exist: creating it (--create-db)")
                self.client.query(f"CREATE DATABASE {influx.ident(self.client.db)}")
            return {}
        return {(name, int(row["time"]), tags.get("gateway_id", ""), tags.get("node_id", "")):
                int(row["count"]) for tags, row in influx.rows(series)}

    def _restore(self, keys: list[Key], files_of: dict[Key, list[Path]], counts: dict[Key, int],
                 stored: dict[Key, int], until_ns: int, result: Result) -> Iterator[None]:
        """Rewrite every report of these keys (one hour of one measurement), each once."""
        wanted = set(keys)
        reports: dict[Key, dict[tuple[bytes, int], bytes]] = {k: {} for k in keys}
        for path in sorted({p for k in keys for p in files_of[k]}):
            for line in journal.read_file(path).lines:
                parsed = parse(line)
                if parsed is not None and parsed[0] in wanted and parsed[2] < until_ns:
                    reports[parsed[0]][parsed[1], parsed[2]] = line
            yield
        batch: list[bytes] = []
        for key in keys:
            distinct = len(reports[key])
            self._distinct[key] = (counts[key], distinct)
            lacking = distinct - stored.get(key, 0)
            if lacking <= 0:
                continue  # the journal only held some reports twice
            result.missing[key[:2]] = result.missing.get(key[:2], 0) + lacking
            result.restored += lacking
            batch += reports[key].values()
            if len(batch) >= BATCH_LINES:
                self._write(batch, result)
                batch = []
                yield
        if batch:
            self._write(batch, result)
            yield
        name, hour_ns = keys[0][:2]
        if result.missing.get((name, hour_ns)):
            log.info(f"heal: {name} {iso_utc(hour_ns, zulu=True)}: "
                     f"{'would restore' if self.dry_run else 'restored'} "
                     f"{result.missing[name, hour_ns]} reports")

    def _write(self, batch: list[bytes], result: Result) -> None:
        if not self.dry_run:
            try:
                self.client.write(b"\n".join(batch) + b"\n", self.rp or None)
            except InfluxError as exc:
                if "partial write" not in str(exc):
                    raise
                # e.g. points older than the retention policy keeps: the others were written
                log.warn(f"heal: InfluxDB kept only part of a batch: {exc}", key="heal-partial")
        result.written += len(batch)


def summary(result: Result, directory: Path, db: str, dry_run: bool) -> str:
    """What a heal found and did, for people."""
    span = (f" from {iso_utc(result.first_ns, zulu=True)} to {iso_utc(result.last_ns, zulu=True)}"
            if result.first_ns is not None and result.last_ns is not None else "")
    torn = f", {result.torn} with a torn end (power loss; their complete lines count)" \
        if result.torn else ""
    skipped = f" ({result.unreadable} lines that are not power reports skipped)" \
        if result.unreadable else ""
    out = [f"journal {directory}: {result.files} files{torn}, {result.journal_reports} reports{span}"
           f"{skipped}",
           f"compared {result.keys} optimizer-hours with InfluxDB database '{db}': "
           f"{len(result.missing)} hours lack reports"]
    for (name, hour), n in sorted(result.missing.items()):
        out.append(f"  {iso_utc(hour, zulu=True)} {name}: {n} reports missing")
    verb = "would restore" if dry_run else "restored"
    out.append(f"{verb} {result.restored} reports ({result.written} lines written"
               f"{' if not a dry run' if dry_run else ''})" if result.restored
               else "nothing to do: InfluxDB holds every report of the journal")
    if result.rolled_up_days:
        out.append(f"recomputed the rollups of {result.rolled_up_days} healed days")
    return "\n".join(out)


def register(sub: Subparsers) -> None:
    p = sub.add_parser("heal", help="write back into InfluxDB the reports of the journal it lacks",
                       description="Compare the journal of `tigo-execd run` with InfluxDB, hour by "
                                   "hour and optimizer by optimizer, and write back the reports "
                                   "InfluxDB lacks. Credentials: environment INFLUX_USER / "
                                   "INFLUX_PASS.")
    p.add_argument("--journal", type=Path, default=None, metavar="DIR",
                   help=f"the journal directory (default: {journal.default_dir()})")
    influx.add_arguments(p, measurement=False)
    window = p.add_mutually_exclusive_group()
    window.add_argument("--since", type=argtypes.rfc3339_ns, metavar="RFC3339",
                        help="heal reports from this time on")
    window.add_argument("--days", type=argtypes.number(0, above=True), default=journal.DEFAULT_DAYS,
                        metavar="N",
                        help=f"heal the last N days (default: {journal.DEFAULT_DAYS:g})")
    p.add_argument("--dry-run", action="store_true", help="say what is missing, write nothing")
    p.add_argument("--create-db", action="store_true",
                   help="create the database (--db) when it does not exist; without it a missing "
                        "database, a typo most often, ends the heal with exit 70 and writes nothing")
    p.add_argument("--now", type=argtypes.rfc3339_ns, help=argparse.SUPPRESS)  # tests: a fixed clock
    add_log_level(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    now = args.now if args.now is not None else time.time_ns()
    since = args.since if args.since is not None else now - int(args.days * 24 * HOUR_NS)
    directory = args.journal or journal.default_dir()
    client = influx.from_args(args)
    if not directory.is_dir():
        raise exitcodes.Failure(f"no journal at {directory}: `tigo-execd run` keeps one for live "
                                f"sources (--journal); give its directory with --journal DIR",
                                exitcodes.NOINPUT)
    healer = Healer(directory, client, args.rp, args.dry_run, args.create_db)
    result = Result()
    log.info(f"heal: comparing {directory} with {client.url} database '{client.db}' from "
             f"{iso_utc(since, zulu=True)}{' (dry run)' if args.dry_run else ''}")
    for _ in healer.steps(since, now - SETTLE_NS, result):
        pass
    print(summary(result, directory, client.db, args.dry_run), flush=True)
    return exitcodes.OK
