"""The RS-485 source: bus bytes from a serial port, a TCP converter or a capture, relayed to taptap.

tigo-execd owns the byte source instead of letting taptap open it, so that it can say why nothing
arrives (port missing, no permission, busy, a silent converter, bytes taptap cannot decode), survive
unplugging without restarting taptap, and record what the bus says. The parts: the feeds
(feeds.py: serial, TCP; capture.py: replay and record), the loopback server taptap reads from
(relay.py), the reopening policy (reconnect.py); this module runs them together as one source.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import time
from collections.abc import AsyncIterator, Callable

from tigo_execd.bus.capture import Recorder, ReplayFile
from tigo_execd.bus.feeds import BUS_RATE, DEFAULT_TCP_PORT, LiveFeed, SerialFeed, TcpFeed, parse_host_port
from tigo_execd.bus.reconnect import SILENT, Reconnect
from tigo_execd.bus.relay import LOOPBACK, Relay
from tigo_execd.ingest.sources import Source
from tigo_execd.log import log
from tigo_execd.systemd import state_dir
from tigo_execd.taptap import STATE_FILE, Supervisor, not_found_message, resolve

READ_SIZE = 1 << 16
REPLAY_CHUNK = BUS_RATE // 10
QUIET = 0.5                  # replay: taptap is done when it printed nothing this long after EOF


class BridgeSource(Source):
    """A byte feed relayed to a supervised `taptap observe --tcp`; yields taptap's stdout."""

    def __init__(self, feed: LiveFeed | ReplayFile, taptap: str = "taptap",
                 taptap_args: list[str] | None = None, recorder: Recorder | None = None,
                 silence_timeout: float = 120.0, diagnose_after: float = 300.0) -> None:
        self.feed = feed
        self.name = feed.name
        self.taptap, self.taptap_args = taptap, list(taptap_args or [])
        self.recorder = recorder
        self.silence_timeout, self.diagnose_after = silence_timeout, diagnose_after
        self.relay = Relay()
        self.supervisor: Supervisor | None = None
        self.bus_bytes = 0
        self.last_byte: float | None = None
        self.connected = False
        self.reconnects = 0
        self._reports: Callable[[], int] = lambda: 0
        self._stopping = False
        self._last_output = time.monotonic()

    def watch_reports(self, count: Callable[[], int]) -> None:
        self._reports = count

    async def chunks(self) -> AsyncIterator[bytes]:
        port = await self.relay.start()
        # the state file, when this taptap has the option: the fork from 0.2.5 prints no
        # infrastructure report (no barcode) without one
        self.supervisor = Supervisor([self.taptap, "observe", "--tcp", LOOPBACK, "--port", str(port),
                                      *self.taptap_args], state_file=state_dir() / STATE_FILE,
                                     pass_state_file=True, context=self._feed_state)
        log.debug(f"taptap reads the bus from {LOOPBACK}:{port}")
        if isinstance(self.feed, ReplayFile):
            work = [asyncio.create_task(self._replay(self.feed, self.supervisor))]
        else:
            work = [asyncio.create_task(self._live(self.feed))]
            if self.diagnose_after > 0:
                work.append(asyncio.create_task(self._diagnose(self.feed)))
        if self._stopping:
            await self.supervisor.stop()
        try:
            async for chunk in self.supervisor.chunks():
                self._last_output = time.monotonic()
                yield chunk
        finally:
            for task in work:
                task.cancel()
            await asyncio.gather(*work, return_exceptions=True)
            if not isinstance(self.feed, ReplayFile):
                self.feed.close()
            await self.relay.close()
            if self.recorder is not None:
                self.recorder.close()

    async def stop(self) -> None:
        self._stopping = True
        if self.supervisor is not None:
            await self.supervisor.stop()

    def _feed_state(self) -> str:
        """The bus feed's state, for the line that says why taptap exited."""
        return f"the bus feed, {self.feed.label}, is {'open' if self.connected else 'not open'}"

    def fields(self) -> dict[str, int | float]:
        sup = self.supervisor
        fields: dict[str, int | float] = {"bus_bytes": self.bus_bytes,
                                          "source_connected": int(self.connected)}
        if self.last_byte is not None:
            fields["last_byte_age_s"] = round(time.monotonic() - self.last_byte, 3)
        return {**fields, "source_reconnects": self.reconnects, "bus_bytes_dropped": self.relay.dropped,
                "taptap_starts": sup.starts if sup else 0,
                "taptap_running": int(bool(sup and sup.running))}

    def _count(self, data: bytes) -> None:
        self.bus_bytes += len(data)
        self.last_byte = time.monotonic()
        if self.recorder is not None:
            self.recorder.write(data)

    async def _live(self, feed: LiveFeed) -> None:
        """Keep the port or converter open, reopening it when and as loudly as Reconnect says."""
        policy = Reconnect(feed.label)
        while True:
            try:
                reader = await feed.open()
            except OSError as exc:
                policy.open_failed(*feed.explain(exc))
                await policy.wait()
                continue
            if policy.opened():
                self.reconnects += 1
            self.connected = True
            reason, got_bytes = await self._relay_from(reader)
            self.connected = False
            feed.close()
            policy.ended(reason, got_bytes, self.silence_timeout)
            await policy.wait()

    async def _relay_from(self, reader: asyncio.StreamReader) -> tuple[str, bool]:
        """Relay until the source fails, ends or goes silent: (why it ended, whether bytes came)."""
        got_bytes = False
        while True:
            try:
                data = await asyncio.wait_for(reader.read(READ_SIZE), self.silence_timeout or None)
            except TimeoutError:
                return SILENT, got_bytes
            except OSError as exc:  # pyserial's SerialException is one too
                return str(exc) or type(exc).__name__, got_bytes
            if not data:
                return "the other end closed the connection", got_bytes
            got_bytes = True
            self._count(data)
            self.relay.push(data)

    async def _replay(self, feed: ReplayFile, supervisor: Supervisor) -> None:
        await self.relay.connected.wait()
        self.connected = True
        started = time.monotonic()
        with feed.file:
            while chunk := feed.file.read(REPLAY_CHUNK if feed.paced else READ_SIZE):
                await self.relay.send(chunk)
                self._count(chunk)
                if feed.paced:
                    await asyncio.sleep(started + self.bus_bytes / BUS_RATE - time.monotonic())
        log.info(f"replayed {self.bus_bytes} bytes of {feed.label} in "
                 f"{time.monotonic() - started:.2f} s")
        self.connected = False
        supervisor.retire()
        await self.relay.hang_up()
        await self._taptap_done(supervisor)
        await supervisor.stop()

    async def _taptap_done(self, supervisor: Supervisor) -> None:
        """After EOF upstream taptap prints the rest and exits; the fork reconnects and goes quiet."""
        while (proc := supervisor.proc) is not None and proc.returncode is None:
            idle = time.monotonic() - self._last_output
            if idle >= QUIET:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), QUIET - idle)

    async def _diagnose(self, feed: LiveFeed) -> None:
        """Tell "no bytes at all" (wiring, port) from "bytes but no reports" (decoding) in a W! line
        once either has lasted `diagnose_after` seconds; each is said once per episode."""
        started = time.monotonic()
        told_silence = told_undecoded = False
        while True:
            await asyncio.sleep(min(self.diagnose_after / 4, 30.0))
            now = time.monotonic()
            quiet_for = now - (self.last_byte or started)
            if quiet_for < self.diagnose_after:
                told_silence = False
            elif not told_silence:
                state = "" if self.connected else f" ({feed.label} is not open, see above)"
                log.warn(f"no bus bytes for {_duration(quiet_for)}{state}: {feed.hint}")
                told_silence = True
            if (not told_undecoded and self.bus_bytes and self._reports() == 0
                    and now - started >= self.diagnose_after):
                log.warn(f"{self.bus_bytes} bus bytes in {_duration(now - started)} but taptap "
                         f"decoded no power report: normal at night (optimizers sleep); by day "
                         f"A and B may be swapped, or this taptap cannot decode the CCA's firmware "
                         f"(4.0.x needs a recent build: `cargo install taptap --locked --force`)")
                told_undecoded = True


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def add_arguments(p: argparse.ArgumentParser, sources: argparse._MutuallyExclusiveGroup) -> None:
    sources.add_argument("--serial", metavar="PORT",
                         help="read the bus from an RS-485 adapter, e.g. /dev/serial/by-id/usb-FTDI...")
    sources.add_argument("--tcp", metavar="HOST[:PORT]",
                         help=f"read the bus from an RS-485-to-Ethernet converter (port default "
                              f"{DEFAULT_TCP_PORT})")
    sources.add_argument("--replay", metavar="FILE",
                         help="feed a raw bus capture (--record, taptap peek-bytes --raw) through "
                              "taptap, then exit")
    g = p.add_argument_group("RS-485 bridge (--serial, --tcp, --replay)")
    g.add_argument("--taptap", metavar="PATH",
                   help="taptap binary (default: taptap on PATH, then ~/.cargo/bin/taptap)")
    g.add_argument("--taptap-arg", metavar="ARG", action="append", default=[],
                   help="extra argument for `taptap observe` (repeatable; write --taptap-arg=--opt "
                        "for values starting with -)")
    g.add_argument("--record", metavar="FILE",
                   help="with --serial/--tcp: also append the raw bus bytes to FILE")
    g.add_argument("--record-max-bytes", type=int, default=64 << 20, metavar="N",
                   help="move FILE to FILE.1 when it would exceed N bytes (default: 64 MiB)")
    g.add_argument("--replay-speed", choices=["bus", "max"], default="bus",
                   help="bus: 3840 bytes/s like the real bus (default); max: as fast as taptap reads")
    g.add_argument("--silence-timeout", type=float, default=120.0, metavar="S",
                   help="reopen the port or converter after S seconds without a byte; 0 = never "
                        "(default: 120)")
    g.add_argument("--diagnose-after", type=float, default=300.0, metavar="S",
                   help="warn when there have been no bus bytes, or bytes but no reports, for S "
                        "seconds; 0 = never (default: 300)")


BRIDGE_ONLY: dict[str, object] = {"taptap": None, "taptap_arg": [], "record": None, "replay_speed": "bus",
               "silence_timeout": 120.0, "diagnose_after": 300.0}


def make_source(args: argparse.Namespace) -> BridgeSource | None:
    """The bridge source the arguments ask for, or None for another source (ValueError, OSError)."""
    if not (args.serial or args.tcp or args.replay):
        given = [name for name, default in BRIDGE_ONLY.items() if getattr(args, name) != default]
        if given:
            raise ValueError(f"--{given[0].replace('_', '-')} applies to --serial, --tcp and --replay")
        return None
    for name in ("silence_timeout", "diagnose_after"):
        if getattr(args, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be 0 (off) or a number of seconds")
    if args.record_max_bytes < 4096:
        raise ValueError("--record-max-bytes must be at least 4096")
    taptap = args.taptap or "taptap"
    feed: LiveFeed | ReplayFile
    if args.replay:
        if args.record:
            raise ValueError("--record applies to --serial and --tcp (a replay is a capture already)")
        if resolve(taptap) is None:  # a replay waiting for a taptap that never comes would hang
            raise FileNotFoundError(errno.ENOENT, not_found_message(taptap), taptap)
        feed = ReplayFile(args.replay, paced=args.replay_speed == "bus")
    elif args.serial:
        feed = SerialFeed(args.serial)
    else:
        feed = TcpFeed(*parse_host_port(args.tcp))
    recorder = Recorder(args.record, args.record_max_bytes) if args.record else None
    return BridgeSource(feed, taptap, args.taptap_arg, recorder, args.silence_timeout,
                        args.diagnose_after)
