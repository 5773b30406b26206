"""Where taptap's output comes from: a supervised taptap command, a JSON-lines file or pipe, the demo.

Every source yields chunks of taptap stdout bytes; the pipeline splits and converts them the same way
whatever the source (the serial/TCP bridge in bridge.py is one more source of the same shape).
"""

from __future__ import annotations

import asyncio
import shlex
import sys
import time
from collections.abc import AsyncIterator, Callable

from tigo_execd.ingest.output import is_pipe
from tigo_execd.systemd import state_dir
from tigo_execd.taptap import STATE_FILE, Supervisor

FILE_CHUNK = 1 << 20


class Source:
    """Base: a name for the `source` tag and the source's own `tigo_ingest` fields."""

    name = "source"
    uses_stdin = False
    time_shift_ns = 0

    def chunks(self) -> AsyncIterator[bytes]:
        raise NotImplementedError

    async def stop(self) -> None:
        """Ask the source to end; chunks() then finishes with whatever output is left."""

    def fields(self) -> dict[str, int | float]:
        return {}

    def watch_reports(self, count: Callable[[], int]) -> None:
        """Hands over the count of reports written, for sources that judge the bus by it."""


class TaptapSource(Source):
    """`--taptap-cmd`: run the user's taptap command line (split like a shell, never run by one).
    The command is theirs: a state file it lacks is named in a warning, never added."""

    name = "taptap-cmd"

    def __init__(self, argv: list[str]) -> None:
        self.supervisor = Supervisor(argv, state_file=state_dir() / STATE_FILE)

    @classmethod
    def from_command(cls, command: str) -> TaptapSource:
        argv = shlex.split(command)
        if not argv:
            raise ValueError("--taptap-cmd is empty")
        return cls(argv)

    def chunks(self) -> AsyncIterator[bytes]:
        return self.supervisor.chunks()

    async def stop(self) -> None:
        await self.supervisor.stop()

    def fields(self) -> dict[str, int | float]:
        return {"taptap_starts": self.supervisor.starts,
                "taptap_running": int(self.supervisor.running)}


class JsonlSource(Source):
    """`--jsonl PATH|-`: taptap JSON lines from a file (backfill of old logs) or a pipe; ends at EOF."""

    name = "jsonl"

    def __init__(self, path: str) -> None:
        self.path = path
        self.uses_stdin = path == "-"
        self.label = "stdin" if self.uses_stdin else path
        self._stopping = False
        if not self.uses_stdin:
            # fail now, with the OS's reason, not inside the loop; chunks() closes it
            self._file = open(path, "rb")  # noqa: SIM115

    async def chunks(self) -> AsyncIterator[bytes]:
        if self.uses_stdin and is_pipe(0):
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader(limit=FILE_CHUNK)
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
            while not self._stopping and (chunk := await reader.read(FILE_CHUNK)):
                yield chunk
            return
        f = sys.stdin.buffer if self.uses_stdin else self._file
        try:
            while not self._stopping and (chunk := f.read(FILE_CHUNK)):
                yield chunk
                await asyncio.sleep(0)  # let signals and stdout's reader be heard between chunks
        finally:
            if not self.uses_stdin:
                f.close()

    async def stop(self) -> None:
        self._stopping = True


class DemoSource(Source):
    """`--demo`: the bundled day, shifted so that its last report is now."""

    name = "demo"

    def __init__(self) -> None:
        from tigo_execd.ingest import demo
        self.lines, last_ns = demo.day()
        self.time_shift_ns = time.time_ns() - last_ns
        self._stopping = False

    async def chunks(self) -> AsyncIterator[bytes]:
        for i in range(0, len(self.lines), 4096):
            if self._stopping:
                return
            yield b"".join(self.lines[i:i + 4096])
            await asyncio.sleep(0)

    async def stop(self) -> None:
        self._stopping = True
