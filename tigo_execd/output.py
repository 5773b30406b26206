"""Where line protocol is written: stdout, flushed as soon as the input goes idle.

To a pipe or socket (Telegraf) it goes through an asyncio transport, so a stalled reader pauses the
pipeline (back to taptap) instead of freezing the event loop, and a reader that closes the pipe is
noticed even while idle. Files and terminals get plain blocking writes.
"""

from __future__ import annotations

import asyncio
import os
import stat


def is_pipe(fd: int) -> bool:
    """A pipe or socket (what Telegraf gives us), as opposed to a file, a terminal or /dev/null."""
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


class _Pipe(asyncio.streams.FlowControlMixin):
    def __init__(self, on_lost) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self._on_lost = on_lost

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._on_lost()


class Output:
    """Writes bytes to a file descriptor; `closed` is set when the reader has gone away."""

    def __init__(self, fd: int = 1) -> None:
        self.fd = fd
        self.closed = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        if is_pipe(self.fd):
            loop = asyncio.get_running_loop()
            pipe = os.fdopen(self.fd, "wb", buffering=0, closefd=False)
            transport, protocol = await loop.connect_write_pipe(lambda: _Pipe(self.closed.set), pipe)
            self._writer = asyncio.StreamWriter(transport, protocol, None, loop)

    def write(self, data: bytes) -> None:
        if self.closed.is_set() or not data:
            return
        if self._writer is not None:
            self._writer.write(data)
            return
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except OSError:  # EPIPE and friends: the reader is gone
            self.closed.set()

    async def drain(self) -> None:
        """Wait while the reader is behind (the transport buffer is over its high-water mark)."""
        if self._writer is not None and not self.closed.is_set():
            try:
                await self._writer.drain()
            except (ConnectionError, RuntimeError):
                self.closed.set()

    async def close(self, timeout: float = 0.5) -> None:
        if self._writer is not None and not self.closed.is_set():
            try:
                await asyncio.wait_for(self._writer.drain(), timeout)
            except (ConnectionError, RuntimeError, asyncio.TimeoutError):
                pass
            self._writer.close()
