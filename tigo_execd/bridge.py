"""The RS-485 source: bus bytes from a serial port, a TCP converter or a capture, relayed to taptap.

tigo-execd owns the byte source instead of letting taptap open it, so that it can say why nothing
arrives (port missing, no permission, busy, a silent converter, bytes taptap cannot decode), survive
unplugging without restarting taptap, and record what the bus says. taptap reads the bytes from a
loopback TCP server of ours (`taptap observe --tcp 127.0.0.1 --port N`, a raw byte stream, the way a
converter serves them), which accepts only the connection of our own child process.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import fcntl
import os
import re
import socket
import struct
import termios
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from tigo_execd import ports
from tigo_execd.log import log
from tigo_execd.sources import Source
from tigo_execd.taptap import Supervisor, not_found_message, resolve

BUS_RATE = 3840              # bytes/s: 38400 baud, 8N1
BACKLOG = BUS_RATE * 60      # bytes kept for taptap while it (re)starts; taptap dates reports by
                             # arrival, so much older bytes would be dated wrong anyway
MIN_DELAY, MAX_DELAY = 1.0, 30.0
CONNECT_TIMEOUT = 10.0
READ_SIZE = 1 << 16
REPLAY_CHUNK = BUS_RATE // 10
QUIET = 0.5                  # replay: taptap is done when it printed nothing this long after EOF
DEFAULT_TCP_PORT = 502       # the usual default of RS-485-to-Ethernet converters
SILENT = "silent"
LOOPBACK = "127.0.0.1"


class _StreamFeed:
    """A live byte feed opened as an asyncio stream; open() raises OSError with the reason."""

    label = ""
    _writer: asyncio.StreamWriter | None = None

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class SerialFeed(_StreamFeed):
    """`--serial PORT`: a USB RS-485 adapter (or any tty), 38400 8N1, locked against other users."""

    name = "serial"
    hint = ("check the wiring (A to A, B to B, GND to GND), that this is the adapter on the Tigo "
            "bus (`tigo-execd ports`), and that the CCA is powered")

    def __init__(self, port: str) -> None:
        self.port = self.label = port

    async def open(self) -> asyncio.StreamReader:
        import serial_asyncio  # imported here: only the serial source needs pyserial

        reader, self._writer = await serial_asyncio.open_serial_connection(
            url=self.port, baudrate=38400, bytesize=8, parity="N", stopbits=1, exclusive=True)
        # exclusive=True is an advisory flock; TIOCEXCL (what taptap itself sets) also makes the
        # kernel refuse other openers, so a stray taptap cannot steal half of the bytes
        fcntl.ioctl(self._writer.transport.serial.fileno(), termios.TIOCEXCL)
        return reader

    def explain(self, exc: OSError) -> tuple[str, str]:
        if not exc.errno:
            return "other", f"cannot open serial port {self.port}: {exc}"
        return ports.classify(exc), ports.explain(self.port, exc)


class TcpFeed(_StreamFeed):
    """`--tcp HOST[:PORT]`: an RS-485-to-Ethernet converter serving the raw bus bytes."""

    name = "tcp"
    hint = ("check the converter's RS-485 wiring (A/B, GND), its serial settings (38400 baud 8N1, "
            "TCP server mode), and that the CCA is powered")

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.label = f"converter {host}:{port}"

    async def open(self) -> asyncio.StreamReader:
        reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), CONNECT_TIMEOUT)
        return reader

    def explain(self, exc: OSError) -> tuple[str, str]:
        if isinstance(exc, TimeoutError):
            return "timeout", (f"{self.label} does not answer within {CONNECT_TIMEOUT:g} s: is it "
                               f"powered and on the network?")
        if isinstance(exc, ConnectionRefusedError):
            return "refused", (f"{self.label} refused the connection: check the port (converters "
                               f"default to {DEFAULT_TCP_PORT}) and that its TCP server mode is on")
        if isinstance(exc, socket.gaierror):
            return "name", f"cannot resolve the converter's host name {self.host}: {exc.strerror}"
        return "other", f"cannot connect to {self.label}: {exc.strerror or exc}"


class ReplayFile:
    """`--replay FILE`: a raw capture, at the bus's own pace or as fast as taptap reads."""

    name = "replay"

    def __init__(self, path: str, paced: bool) -> None:
        self.file = open(path, "rb")  # fail now, with the OS's reason
        self.label, self.paced = path, paced


class Recorder:
    """`--record FILE`: append the raw bus bytes, moving a full FILE to FILE.1 (one older file kept)."""

    def __init__(self, path: str, max_bytes: int) -> None:
        self.path, self.max_bytes = path, max_bytes
        self._file = open(path, "ab", buffering=0)  # unbuffered: a capture is complete at any moment
        self.size = self._file.tell()

    def write(self, data: bytes) -> None:
        try:
            if self.size and self.size + len(data) > self.max_bytes:
                self._file.close()
                os.replace(self.path, self.path + ".1")
                self._file = open(self.path, "ab", buffering=0)
                self.size = 0
            self._file.write(data)
            self.size += len(data)
        except OSError as exc:
            log.error(f"cannot write the capture {self.path}: {exc.strerror}", key="record")

    def close(self) -> None:
        self._file.close()


def _proc_net_address(port: int) -> str:
    """127.0.0.1:port as /proc/net/tcp writes it (the address in host byte order, in hex)."""
    return f"{struct.unpack('=I', socket.inet_aton(LOOPBACK))[0]:08X}:{port:04X}"


def connecting_pid(peer_port: int, server_port: int) -> int | None:
    """The process owning the client end of a loopback connection to our server, when visible.

    TCP has no peer credentials, so the client socket's inode is looked up in /proc/net/tcp and
    then among the processes' open files."""
    want = (_proc_net_address(peer_port), _proc_net_address(server_port))
    try:
        with open("/proc/net/tcp") as f:
            rows = [line.split() for line in f.readlines()[1:]]
    except OSError:
        return None
    inodes = [row[9] for row in rows if (row[1], row[2]) == want and row[9] != "0"]
    pids = ports.processes_with(f"socket:[{inodes[0]}]") if inodes else []
    return pids[0] if pids else None


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        pid = _ppid(pid)
        if pid == ancestor:
            return True
    return False


class Relay:
    """Our loopback server for taptap. Only a descendant of this process (the taptap we started,
    possibly through a wrapper script) may connect; while none is connected, bytes wait in a
    backlog so that a taptap restart loses nothing."""

    def __init__(self) -> None:
        self.port = 0
        self.connected = asyncio.Event()
        self.dropped = 0
        self._server: asyncio.Server | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._backlog = bytearray()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, LOOPBACK, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer_port = writer.get_extra_info("peername")[1]
        pid = connecting_pid(peer_port, self.port)
        if pid is None or not descends_from(pid, os.getpid()):
            who = (f"pid {pid} ({ports.read_text(Path(f'/proc/{pid}/comm')) or '?'})" if pid
                   else f"a process this user cannot see (port {peer_port})")
            log.warn(f"refused a connection to the taptap bridge {LOOPBACK}:{self.port} from {who}: "
                     f"only the taptap started by tigo-execd may read the bus", key="bridge-foreign")
            writer.close()
            return
        if self._writer is not None:
            self._writer.close()
        self._writer = writer
        if self._backlog:
            writer.write(bytes(self._backlog))
            self._backlog.clear()
        self.connected.set()
        log.debug(f"taptap (pid {pid}) connected to the bridge")
        try:
            while await reader.read(4096):  # taptap sends nothing: this waits for it to hang up
                pass
        except ConnectionError:
            pass
        finally:
            if self._writer is writer:
                self._writer = None
                self.connected.clear()
            writer.close()
            log.debug(f"taptap (pid {pid}) left the bridge")

    def push(self, data: bytes) -> None:
        """Live bytes: to taptap at once, never waiting for it (the port must be read in time)."""
        writer = self._writer
        if writer is None:
            self._backlog += data
            if len(self._backlog) > BACKLOG:
                excess = len(self._backlog) - BACKLOG
                del self._backlog[:excess]
                self._drop(excess, "no taptap is connected")
        elif writer.transport.get_write_buffer_size() > BACKLOG:
            self._drop(len(data), "taptap is not reading")
        else:
            writer.write(data)

    def _drop(self, count: int, why: str) -> None:
        self.dropped += count
        log.warn(f"dropped bus bytes: {why} (bus_bytes_dropped={self.dropped})", key="bridge-drop")

    async def send(self, data: bytes) -> None:
        """Replayed bytes: wait for taptap and for it to take them (no bus to keep up with)."""
        await self.connected.wait()
        writer = self._writer
        assert writer is not None
        writer.write(data)
        try:
            await writer.drain()
        except ConnectionError:
            self._drop(len(data), "taptap went away during the replay")

    async def hang_up(self) -> None:
        """End of a capture: close taptap's connection, as a converter going away would."""
        if self._writer is not None:
            self._writer.close()

    async def close(self) -> None:
        await self.hang_up()
        if self._server is not None:
            self._server.close()


class BridgeSource(Source):
    """A byte feed relayed to a supervised `taptap observe --tcp`; yields taptap's stdout."""

    def __init__(self, feed: SerialFeed | TcpFeed | ReplayFile, taptap: str = "taptap",
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
        self.supervisor = Supervisor([self.taptap, "observe", "--tcp", LOOPBACK, "--port", str(port),
                                      *self.taptap_args])
        log.debug(f"taptap reads the bus from {LOOPBACK}:{port}")
        work = [asyncio.create_task(self._replay() if isinstance(self.feed, ReplayFile)
                                    else self._live())]
        if self.diagnose_after > 0 and not isinstance(self.feed, ReplayFile):
            work.append(asyncio.create_task(self._diagnose()))
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

    async def _live(self) -> None:
        """Keep the port or converter open: reopen with backoff, log each change of state once.

        `trouble` is the problem last logged at W!/E! and still in effect: repeats of it go to D!.
        A silent converter is reopened quietly until it sends bytes again."""
        feed = self.feed
        assert not isinstance(feed, ReplayFile)
        delay, trouble, opened_before = MIN_DELAY, "", False
        while True:
            try:
                reader = await feed.open()
            except OSError as exc:
                kind, msg = feed.explain(exc)
                level = 3 if kind == trouble else 0 if kind in ("permission", "busy") else 1
                log.emit(level, f"{msg} (retrying, at most every {MAX_DELAY:g} s)")
                trouble = kind
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_DELAY)
                continue
            if opened_before:
                self.reconnects += 1
            log.emit(3 if trouble == SILENT else 2,
                     f"{feed.label} open{' again' if opened_before else ''}: relaying the bus to taptap")
            opened_before, self.connected = True, True
            if trouble != SILENT:
                trouble = ""
            reason, got_bytes = await self._relay_from(reader)
            self.connected = False
            feed.close()
            if got_bytes:
                delay = MIN_DELAY
                if trouble == SILENT:
                    trouble = ""
            if reason == SILENT:
                log.emit(3 if trouble == SILENT else 1,
                         f"no byte from {feed.label} for {self.silence_timeout:g} s: reopening it "
                         f"(a hung converter or adapter?)")
            else:
                log.warn(f"lost {feed.label}: {reason}; reopening", key=f"lost:{feed.label}")
            trouble = reason if reason == SILENT else "lost"
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY)

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

    async def _replay(self) -> None:
        feed = self.feed
        assert isinstance(feed, ReplayFile) and self.supervisor is not None
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
        self.supervisor.retire()
        await self.relay.hang_up()
        await self._taptap_done()
        await self.supervisor.stop()

    async def _taptap_done(self) -> None:
        """After EOF upstream taptap prints the rest and exits; the fork reconnects and goes quiet."""
        assert self.supervisor is not None
        while (proc := self.supervisor.proc) is not None and proc.returncode is None:
            idle = time.monotonic() - self._last_output
            if idle >= QUIET:
                return
            try:
                await asyncio.wait_for(proc.wait(), QUIET - idle)
            except TimeoutError:
                pass

    async def _diagnose(self) -> None:
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
                state = "" if self.connected else f" ({self.feed.label} is not open, see above)"
                log.warn(f"no bus bytes for {_duration(quiet_for)}{state}: {self.feed.hint}")
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


def parse_host_port(text: str) -> tuple[str, int]:
    """HOST, HOST:PORT, [IPv6]:PORT -> (host, port), port default 502."""
    m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?|([^:\[\]/]+)(?::(\d+))?", text.strip())
    port = int((m.group(2) or m.group(4) or DEFAULT_TCP_PORT) if m else 0)
    if not m or not 0 < port < 65536:
        raise ValueError(f"--tcp {text!r}: expected HOST or HOST:PORT (port default {DEFAULT_TCP_PORT})")
    return m.group(1) or m.group(3), port


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


BRIDGE_ONLY = {"taptap": None, "taptap_arg": [], "record": None, "replay_speed": "bus",
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
    feed: SerialFeed | TcpFeed | ReplayFile
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
