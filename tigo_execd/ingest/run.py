"""`tigo-execd run`: the long-running execd input. Source -> convert -> stdout, plus self-metrics.

Data flows one way: a source (sources.py, bridge.py) yields taptap stdout bytes, the Converter
(convert.py) turns each line into line protocol, Output (output.py) writes it. Each chunk read is
written as soon as it is converted, so a lone report reaches Telegraf at once and a backlog goes out
in batches. Shutdown (stdin EOF from Telegraf, SIGTERM, SIGINT, stdout closed) stops the source,
collects what taptap still prints, flushes and exits 0 within 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from pathlib import Path
from typing import Any

from tigo_execd import exitcodes, journal, lineproto, measurements
from tigo_execd.bus.capture import ReplayFile
from tigo_execd.cli import Subparsers, add_log_level
from tigo_execd.clock import ClockWatch, TimeCheck
from tigo_execd.identity.store import Identity, state_path
from tigo_execd.identity.store import add_arguments as add_identity_arguments
from tigo_execd.ingest import bridge
from tigo_execd.ingest.convert import Converter
from tigo_execd.ingest.output import DEFAULT_MAX_BYTES, MB, Output, is_pipe
from tigo_execd.ingest.sources import DemoSource, JsonlSource, Source, TaptapSource
from tigo_execd.journal import Journal
from tigo_execd.linesplit import MAX_LINE, LineSplitter
from tigo_execd.log import log

SHUTDOWN_BUDGET = 1.5  # for the source to finish; the rest of 2 s is for stdout to take what is held
EXIT_BUDGET = 2.0
CLOCK_CHECK_DEFAULT = "auto"
SOURCE_OPTIONS = ("source", "taptap_cmd", "jsonl", "serial", "tcp", "replay")


def register(sub: Subparsers) -> None:
    p = sub.add_parser("run", help="convert taptap output to line protocol (Telegraf inputs.execd)",
                       description="Convert taptap output to InfluxDB line protocol on stdout. "
                                   "Exactly one source.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--taptap-cmd", metavar="CMD",
                     help='run this taptap command line, e.g. "taptap observe --serial /dev/ttyUSB0"')
    src.add_argument("--jsonl", metavar="PATH", help="read taptap JSON lines from PATH (- = stdin)")
    src.add_argument("--demo", action="store_true", help="print a bundled demo day ending now")
    src.add_argument("--source", metavar="SPEC",
                     help="one source as one string (for a Telegraf conf taking it from one "
                          "environment variable): /dev/PORT, tcp://HOST[:PORT], cmd:COMMAND or "
                          "jsonl:PATH")
    bridge.add_arguments(p, src)
    p.add_argument("--measurement", default=measurements.POWER_REPORT,
                   help=f"measurement for power reports (default: {measurements.POWER_REPORT})")
    p.add_argument("--stats-interval", type=float, default=60.0, metavar="S",
                   help=f"seconds between {measurements.INGEST} self-metric lines; 0 = off "
                        f"(default: 60)")
    p.add_argument("--max-buffer-mb", type=float, default=DEFAULT_MAX_BYTES / MB, metavar="MB",
                   help="line protocol held while Telegraf does not read stdout; beyond it the "
                        "oldest reports of a live source are dropped, counted and logged "
                        f"(default: {DEFAULT_MAX_BYTES / MB:g}, over an hour of 50 optimizers)")
    p.add_argument("--clock-check", choices=("auto", "on", "off"), default=CLOCK_CHECK_DEFAULT,
                   help="do not write reports dated before this release or >10 min ahead of the "
                        "host clock, and report the kernel's NTP status; auto = on for sources "
                        "that taptap dates by this host's clock (all but --jsonl and --demo) "
                        f"(default: {CLOCK_CHECK_DEFAULT})")
    add_identity_arguments(p)
    p.add_argument("--journal", default="auto", metavar="DIR",
                   help="also keep every power report in this directory, for `tigo-execd heal`; "
                        "'off' = no journal; 'auto' = the state directory's journal "
                        f"({journal.default_dir()}) for live sources (--taptap-cmd, --serial, "
                        "--tcp), none otherwise; never with --demo (default: auto)")
    p.add_argument("--journal-days", type=float, default=journal.DEFAULT_DAYS, metavar="N",
                   help=f"delete journal files older than N days (default: {journal.DEFAULT_DAYS:g})")
    p.add_argument("--journal-max-mb", type=float, default=journal.DEFAULT_MAX_MB, metavar="MB",
                   help="beyond this size the oldest journal files are deleted "
                        f"(default: {journal.DEFAULT_MAX_MB:g})")
    add_log_level(p)
    p.set_defaults(func=main)


def parse_source_spec(spec: str) -> tuple[str, str]:
    """`--source SPEC` -> (option, value) of the dedicated source option it stands for."""
    if spec.startswith("/dev/"):
        return "serial", spec
    for prefix, option in (("tcp://", "tcp"), ("cmd:", "taptap_cmd"), ("jsonl:", "jsonl")):
        if spec.startswith(prefix) and spec[len(prefix):].strip():
            return option, spec[len(prefix):]
    raise ValueError(f"--source {spec!r}: expected /dev/PORT, tcp://HOST[:PORT], cmd:COMMAND or "
                     f"jsonl:PATH")


def check_not_blank(args: argparse.Namespace) -> None:
    """An empty source option is a mistake (most often an empty TIGO_SOURCE), never "no source":
    only --demo prints made-up data."""
    for name in SOURCE_OPTIONS:
        value = getattr(args, name)
        if value is not None and not value.strip():
            raise ValueError(f"--{name.replace('_', '-')} is empty: name the bus source; with the "
                             f"Telegraf conf it is TIGO_SOURCE in /etc/default/telegraf, which "
                             f"tigo.conf passes as --source (only --demo prints the demo day)")


def make_source(args: argparse.Namespace) -> Source:
    check_not_blank(args)
    if args.source is not None:
        option, value = parse_source_spec(args.source)
        setattr(args, option, value)
    source = bridge.make_source(args)
    if source is not None:
        return source
    if args.taptap_cmd is not None:
        return TaptapSource.from_command(args.taptap_cmd)
    if args.jsonl is not None:
        return JsonlSource(args.jsonl)
    assert args.demo  # argparse requires exactly one source option
    return DemoSource()


def main(args: argparse.Namespace) -> int:
    try:
        lineproto.measurement(args.measurement)
        if args.stats_interval < 0:
            raise ValueError("--stats-interval must be 0 (off) or a positive number of seconds")
        if not args.max_buffer_mb > 0:
            raise ValueError("--max-buffer-mb must be a positive number of MiB")
        if not (args.journal_days > 0 and args.journal_max_mb > 0):
            raise ValueError("--journal-days and --journal-max-mb must be positive numbers")
        if not args.journal.strip():
            raise ValueError("--journal is empty: give a directory, 'auto' or 'off'")
        source = make_source(args)
    except ValueError as exc:
        raise exitcodes.Failure(str(exc), exitcodes.USAGE) from None
    except OSError as exc:
        raise exitcodes.Failure(f"cannot open {exc.filename}: {exc.strerror}",
                                exitcodes.NOINPUT) from None
    if args.demo:  # the demo's made-up optimizers neither read nor enter the real registry
        if args.state_file is not None and state_path(args.state_file):
            log.info(f"--demo leaves the node registry alone: {args.state_file} is neither read "
                     f"nor written")
        args.state_file = Path("")
    identity = Identity.from_args(args)
    converter = Converter(args.measurement, identity.registry, time_shift_ns=source.time_shift_ns)
    identity.counters = converter.counters
    clock = None
    if args.clock_check == "on" or (args.clock_check == "auto" and dated_here(source)):
        converter.time_check, clock = TimeCheck(), ClockWatch()
    source.watch_reports(lambda: converter.counters.reports)
    output = Output(max_bytes=int(args.max_buffer_mb * MB), drop=not can_wait(source))
    return asyncio.run(Ingest(source, converter, args.stats_interval, identity, output, clock,
                              make_journal(args, source)).run())


def make_journal(args: argparse.Namespace, source: Source) -> Journal | None:
    """The journal `--journal` asks for: `auto` keeps one for live sources only (a file or a
    replay can be read again; the demo's made-up reports must never be healed into a database)."""
    if args.journal == "off":
        return None
    if args.demo:
        if args.journal != "auto":
            log.info("--demo keeps no journal: its reports are made up")
        return None
    if args.journal == "auto":
        if not is_live(source):
            return None
        directory = journal.default_dir()
    else:
        directory = Path(args.journal)
    log.info(f"journal: keeping every report in {directory} ({args.journal_days:g} days, at most "
             f"{args.journal_max_mb:g} MiB), for `tigo-execd heal`")
    return Journal(directory, args.journal_days, int(args.journal_max_mb * MB))


def is_live(source: Source) -> bool:
    """A bus read now (taptap's command, a serial adapter, a TCP converter): what is not kept
    now is gone."""
    if isinstance(source, bridge.BridgeSource):
        return not isinstance(source.feed, ReplayFile)
    return isinstance(source, TaptapSource)


def dated_here(source: Source) -> bool:
    """taptap dates these sources' reports by this host's clock now (a file's were dated before)."""
    return not isinstance(source, (JsonlSource, DemoSource))


def can_wait(source: Source) -> bool:
    """A file (or replay) can be paused while stdout is stalled; a bus or a pipe cannot: stopping
    to read them would only move the loss to the kernel's buffers, where nobody counts it."""
    if isinstance(source, bridge.BridgeSource):
        return isinstance(source.feed, ReplayFile)
    if isinstance(source, JsonlSource):
        return not (source.uses_stdin and is_pipe(0))
    return isinstance(source, DemoSource)


class Ingest:
    """One run of the pipeline: source -> converter -> stdout, with stats and a clean shutdown."""

    def __init__(self, source: Source, converter: Converter, stats_interval: float,
                 identity: Identity | None = None, output: Output | None = None,
                 clock: ClockWatch | None = None, journal: Journal | None = None) -> None:
        self.source = source
        self.journal = journal
        self.identity = identity
        self.converter = converter
        self.stats_interval = stats_interval
        self.out = output or Output()
        self.clock = clock
        self.stop = asyncio.Event()
        self.started = time.monotonic()
        self._lines = LineSplitter(self._too_long)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        await self.out.open()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):  # Telegraf's other `signal` values
            loop.add_signal_handler(sig, log.debug, f"ignoring signal {sig.name}")
        tasks: list[asyncio.Task[Any]] = [asyncio.create_task(self.out.closed.wait())]
        if not self.source.uses_stdin and is_pipe(0):
            tasks.append(asyncio.create_task(self._watch_stdin()))
        if self.stats_interval > 0:
            tasks.append(asyncio.create_task(self._stats_loop()))
        if self.identity:
            tasks.append(asyncio.create_task(self.identity.run()))
        if self.clock:
            tasks.append(asyncio.create_task(self.clock.run()))
        pump = asyncio.create_task(self._pump())
        stop = asyncio.create_task(self.stop.wait())
        await asyncio.wait([pump, stop, tasks[0]], return_when=asyncio.FIRST_COMPLETED)
        stopping = time.monotonic()
        if not pump.done():
            await self.source.stop()
            try:
                await asyncio.wait_for(asyncio.shield(pump), SHUTDOWN_BUDGET)
            except TimeoutError:
                log.warn("source did not finish in time; exiting without its last output")
                pump.cancel()
        failure = pump.exception() if pump.done() and not pump.cancelled() else None
        if failure:
            raise failure
        for task in (*tasks, stop, pump):
            task.cancel()
        if self.stats_interval > 0:
            self.out.write(self._stats_line(), report=False)
        if self.identity:
            self.identity.close()
        if self.journal:
            self.journal.close()
        await self.out.close(max(0.1, EXIT_BUDGET - 0.1 - (time.monotonic() - stopping)))
        log.report_suppressed()
        return exitcodes.OK

    async def _pump(self) -> None:
        convert, split = self.converter.convert_lines, self._lines.feed
        async for chunk in self.source.chunks():
            out = convert(split(chunk))
            if out:
                self._emit(out.encode())
                await self.out.drain()  # returns at once unless the source can wait
            if self.out.closed.is_set():
                return
        if rest := self._lines.rest():
            self._emit(convert([rest]).encode())
        self._check_jsonl_read()

    def _emit(self, data: bytes) -> None:
        """Power reports to the journal first (what Telegraf got, the journal has), then stdout."""
        if self.journal and data:
            self.journal.append(data)
        self.out.write(data)

    def _check_jsonl_read(self) -> None:
        """A --jsonl input that held lines but not one JSON object is most likely a raw capture."""
        c = self.converter.counters
        if isinstance(self.source, JsonlSource) and c.lines_read and not (c.reports or c.objects):
            log.warn(f"none of the {c.lines_read} lines of {self.source.label} was a taptap JSON "
                     f"report: a raw RS-485 capture (as --record writes) goes through taptap with "
                     f"--replay FILE, not --jsonl")

    def _too_long(self, size: int) -> None:
        """A line over linesplit's limit (no taptap line comes near it): counted, said, skipped."""
        c = self.converter.counters
        c.lines_read += 1
        c.lines_invalid += 1
        c.lines_too_long += 1
        log.warn(f"skipped a taptap line of {size}+ bytes, over the {MAX_LINE >> 20} MiB limit (the "
                 f"largest site's infrastructure report is about 140 kB); reading goes on after it "
                 f"(lines_too_long={c.lines_too_long})", key="long-line")

    async def _watch_stdin(self) -> None:
        """Telegraf closes our stdin to stop us: EOF is the shutdown signal."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
        while await reader.read(4096):
            pass
        log.debug("stdin closed: shutting down")
        self.stop.set()

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.stats_interval)
            self.out.write(self._stats_line(), report=False)
            log.report_suppressed()

    def _stats_line(self) -> bytes:
        c = self.converter.counters
        fields: dict[str, lineproto.Field | None] = {
            "lines_read": c.lines_read, "reports": c.reports, "lines_skipped": c.lines_skipped,
            "lines_invalid": c.lines_invalid, "infrastructure_reports": c.infrastructure_reports,
            "nodes_seen": len(c.nodes), "lines_too_long": c.lines_too_long,
            "reports_dropped": self.out.reports_dropped, "stdout_backlog_bytes": self.out.held_bytes,
            "last_report_age_s": None if c.last_report_monotonic is None
            else round(time.monotonic() - c.last_report_monotonic, 3),
            **self.source.fields(),
        }
        if self.converter.time_check is not None:
            fields["reports_clock_rejected"] = c.reports_clock_rejected
        if self.journal:
            fields["journal_errors"] = self.journal.errors
        if self.clock:
            fields.update(self.clock.fields())
        text = lineproto.line(measurements.INGEST, {"source": self.source.name}, fields, time.time_ns())
        return text.encode() if text else b""
