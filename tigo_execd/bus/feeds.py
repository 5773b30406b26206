"""The live feeds of bus bytes: a USB RS-485 adapter (`--serial`) or an RS-485-to-Ethernet
converter (`--tcp`), each opened as an asyncio stream and able to say why it cannot be opened."""

from __future__ import annotations

import asyncio
import fcntl
import re
import socket
import termios
from typing import Any

from tigo_execd.bus import ports

BUS_RATE = 3840              # bytes/s: 38400 baud, 8N1
CONNECT_TIMEOUT = 10.0
DEFAULT_TCP_PORT = 502       # the usual default of RS-485-to-Ethernet converters


class LiveFeed:
    """A live byte feed: open() raises OSError, explain() turns it into (kind, message)."""

    name = ""
    hint = ""    # what to check when the feed is open but no byte comes
    label = ""   # how messages name it
    _writer: asyncio.StreamWriter | None = None

    async def open(self) -> asyncio.StreamReader:
        raise NotImplementedError

    def explain(self, exc: OSError) -> tuple[str, str]:
        """(kind, message): the kind tells one problem from another, so a repeat is logged quietly."""
        raise NotImplementedError

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class SerialFeed(LiveFeed):
    """`--serial PORT`: a USB RS-485 adapter (or any tty), 38400 8N1, locked against other users."""

    name = "serial"
    hint = ("check the wiring (A to A, B to B, GND to GND), that this is the adapter on the Tigo "
            "bus (`tigo-execd ports`), and that the CCA is powered")

    def __init__(self, port: str) -> None:
        self.port = self.label = port

    async def open(self) -> asyncio.StreamReader:
        import serial_asyncio  # imported here: only the serial source needs pyserial

        opened: tuple[asyncio.StreamReader, asyncio.StreamWriter] = \
            await serial_asyncio.open_serial_connection(url=self.port, baudrate=38400, bytesize=8,
                                                        parity="N", stopbits=1, exclusive=True)
        reader, self._writer = opened
        # exclusive=True is an advisory flock; TIOCEXCL (what taptap itself sets) also makes the
        # kernel refuse other openers, so a stray taptap cannot steal half of the bytes
        transport: Any = self._writer.transport  # pyserial-asyncio's, with the pyserial port
        try:
            fcntl.ioctl(transport.serial.fileno(), termios.TIOCEXCL)
        except OSError:
            self.close()  # the next attempt opens anew: never leave this one's descriptor behind
            raise
        return reader

    def explain(self, exc: OSError) -> tuple[str, str]:
        if not exc.errno:
            return "other", f"cannot open serial port {self.port}: {exc}"
        return ports.classify(exc), ports.explain(self.port, exc)


class TcpFeed(LiveFeed):
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


def parse_host_port(text: str) -> tuple[str, int]:
    """HOST, HOST:PORT, [IPv6]:PORT -> (host, port), port default 502."""
    m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?|([^:\[\]/]+)(?::(\d+))?", text.strip())
    port = int((m.group(2) or m.group(4) or DEFAULT_TCP_PORT) if m else 0)
    if not m or not 0 < port < 65536:
        raise ValueError(f"--tcp {text!r}: expected HOST or HOST:PORT (port default {DEFAULT_TCP_PORT})")
    return m.group(1) or m.group(3), port
