"""Is this host's clock, and so taptap's report times, to be trusted?

A Raspberry Pi has no real-time clock: it boots at 1970 or at the time fake-hwclock saved at the
last shutdown, and is right only once NTP has set it. taptap dates every report by the host clock,
so until then reports carry wrong times. Two separate judgements:

- the kernel's NTP status (adjtimex): reported as `clock_synced`, logged on change, never a reason
  to drop anything (many correct clocks are "unsynchronised": no NTP daemon, containers, CI);
- each report time: one before this release or far ahead of the host clock cannot be a live
  report, so it is not written (counted and logged). Only report times not seen before are judged
  (the converter's cache-miss path), so the per-report hot path costs nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import datetime as dt
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from tigo_execd.log import log

NS = 1_000_000_000
# The release date of this version: no report taptap dates by a correct clock can be older.
# Move it forward with each release.
RELEASE_DATE = dt.date(2026, 11, 1)
FLOOR_NS = int(dt.datetime(RELEASE_DATE.year, RELEASE_DATE.month, RELEASE_DATE.day,
                           tzinfo=dt.UTC).timestamp()) * NS
FUTURE_MARGIN_NS = 600 * NS   # taptap dates reports a few seconds after they were measured
STEP_NS = NS                  # a change of realtime - monotonic beyond this is a clock step
POLL_S = 10.0                 # how often the kernel's NTP status is read

# <sys/timex.h>
STA_UNSYNC = 0x0040
TIME_ERROR = 5
STATES = {0: "TIME_OK", 1: "TIME_INS", 2: "TIME_DEL", 3: "TIME_OOP", 4: "TIME_WAIT", 5: "TIME_ERROR"}
FIX = ("enable NTP: `sudo timedatectl set-ntp true` (systemd-timesyncd) or install chrony, "
       "and check that the host reaches an NTP server")

_TS = re.compile(rb"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?"
                 rb"(?:[Zz]|([+-])(\d\d):?(\d\d))")
_EPOCH = dt.date(1970, 1, 1).toordinal()
# InfluxDB stores int64 nanoseconds; it rejects the extremes of the range.
_TS_MIN, _TS_MAX = -9_223_372_036_854_775_806, 9_223_372_036_854_775_806


def parse_timestamp(text: str) -> int:
    """RFC 3339 text with 0-9 fractional digits and `Z` or any offset -> exact epoch nanoseconds.

    Python's datetime keeps microseconds only, so the fraction is carried as an integer.
    Raises ValueError for anything else, including impossible dates and out-of-range instants.
    """
    m = _TS.fullmatch(text.encode("ascii", "replace"))
    if not m:
        raise ValueError(f"timestamp {text[:40]!r} is not RFC 3339")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    frac, sign, off_h, off_m = m.group(7), m.group(8), m.group(9), m.group(10)
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError(f"timestamp {text!r} has an impossible time of day")
    try:
        days = dt.date(year, month, day).toordinal() - _EPOCH
    except ValueError:
        raise ValueError(f"timestamp {text!r} has an impossible date") from None
    seconds = days * 86400 + hour * 3600 + minute * 60 + second
    if sign:
        oh, om = int(off_h), int(off_m)
        if oh > 23 or om > 59:
            raise ValueError(f"timestamp {text!r} has an impossible UTC offset")
        seconds -= (1 if sign == b"+" else -1) * (oh * 3600 + om * 60)
    ns = seconds * NS + (int(frac.ljust(9, b"0")) if frac else 0)
    if not _TS_MIN <= ns <= _TS_MAX:
        raise ValueError(f"timestamp {text!r} is outside the range InfluxDB can store")
    return ns



class ImplausibleTime(ValueError):
    """A report time this host cannot have given a live report; counted apart from invalid lines."""


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    """struct timex of glibc/musl (the `adjtimex` symbol: C longs, also on 32-bit ARM)."""

    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("constant", ctypes.c_long), ("precision", ctypes.c_long),
                ("tolerance", ctypes.c_long), ("time", _Timeval), ("tick", ctypes.c_long),
                ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long), ("shift", ctypes.c_int),
                ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long),
                ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int),
                ("_reserved", ctypes.c_int * 11)]


@dataclass(frozen=True)
class KernelClock:
    """What adjtimex says about the system clock (the same as timedatectl's "synchronized")."""

    state: int        # adjtimex's return value: TIME_OK ... TIME_ERROR
    status: int       # STA_* bits
    maxerror_us: int  # the kernel's bound on the clock's error

    @property
    def synced(self) -> bool:
        return not self.status & STA_UNSYNC and self.state != TIME_ERROR

    def describe(self) -> str:
        unsync = ", STA_UNSYNC" if self.status & STA_UNSYNC else ""
        return f"adjtimex: {STATES.get(self.state, self.state)}{unsync}"


def read_kernel_clock() -> KernelClock | None:
    """The kernel's NTP status, read-only (modes 0: no privilege needed); None when unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        adjtimex = libc.adjtimex
    except (OSError, AttributeError):
        return None
    adjtimex.argtypes = [ctypes.POINTER(_Timex)]
    adjtimex.restype = ctypes.c_int
    tx = _Timex()
    state = adjtimex(ctypes.byref(tx))
    if state < 0:
        return None
    return KernelClock(state, tx.status, tx.maxerror)


def iso_utc(ns: int, zulu: bool = False) -> str:
    """A time as ISO 8601 UTC to the second (2026-06-21T11:59:42+00:00, or ...42Z with `zulu`), for
    log lines and the commands' output; readable whatever the value (a report time may be absurd)."""
    try:
        text = dt.datetime.fromtimestamp(ns / NS, dt.UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return f"{ns} ns since 1970"
    return text.removesuffix("+00:00") + "Z" if zulu else text


class TimeCheck:
    """Judges report times against the floor and the host clock (the clocks are injectable)."""

    def __init__(self, floor_ns: int = FLOOR_NS, margin_ns: int = FUTURE_MARGIN_NS,
                 now_ns: Callable[[], int] = time.time_ns,
                 monotonic_ns: Callable[[], int] = time.monotonic_ns) -> None:
        self.floor_ns, self.margin_ns = floor_ns, margin_ns
        self.now_ns, self.monotonic_ns = now_ns, monotonic_ns
        self._offset = now_ns() - monotonic_ns()
        self._rejected = 0  # since the last plausible time

    def stepped(self) -> bool:
        """True once after each step of the host clock (NTP setting it, someone running `date`)."""
        offset = self.now_ns() - self.monotonic_ns()
        if abs(offset - self._offset) <= STEP_NS:
            return False
        log.info(f"the host clock stepped by {(offset - self._offset) / NS:+.1f} s")
        self._offset = offset
        return True

    def plausible(self, ns: int) -> bool:
        """False (with a rate-limited W!) for a time no live report can have; an I! on recovery."""
        now = self.now_ns()
        if ns < self.floor_ns:
            why = f"older than this release of tigo-execd ({RELEASE_DATE})"
        elif ns > now + self.margin_ns:
            why = f"{(ns - now) / 60e9:.0f} min ahead of the host clock"
        else:
            if self._rejected:
                log.info(f"report times are plausible again (report {iso_utc(ns)}, host "
                         f"{iso_utc(now)}): writing resumed after {self._rejected} reports not written")
                self._rejected = 0
            return True
        self._rejected += 1
        log.warn(f"not writing a report dated {iso_utc(ns)}: {why}; host clock {iso_utc(now)}. "
                 f"taptap dates reports by this host's clock, so it was wrong when taptap read the bus: "
                 f"{FIX}. Writing resumes by itself once report times are plausible "
                 f"(reports_clock_rejected counts them)", key="clock-implausible")
        return False


class ClockWatch:
    """The kernel's NTP status for the `clock_synced` field: one W! when unsynchronised, one I!
    when synchronised after that. Information only: nothing is dropped for it."""

    def __init__(self, read: Callable[[], KernelClock | None] = read_kernel_clock,
                 interval: float = POLL_S) -> None:
        self.read, self.interval = read, interval
        self.synced: bool | None = None
        self._failed = False

    def poll(self) -> None:
        clock = self.read()
        if clock is None:
            if not self._failed:
                log.debug("cannot read the kernel's clock status (adjtimex): clock_synced omitted")
                self._failed = True
            self.synced = None
            return
        if clock.synced == self.synced:
            return
        if not clock.synced:
            log.warn(f"the host clock is not synchronised ({clock.describe()}): taptap dates "
                     f"reports by it, and after a boot without network a Raspberry Pi's clock is "
                     f"wrong (1970 or the last shutdown). Reports are still written while their "
                     f"times are plausible; to be sure of them, {FIX}")
        elif self.synced is False:
            log.info(f"the host clock is synchronised now ({clock.describe()})")
        self.synced = clock.synced

    def fields(self) -> dict[str, int]:
        return {} if self.synced is None else {"clock_synced": int(self.synced)}

    async def run(self) -> None:
        while True:
            self.poll()
            await asyncio.sleep(self.interval)
