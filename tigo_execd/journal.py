"""The journal: every power report `run` emits, kept on local disk so `heal` can restore what
InfluxDB missed (an outage longer than Telegraf's buffer, a Telegraf restart while it was down).

Layout: one directory (mode 0700, files 0600: it holds what the bus carries), one file per process
start and per hour of report times (UTC), named `tigo-YYYYMMDDTHH-<host clock ns>.lp.gz`. A file is a series
of independent gzip members (`zcat` reads it); each member is one block of up to BLOCK_S seconds or
BLOCK_BYTES of line protocol. Within a block every chunk is compressed with a sync flush and handed
to the kernel at once, so a killed tigo-execd loses nothing it wrote to stdout, while the kernel
batches the writes to the SD card (dirty pages go out about every 30 s). A file is never appended to
by a later process, so a torn tail (power loss) can only be the end of a file: the reader keeps the
complete lines before it and skips the rest.

The ingest never waits for or fails because of the journal: any OSError (full disk, read-only or
vanished directory) stops it with a rate-limited W!; it tries again with a new file RETRY_S later.
Retention: files whose reports are older than `days` (the hour in their name) and, beyond
`max_bytes`, the oldest files are deleted whenever a new file starts; the file being written is
never deleted. Files are named by their reports' times, not by the host clock, so a clock that
was wrong for a while (a Pi before NTP) neither ages nor shelters the reports written meanwhile.
"""

from __future__ import annotations

import calendar
import contextlib
import os
import re
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tigo_execd.clock import NS
from tigo_execd.log import log
from tigo_execd.systemd import state_dir

NAME = re.compile(r"tigo-(\d{8}T\d{2})-(\d+)\.lp\.gz")  # anything else in the directory is ignored
HOUR_NS = 3600 * NS
BLOCK_S = 300.0          # a gzip member (with its CRC) is closed at least this often
BLOCK_BYTES = 1 << 20   # ... or after this much line protocol
LEVEL = 1                # zlib's fastest: 25% more bytes than level 6, 2.5 times the speed
RETRY_S = 60.0           # after a write error, the journal stays off this long
DEFAULT_DAYS = 14.0
DEFAULT_MAX_MB = 256.0
READ_PIECE = 1 << 16
MB = 1 << 20


def default_dir() -> Path:
    """Beside the node registry, in the state directory."""
    return state_dir() / "journal"


def file_hour_ns(path: Path) -> int | None:
    """The hour (UTC) of a journal file's reports; None for a foreign name."""
    m = NAME.fullmatch(path.name)
    if not m:
        return None
    try:
        return calendar.timegm(time.strptime(m[1], "%Y%m%dT%H")) * NS
    except (ValueError, OverflowError):
        return None


def journal_files(directory: Path) -> list[Path]:
    """The journal's files, oldest first (by hour, then start); foreign names are ignored."""
    try:
        names = [p for p in directory.iterdir() if NAME.fullmatch(p.name)]
    except OSError:
        return []
    return sorted(names, key=lambda p: (p.name[5:16], int(NAME.fullmatch(p.name)[2])))  # type: ignore[index]


class Journal:
    """Appends line protocol to the journal directory; `append` never raises and never blocks long."""

    def __init__(self, directory: Path, days: float = DEFAULT_DAYS,
                 max_bytes: int = int(DEFAULT_MAX_MB * MB),
                 now_ns: Callable[[], int] = time.time_ns,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.dir = directory
        self.days = days
        self.max_bytes = max_bytes
        self.now_ns = now_ns  # makes file names unique; tests move it
        self.monotonic = monotonic
        self.fd: int | None = None
        self.path: Path | None = None
        self._hour = -1
        self._z: zlib._Compress | None = None
        self._block_start = 0.0
        self._block_bytes = 0
        self._off_until = 0.0
        self.bytes_written = 0
        self.errors = 0

    def append(self, data: bytes) -> None:
        """Journal whole lines of line protocol (hot path: one compress and one write per chunk)."""
        if self._off_until:
            if self.monotonic() < self._off_until:
                return
            self._off_until = 0.0
        try:
            hour = self._hour_of(data)
            if hour != self._hour or self.fd is None:
                self._open(hour)
            elif (self._block_bytes >= BLOCK_BYTES
                  or self.monotonic() - self._block_start >= BLOCK_S):
                self._end_block()
            z = self._z
            if z is None:
                z = self._z = zlib.compressobj(LEVEL, zlib.DEFLATED, 31)
                self._block_start, self._block_bytes = self.monotonic(), 0
            self._block_bytes += len(data)
            self._write(z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH))
        except OSError as exc:
            self._fail(exc)

    def _hour_of(self, data: bytes) -> int:
        """The hour of the chunk's last report time (live: all of its reports): files are kept
        and pruned by the times InfluxDB has, whatever the host clock said when they were made."""
        end = len(data) - 1
        try:
            return int(data[data.rfind(b" ", 0, end) + 1:end]) // HOUR_NS
        except ValueError:
            return self.now_ns() // HOUR_NS

    def close(self) -> None:
        """Finish the open block (its CRC) and the file; at shutdown."""
        if self.fd is None:
            return
        try:
            self._end_block()
        except OSError as exc:
            self._fail(exc)
            return
        os.close(self.fd)
        self.fd = None

    def _write(self, data: bytes) -> None:
        assert self.fd is not None
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        self.bytes_written += len(data)

    def _end_block(self) -> None:
        if self._z is not None:
            z, self._z = self._z, None
            self._write(z.flush(zlib.Z_FINISH))

    def _open(self, hour: int) -> None:
        """A new file for this hour of reports (or after a restart or an error), then prune."""
        self.close()
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H", time.gmtime(hour * 3600))
        path = self.dir / f"tigo-{stamp}-{self.now_ns()}.lp.gz"
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC,
                          0o600)
        self.path, self._hour = path, hour
        log.debug(f"journal: writing {path}")
        self.prune((hour + 1) * HOUR_NS)

    def prune(self, now: int) -> None:
        """Delete files older than `days` before `now` (the newest report time) and, beyond
        `max_bytes`, the oldest ones."""
        files = [p for p in journal_files(self.dir) if p != self.path]
        cutoff = now - int(self.days * 24 * HOUR_NS)
        sizes: list[tuple[Path, int]] = []
        for p in files:
            hour = file_hour_ns(p)
            try:
                if hour is not None and hour + HOUR_NS <= cutoff:
                    p.unlink()
                    continue
                sizes.append((p, p.stat().st_size))
            except FileNotFoundError:
                continue
        total = sum(size for _, size in sizes)
        for p, size in sizes:  # oldest first
            if total <= self.max_bytes:
                break
            p.unlink(missing_ok=True)
            total -= size
            log.info(f"journal: deleted {p.name} to stay within the size cap "
                     f"({self.max_bytes / MB:g} MiB)", key="journal-cap")

    def _fail(self, exc: OSError) -> None:
        self.errors += 1
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
        self.fd, self._z = None, None
        self._off_until = self.monotonic() + RETRY_S
        log.warn(f"journal {self.dir}: {exc.strerror or exc}: journal stopped, ingest goes on "
                 f"(retrying in {RETRY_S:.0f} s); reports written meanwhile cannot be healed "
                 f"from it", key="journal-error")


@dataclass
class Read:
    """What reading one journal file gave: its lines, and whether its end was torn."""

    lines: list[bytes]
    torn: bool


def read_file(path: Path) -> Read:
    """The complete lines of a journal file. A member that ends early or is corrupt (power loss)
    gives the complete lines before the damage; what follows it in that file is skipped."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        log.warn(f"journal: cannot read {path}: {exc.strerror or exc}", key="journal-read")
        return Read([], True)
    out: list[bytes] = []
    pos, torn = 0, False
    while pos < len(data):
        z = zlib.decompressobj(31)
        pieces: list[bytes] = []
        try:
            while pos < len(data) and not z.eof:
                piece = data[pos:pos + READ_PIECE]
                pieces.append(z.decompress(piece))
                pos += len(piece) - len(z.unused_data)
        except zlib.error:
            torn = True
        text = b"".join(pieces)
        if not z.eof:
            torn = True
            text = text[:text.rfind(b"\n") + 1]  # the complete lines before the damage
        out += text.splitlines()
        if torn:
            break
    return Read(out, torn)

