"""Where line protocol is written: stdout, flushed as soon as the input goes idle.

To a pipe or socket (Telegraf) it is written without ever blocking the event loop: what the pipe
does not take at once is held in memory and written when the pipe has room again, and a reader
that closes the pipe is noticed even while idle. While the reader stalls, what is held is bounded:

- a live source (a bus that does not wait) keeps being read, so taptap and the serial port are
  never blocked and the kernel never loses bus bytes behind our back; when the held lines exceed
  `max_bytes`, the OLDEST whole lines are dropped, counted and logged;
- a source that can wait (a file, a replay) is paused instead (`drain`), and loses nothing.

Files and terminals get plain blocking writes (a full disk is not a stalled reader).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections import deque

from tigo_execd.log import log

MB = 1 << 20
DEFAULT_MAX_BYTES = 4 * MB
HINT = ("Telegraf is not reading tigo-execd's stdout: check its log and outputs "
        "(`journalctl -u telegraf`), e.g. a hung output or processor")


def is_pipe(fd: int) -> bool:
    """A pipe or socket (what Telegraf gives us), as opposed to a file, a terminal or /dev/null."""
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


class _Others(bytes):
    """Lines that are not power reports (tigo_ingest): counted apart when dropped."""


class Output:
    """Writes whole lines of line protocol to a file descriptor.

    `closed` is set when the reader has gone away. `reports_dropped` counts power reports that
    could not be written (dropped while the reader stalled, or left over at exit); other lines
    (tigo_ingest, whose counters are cumulative, so the next one carries what a dropped one said)
    are counted in `others_dropped`.
    """

    def __init__(self, fd: int = 1, max_bytes: int = DEFAULT_MAX_BYTES, drop: bool = True) -> None:
        self.fd, self.max_bytes, self.drop = fd, max_bytes, drop
        self.closed = asyncio.Event()
        self.reports_dropped = 0
        self.others_dropped = 0
        self.held_bytes = 0  # held, not yet taken by the pipe
        self._pipe = False
        # Chunks as written (one per source read: a live bus gives about one report each, so no
        # per-chunk bookkeeping beyond the bytes object); _held[0][_start:] is what waits of the
        # first, and _start is always at a line boundary.
        self._held: deque[bytes] = deque()
        self._start = 0
        self._inflight = memoryview(b"")  # the rest of a line the pipe took only a part of
        self._inflight_report = False
        self._flowing = asyncio.Event()   # nothing held: the reader keeps up
        self._flowing.set()
        self._waiting = False             # writer callback registered
        self._dropped_in_stall = 0

    async def open(self) -> None:
        if is_pipe(self.fd):
            os.set_blocking(self.fd, False)
            # the write end of a pipe becomes "readable" (EPOLLERR) when the reader closes it
            asyncio.get_running_loop().add_reader(self.fd, self._gone)
            self._pipe = True

    def write(self, data: bytes, report: bool = True) -> None:
        """Write `data` (whole lines) now or hold it; never blocks the event loop on a pipe."""
        if self.closed.is_set() or not data:
            return
        if not self._pipe:
            self._write_blocking(data)
            return
        self._held.append(data if report else _Others(data))
        self.held_bytes += len(data)
        if not self._waiting:
            self._flush()
        if self.drop and self.held_bytes > self.max_bytes:
            self._drop_oldest()

    async def drain(self) -> None:
        """For a source that can wait: return once the pipe has taken everything written."""
        if not self.drop:
            await self._flowing.wait()

    async def close(self, timeout: float = 0.5) -> None:
        """Give the reader up to `timeout` s for what is held; count and log what is left."""
        if not self._pipe:
            return
        if not self.closed.is_set() and not self._flowing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flowing.wait(), timeout)
        reports, others = self._count_held()
        if reports or others:
            self._count(reports, others)
            if self.closed.is_set():  # the reader left on purpose (`| head`, Telegraf gone): no alarm
                log.debug(f"exiting with {reports} reports and {others} other lines not written "
                          f"(stdout was closed; reports_dropped={self.reports_dropped})")
            else:
                log.warn(f"exiting with {reports} reports and {others} other lines not written "
                         f"(not read within {timeout:.1f} s; reports_dropped={self.reports_dropped})"
                         f": {HINT}")
        self._stop_watching()

    def _write_blocking(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except OSError:  # EPIPE and friends: the reader is gone
            self.closed.set()

    def _flush(self) -> None:
        """Write what the pipe takes now; wait for it to be writable for the rest."""
        held = self._held
        while self._inflight or held:
            inflight = bool(self._inflight)
            view = self._inflight if inflight else memoryview(held[0])[self._start:]
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                n = 0
            except OSError:  # EPIPE: the reader is gone
                self._gone()
                return
            if inflight:
                # an empty slice would still hold the whole chunk: let go of it
                self._inflight = view[n:] if n < len(view) else memoryview(b"")
                if self._inflight:
                    break
                continue
            data, start = held[0], self._start
            end = start + n
            if end < len(data) and n and data[end - 1] != 10:
                # a line taken in part: its rest goes out before anything else, never dropped
                line_end = data.index(b"\n", end) + 1
                self._inflight = memoryview(data)[end:line_end]
                self._inflight_report = type(data) is not _Others
                end = line_end
            self.held_bytes -= end - start
            if end == len(data):
                held.popleft()
                self._start = 0
                continue
            self._start = end
            break
        self._watch_writable(bool(self._inflight or held))

    def _watch_writable(self, pending: bool) -> None:
        loop = asyncio.get_running_loop()
        if pending and not self._waiting:
            loop.add_writer(self.fd, self._flush)
            self._flowing.clear()
        elif not pending:
            if self._waiting:
                loop.remove_writer(self.fd)
            self._flowing.set()
            if self._dropped_in_stall:
                log.info(f"stdout is read again; {self._dropped_in_stall} reports were dropped "
                         f"while it was not (reports_dropped={self.reports_dropped})")
                self._dropped_in_stall = 0
        self._waiting = pending

    def _drop_oldest(self) -> None:
        """Drop the oldest whole lines until what is held fits in max_bytes again."""
        excess = self.held_bytes - self.max_bytes
        held = self._held
        counts = [0, 0]  # others, reports
        while excess > 0 and held:
            data, start = held[0], self._start
            if len(data) - start <= excess:
                cut = len(data)
                held.popleft()
                self._start = 0
            else:
                cut = data.index(b"\n", start + excess - 1) + 1
                self._start = cut
                if cut == len(data):
                    held.popleft()
                    self._start = 0
            counts[type(data) is not _Others] += data.count(b"\n", start, cut)
            excess -= cut - start
            self.held_bytes -= cut - start
        self._count(counts[1], counts[0])
        self._dropped_in_stall += counts[1]
        log.warn(f"dropped the oldest {counts[1]} reports and {counts[0]} other lines to keep what "
                 f"waits for stdout within --max-buffer-mb {self.max_bytes / MB:g} "
                 f"(reports_dropped={self.reports_dropped}): {HINT}", key="output-drop")

    def _count_held(self) -> tuple[int, int]:
        counts = [0, 0]  # others, reports
        for i, data in enumerate(self._held):
            counts[type(data) is not _Others] += data.count(b"\n", self._start if i == 0 else 0)
        if self._inflight:
            counts[self._inflight_report] += 1
        return counts[1], counts[0]

    def _count(self, reports: int, others: int) -> None:
        self.reports_dropped += reports
        self.others_dropped += others

    def _gone(self) -> None:
        """The reader closed the pipe: nothing more can be written, so nothing is waited for."""
        self.closed.set()
        self._flowing.set()
        self._stop_watching()

    def _stop_watching(self) -> None:
        if self._pipe:
            loop = asyncio.get_running_loop()
            loop.remove_reader(self.fd)
            loop.remove_writer(self.fd)
            self._waiting = False
