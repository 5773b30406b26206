"""Clocks: report times judged against a fake host clock, the kernel's NTP status read for real
and through a fake reader, and the wiring in `tigo-execd run` (a fake taptap printing reports
dated 1970, then reports dated now)."""

from __future__ import annotations

import ctypes
import time

import pytest

from support.proc import FAKE_TAPTAP, Child, tigo_execd_argv
from support.taptap_lines import power_report, stamp
from tigo_execd import clock
from tigo_execd.clock import (
    FLOOR_NS,
    NS,
    STA_UNSYNC,
    TIME_ERROR,
    ClockWatch,
    KernelClock,
    TimeCheck,
    read_kernel_clock,
)
from tigo_execd.ingest.convert import Converter

NOW = FLOOR_NS + 30 * 86400 * NS  # the fake host clock: a month after the release


class FakeClock:
    """CLOCK_REALTIME and CLOCK_MONOTONIC of a host whose realtime clock can be stepped."""

    def __init__(self, now_ns: int = NOW) -> None:
        self.realtime, self.monotonic = now_ns, 1000 * NS

    def now_ns(self) -> int:
        return self.realtime

    def monotonic_ns(self) -> int:
        return self.monotonic

    def advance(self, seconds: float) -> None:
        self.realtime += int(seconds * NS)
        self.monotonic += int(seconds * NS)

    def step(self, seconds: float) -> None:
        self.realtime += int(seconds * NS)


def report(ns: int, node: int = 1) -> bytes:
    return power_report(node, 1, stamp(ns))


def checked_converter(fake: FakeClock) -> Converter:
    conv = Converter()
    conv.time_check = TimeCheck(now_ns=fake.now_ns, monotonic_ns=fake.monotonic_ns)
    return conv


def written_times(out: str) -> list[int]:
    return [int(line.rsplit(" ", 1)[1]) for line in out.splitlines()]


def test_reports_before_the_release_are_not_written_counted_and_said_then_writing_resumes(logged):
    fake = FakeClock(NOW)
    conv = checked_converter(fake)
    boot = 5 * NS  # a Pi booted without RTC: 1970, and taptap dates reports by it
    assert conv.convert_lines([report(boot, n) for n in (1, 2, 3)]) == ""
    c = conv.counters
    assert (c.reports_clock_rejected, c.reports, c.lines_invalid, c.lines_read) == (3, 0, 0, 3)
    warnings = [l for l in logged.getvalue().splitlines() if l.startswith("W! ")]
    assert len(warnings) == 1  # rate-limited: one line for the three
    assert "1970-01-01T00:00:05+00:00" in warnings[0] and stamp(NOW)[:19] in warnings[0]
    assert "older than this release" in warnings[0] and "timedatectl set-ntp true" in warnings[0]
    # NTP sets the clock; taptap's next reports carry sane times: written again, by themselves
    out = conv.convert_lines([report(NOW - 2 * NS, n) for n in (1, 2, 3)])
    assert written_times(out) == [NOW - 2 * NS] * 3
    assert c.reports_clock_rejected == 3 and c.reports == 3
    assert "I! report times are plausible again" in logged.getvalue()
    assert "after 3 reports not written" in logged.getvalue()


@pytest.mark.parametrize("ahead_s, written", [(9 * 60, True), (11 * 60, False), (-86400 * 20, True)])
def test_reports_far_ahead_of_the_host_clock_are_not_written(logged, ahead_s, written):
    fake = FakeClock(NOW)
    conv = checked_converter(fake)
    out = conv.convert_lines([report(NOW + ahead_s * NS)])
    assert bool(out) is written
    assert conv.counters.reports_clock_rejected == (0 if written else 1)
    assert ("min ahead of the host clock" in logged.getvalue()) is not written


def test_a_cached_time_is_judged_again_after_a_clock_step(logged):
    """A host clock an hour fast (then stepped back by NTP): a time it gave, cached while it was
    plausible, is rejected once the step is noticed, and only what is plausible is written."""
    fake = FakeClock(NOW)
    conv = checked_converter(fake)
    fast = NOW  # dated by the fast clock
    assert written_times(conv.convert_lines([report(fast, 1), report(fast, 2)])) == [fast, fast]
    fake.step(-3600)  # NTP steps the host clock back an hour
    fake.advance(20)
    sane = fake.realtime - NS
    assert written_times(conv.convert_lines([report(sane, 1)])) == [sane]  # a new time: step seen
    assert "the host clock stepped by -3600.0 s" in logged.getvalue()
    assert conv.convert_lines([report(fast, 3)]) == ""  # no longer accepted from the cache
    assert conv.counters.reports_clock_rejected == 1


def test_without_a_time_check_any_time_is_written():
    """--jsonl backfill: a file's times were dated when it was recorded."""
    conv = Converter()
    assert written_times(conv.convert_lines([report(5 * NS)])) == [5 * NS]
    assert conv.counters.reports_clock_rejected == 0


@pytest.mark.parametrize("state, status, synced", [
    (0, 0x2001, True),                     # TIME_OK, STA_PLL|STA_NANO: NTP keeps the clock
    (0, 0x2001 | STA_UNSYNC, False),
    (TIME_ERROR, STA_UNSYNC, False),       # no NTP daemon: what this VM and CI say
    (TIME_ERROR, 0, False),
    (1, 0x0011, True),                     # TIME_INS (leap second pending) is synchronised
])
def test_kernel_status_is_read_as_timedatectl_does(state, status, synced):
    k = KernelClock(state, status, 16_000_000)
    assert k.synced is synced
    assert ("STA_UNSYNC" in k.describe()) is bool(status & STA_UNSYNC)


def test_adjtimex_is_read_on_this_machine_and_its_failure_is_not_an_error(monkeypatch):
    k = read_kernel_clock()
    assert k is not None and 0 <= k.state <= 5 and k.maxerror_us >= 0
    assert ctypes.sizeof(clock._Timex) >= 128  # the kernel's struct (208 bytes on 64-bit)

    def no_libc(*args, **kwargs):
        raise OSError("no libc here")
    monkeypatch.setattr(clock.ctypes, "CDLL", no_libc)
    assert read_kernel_clock() is None


def test_clock_synced_transitions_are_logged_once_each(logged):
    readings = iter([KernelClock(TIME_ERROR, STA_UNSYNC, 16_000_000)] * 2
                    + [KernelClock(0, 0x2001, 30_000)] * 2 + [None, None])
    watch = ClockWatch(read=lambda: next(readings))
    seen = []
    for _ in range(6):
        watch.poll()
        seen.append(watch.fields())
    assert seen == [{"clock_synced": 0}] * 2 + [{"clock_synced": 1}] * 2 + [{}] * 2
    lines = logged.getvalue().splitlines()
    assert [l[:2] for l in lines] == ["W!", "I!", "D!"]
    assert "not synchronised" in lines[0] and "systemd-timesyncd" in lines[0]
    assert "Reports are still written" in lines[0]
    assert lines[1].startswith("I! the host clock is synchronised now")


def test_a_clock_synchronised_from_the_start_is_not_announced(logged):
    watch = ClockWatch(read=lambda: KernelClock(0, 0x2001, 30_000))
    watch.poll()
    assert watch.fields() == {"clock_synced": 1} and logged.getvalue() == ""


@pytest.mark.parametrize("check", ["on", "auto"])  # auto: taptap dates these reports by our clock
def test_run_does_not_write_reports_dated_1970_and_resumes_with_sane_ones(tmp_path, check):
    now = time.time_ns()
    lines = tmp_path / "taptap.jsonl"
    lines.write_bytes(b"\n".join([report(5 * NS, n) for n in (1, 2)]
                                 + [report(now - NS, n) for n in (1, 2, 3)]) + b"\n")
    taptap = " ".join([*FAKE_TAPTAP, "observe", "--serial", "/dev/null"])
    child = Child(tigo_execd_argv("run", "--taptap-cmd", taptap, "--clock-check", check,
                                  "--stats-interval", "0.2"),
                  env={"FAKE_TAPTAP_LINES": str(lines), "FAKE_TAPTAP_THEN": "sleep"})
    try:
        child.wait_stdout(b"reports_clock_rejected=2i", timeout=10)
        child.wait_stdout(b"reports=3i", timeout=10)
    finally:
        child.close_stdin()
    assert child.finish(5) == 0
    out = child.stdout_lines()
    assert [int(l.rsplit(" ", 1)[1]) for l in out if l.startswith("tigo_power_report,")] == \
        [now - NS] * 3
    stats = [l for l in out if l.startswith("tigo_ingest,")][-1]
    assert "clock_synced=" in stats  # 0 or 1: whatever this machine's kernel says
    assert b"W! not writing a report dated 1970-01-01T00:00:05+00:00" in child.err
    assert b"I! report times are plausible again" in child.err


def test_a_jsonl_backfill_is_not_judged_by_default(tmp_path):
    path = tmp_path / "old.jsonl"
    path.write_bytes(report(1_600_000_000 * NS) + b"\n")
    child = Child(tigo_execd_argv("run", "--jsonl", str(path), "--stats-interval", "1"), stdin=None)
    assert child.finish(10) == 0
    out = child.stdout_lines()
    assert len(out) == 2 and out[0].endswith(" 1600000000000000000")
    assert "clock_synced" not in out[1] and "reports_clock_rejected" not in out[1]
