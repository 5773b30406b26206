"""The loopback TCP server taptap reads the bus bytes from (`taptap observe --tcp 127.0.0.1 --port N`,
a raw byte stream, the way a converter serves them). Only the taptap tigo-execd started may connect."""

from __future__ import annotations

import asyncio
import os

from tigo_execd import procfs
from tigo_execd.bus.feeds import BUS_RATE
from tigo_execd.log import log

BACKLOG = BUS_RATE * 60      # bytes kept for taptap while it (re)starts; taptap dates reports by
                             # arrival, so much older bytes would be dated wrong anyway
LOOPBACK = "127.0.0.1"


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
        pid = procfs.connecting_pid(LOOPBACK, peer_port, self.port)
        if pid is None or not procfs.descends_from(pid, os.getpid()):
            who = (f"pid {pid} ({procfs.comm(pid) or '?'})" if pid
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
