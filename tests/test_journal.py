"""The journal of `tigo-execd run`: what it keeps, where, how it survives damage and full disks."""

from __future__ import annotations

import gzip
import os
import resource
import stat
import subprocess

import pytest

from support.proc import FAKE_TAPTAP, tigo_execd_argv
from support.taptap_lines import power_report
from tigo_execd import journal
from tigo_execd.journal import HOUR_NS, Journal, journal_files, read_file

NS = 1_000_000_000
NOW = 1_795_000_000 * NS  # 2026-11-18T...


def line(i: int, ts: int = NOW) -> bytes:
    return (f"tigo_power_report,gateway_id=4609,node_id={i % 24},src=tigo power_w={i}.5,"
            f"rssi={i}i {ts + i}\n").encode()


class Clock:
    """A host clock and a monotonic clock the test moves."""

    def __init__(self, now: int = NOW) -> None:
        self.now, self.mono = now, 1000.0

    def now_ns(self) -> int:
        return self.now

    def monotonic(self) -> float:
        return self.mono


def make(tmp_path, clock: Clock, **kw) -> Journal:
    return Journal(tmp_path / "journal", now_ns=clock.now_ns, monotonic=clock.monotonic, **kw)


def taptap_lines(tmp_path, count: int):
    path = tmp_path / "taptap.jsonl"
    path.write_bytes(b"".join(power_report(i % 24 + 1, timestamp=f"2026-11-20T10:{i // 60 % 60:02d}:"
                                                                 f"{i % 60:02d}.5+00:00") + b"\n"
                             for i in range(count)))
    return path


def run_child(tmp_path, *args: str, count: int = 30, env: dict | None = None, preexec=None):
    """`run --taptap-cmd` with the fake taptap printing `count` reports, to its end."""
    lines = taptap_lines(tmp_path, count)
    argv = tigo_execd_argv("run", "--taptap-cmd", " ".join([*FAKE_TAPTAP, "observe", "--serial", "/x"]),
                           "--stats-interval", "0", "--state-file", "", "--clock-check", "off", *args)
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": os.getcwd(), "FAKE_TAPTAP_LINES": str(lines),
                                 "FAKE_TAPTAP_THEN": "sleep", **(env or {})},
                            preexec_fn=preexec)
    return proc


def finish_after(proc, count: int) -> tuple[bytes, bytes]:
    """Read `count` report lines, then close stdin (Telegraf's stop) and collect the rest."""
    out = b""
    while out.count(b"\n") < count:
        chunk = proc.stdout.read1(65536)
        assert chunk, proc.stderr.read()
        out += chunk
    proc.stdin.close()
    proc.stdin = None  # closed: Telegraf's stop
    rest, err = proc.communicate(timeout=10)
    return out + rest, err


def test_live_source_journals_by_default_under_the_state_directory(tmp_path):
    proc = run_child(tmp_path, count=30, env={"STATE_DIRECTORY": str(tmp_path / "state")})
    out, err = finish_after(proc, 30)
    assert proc.returncode == 0, err
    directory = tmp_path / "state" / "journal"
    [path] = journal_files(directory)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert gzip.decompress(path.read_bytes()) == out  # zcat reads it; exactly what Telegraf got
    assert b"I! journal: keeping every report in " in err


def test_journal_off_a_file_and_the_demo_keep_nothing(tmp_path):
    proc = run_child(tmp_path, "--journal", "off", count=5, env={"STATE_DIRECTORY": str(tmp_path / "s")})
    finish_after(proc, 5)
    assert not (tmp_path / "s" / "journal").exists()
    backfill = subprocess.run(tigo_execd_argv("run", "--jsonl", str(taptap_lines(tmp_path, 5)),
                                              "--stats-interval", "0", "--clock-check", "off"),
                              capture_output=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": os.getcwd(),
                                   "STATE_DIRECTORY": str(tmp_path / "s")})
    assert backfill.returncode == 0 and backfill.stdout.count(b"\n") == 5
    assert not (tmp_path / "s" / "journal").exists()  # auto: a file can be read again
    demo = subprocess.run(tigo_execd_argv("run", "--demo", "--journal", str(tmp_path / "d"),
                                          "--stats-interval", "0"), capture_output=True,
                          env={**os.environ, "PYTHONPATH": os.getcwd()}, timeout=60)
    assert demo.returncode == 0 and demo.stdout.count(b"\n") > 1000
    assert not (tmp_path / "d").exists()
    assert b"I! --demo keeps no journal: its reports are made up" in demo.stderr


@pytest.mark.parametrize("args, message", [
    (["--journal", ""], b"--journal is empty"),
    (["--journal-days", "0"], b"--journal-days and --journal-max-mb must be positive"),
])
def test_bad_journal_options_are_usage_errors(args, message):
    r = subprocess.run(tigo_execd_argv("run", "--jsonl", "-", *args), capture_output=True,
                       env={**os.environ, "PYTHONPATH": os.getcwd()}, stdin=subprocess.DEVNULL)
    assert r.returncode == 64 and message in r.stderr


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (600, 600))  # Python ignores SIGXFSZ: EFBIG


def test_full_disk_stops_the_journal_never_the_ingest(tmp_path):
    """A file size limit stands in for a full disk: every report still reaches stdout, one W!."""
    proc = run_child(tmp_path, "--journal", str(tmp_path / "j"), "--stats-interval", "3600", count=200,
                     preexec=_limit_file_size)
    out, err = finish_after(proc, 200)
    assert proc.returncode == 0
    *out_lines, stats = out.splitlines(keepends=True)
    out = b"".join(out_lines)
    assert out.count(b"\n") == 200 and b"tigo_ingest" not in out
    assert b"journal_errors=1i" in stats  # the one failure, said in the self-metrics too
    warnings = [x for x in err.decode().splitlines() if "journal stopped, ingest goes on" in x]
    assert len(warnings) == 1 and warnings[0].startswith("W! journal "), err
    [path] = journal_files(tmp_path / "j")
    kept = read_file(path).lines
    assert 0 < len(kept) < 200 and out.startswith(b"\n".join(kept) + b"\n")


def test_unwritable_directory_is_a_warning(tmp_path):
    proc = run_child(tmp_path, "--journal", "/proc/no-such/journal", count=10)
    out, err = finish_after(proc, 10)
    assert proc.returncode == 0 and out.count(b"\n") == 10
    assert b"W! journal /proc/no-such/journal: " in err and b"ingest goes on" in err


def test_write_error_retries_with_a_new_file_after_a_minute(tmp_path, logged):
    clock = Clock()
    j = make(tmp_path, clock)
    j.append(line(1))
    os.close(j.fd)  # the next write fails: EBADF
    j.append(line(2))
    assert "journal stopped, ingest goes on" in logged.getvalue()
    j.append(line(3))  # within RETRY_S: dropped quietly
    clock.mono += journal.RETRY_S
    clock.now += NS
    j.append(line(4))
    j.close()
    got = [x for p in journal_files(j.dir) for x in read_file(p).lines]
    assert got == [line(1).rstrip(), line(4).rstrip()]


def test_blocks_are_gzip_members_and_a_torn_last_block_is_skipped(tmp_path):
    clock = Clock()
    j = make(tmp_path, clock)
    for i in range(10):
        j.append(line(i))
        clock.mono += journal.BLOCK_S / 4  # a block closes every 4 appends
    j.close()
    [path] = journal_files(j.dir)
    data = path.read_bytes()
    assert data.count(b"\x1f\x8b\x08") >= 3  # several members
    assert gzip.decompress(data).count(b"\n") == 10
    # power loss: the last member cut short, then zeros where the kernel had not written yet
    cut = data[:data.rindex(b"\x1f\x8b\x08") + 30] + b"\0" * 512
    path.write_bytes(cut)
    read = read_file(path)
    assert read.torn and read.lines == [line(i).rstrip() for i in range(8)]


def test_a_killed_writer_leaves_every_line_it_handed_over(tmp_path):
    """The open block has no trailer yet (the process was killed): its lines are all readable."""
    j = make(tmp_path, Clock())
    for i in range(5):
        j.append(line(i))
    [path] = journal_files(j.dir)  # not closed: as after SIGKILL
    read = read_file(path)
    assert read.torn and read.lines == [line(i).rstrip() for i in range(5)]


def test_garbage_and_foreign_files_are_ignored(tmp_path):
    j = make(tmp_path, Clock())
    j.append(line(1))
    j.close()
    (j.dir / "tigo-20261101T00.lp.gz").write_bytes(b"an older layout")  # no start in the name
    (j.dir / "notes.txt").write_text("mine")
    bad = j.dir / "tigo-20261102T00-1.lp.gz"
    bad.write_bytes(b"not gzip at all\n")
    assert bad in journal_files(j.dir) and len(journal_files(j.dir)) == 2
    assert read_file(bad).lines == [] and read_file(bad).torn


def test_retention_by_age_and_by_size(tmp_path):
    clock = Clock()
    j = make(tmp_path, clock, days=2, max_bytes=10_000)
    j.dir.mkdir(parents=True)
    old = j.dir / "tigo-20261114T00-1.lp.gz"     # 4 days before NOW
    young = j.dir / "tigo-20261117T12-2.lp.gz"   # within 2 days
    future = j.dir / "tigo-20300101T00-3.lp.gz"  # a clock that was ahead once: kept by age
    foreign = j.dir / "keep-me.gz"
    for p in (old, young, future, foreign):
        p.write_bytes(b"x" * 100)
    j.append(line(1))
    assert not old.exists() and young.exists() and future.exists() and foreign.exists()
    young.write_bytes(b"x" * 20_000)  # now over the cap: the oldest go first, never the current
    j.append(line(2, NOW + HOUR_NS))
    assert not young.exists() and future.exists() and foreign.exists()
    assert len(journal_files(j.dir)) == 3  # future, the first file, the current


def test_clock_jumps_start_new_files_and_never_touch_old_ones(tmp_path):
    """taptap dates reports by the host clock: when NTP steps it, report times jump. Files follow
    the report times, never append to an earlier file, and age by report time, not host clock."""
    clock = Clock()
    j = make(tmp_path, clock)
    j.append(line(1, NOW))
    clock.now -= 2 * HOUR_NS  # the clock steps back two hours
    j.append(line(2, NOW - 2 * HOUR_NS))
    clock.now += 2 * HOUR_NS + 60 * NS  # and forward again
    j.append(line(3, NOW + 60 * NS))
    clock.now += 30 * 24 * HOUR_NS  # a host clock a month ahead (reports still dated right)
    j.append(line(4, NOW + 120 * NS))  # same hour: the same file goes on, nothing is pruned
    j.close()
    files = journal_files(j.dir)
    assert [journal.file_hour_ns(p) for p in files] == [
        (NOW - 2 * HOUR_NS) // HOUR_NS * HOUR_NS, NOW // HOUR_NS * HOUR_NS, NOW // HOUR_NS * HOUR_NS]
    assert sorted(x for p in files for x in read_file(p).lines) == sorted(
        line(i, t).rstrip() for i, t in ((1, NOW), (2, NOW - 2 * HOUR_NS), (3, NOW + 60 * NS),
                                         (4, NOW + 120 * NS)))


def seeded(tmp_path, sizes: dict[str, int]):
    """A journal directory holding files of the given names and sizes (their reports' hours)."""
    directory = tmp_path / "j"
    directory.mkdir(parents=True)
    for name, size in sizes.items():
        (directory / name).write_bytes(b"x" * size)
    return directory


def test_journal_days_deletes_files_a_whole_day_older_than_the_newest_report(tmp_path):
    """The reports are of 2026-11-20T10: with --journal-days 1 a file of 2026-11-19T10 (its hour
    ended exactly a day before 11:00) goes, one of T11 stays; the default 14 days keep both."""
    names = {"tigo-20261119T10-1.lp.gz": 100, "tigo-20261119T11-2.lp.gz": 100}
    for args, kept in ((["--journal-days", "1"], ["tigo-20261119T11-2.lp.gz"]), ([], sorted(names))):
        directory = seeded(tmp_path / str(len(args)), names)
        proc = run_child(tmp_path, "--journal", str(directory), *args, count=3)
        assert finish_after(proc, 3) and proc.returncode == 0
        assert sorted(p.name for p in journal_files(directory))[:-1] == kept  # and the new file


def test_journal_max_mb_deletes_the_oldest_files_beyond_the_cap(tmp_path):
    names = {"tigo-20261120T08-1.lp.gz": 600_000, "tigo-20261120T09-2.lp.gz": 600_000}
    directory = seeded(tmp_path, names)
    proc = run_child(tmp_path, "--journal", str(directory), "--journal-max-mb", "1", count=3)
    _, err = finish_after(proc, 3)
    assert proc.returncode == 0
    left = sorted(p.name for p in journal_files(directory))
    assert left[0] == "tigo-20261120T09-2.lp.gz" and len(left) == 2  # 1.2 MB > 1 MiB: one goes
    assert b"I! journal: deleted tigo-20261120T08-1.lp.gz to stay within the size cap (1 MiB)" in err
