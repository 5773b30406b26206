"""Telegraf stops reading stdout: tigo-execd keeps reading its source, holds a bounded backlog,
drops the oldest whole lines when it is full, and counts and says what it dropped.

The reader that pauses is the test itself: it stops reading the child's stdout pipe (or, for the
Output unit tests, a pipe shrunk to one page) and resumes later.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import selectors
import threading
import time
from pathlib import Path

from support.proc import Child, tigo_execd_argv
from support.taptap_lines import NS, power_report, stamp
from tigo_execd.ingest.output import Output

F_SETPIPE_SZ = 1031
CYCLE_NODES = 50            # a large home site: one report per node per cycle
T0 = 1_795_000_000          # 2026-11-18, a cycle every 20 s from there


def reports(count: int) -> bytes:
    """`count` distinct taptap reports (node, cycle time), as taptap prints them."""
    lines = []
    for i in range(count):
        cycle, node = divmod(i, CYCLE_NODES)
        at = stamp((T0 + 20 * cycle) * NS + 123_456_000, digits=6)
        lines.append(power_report(node + 1, 4609, at, voltage_in=30.5 + node / 100))
    return b"\n".join(lines) + b"\n"


def rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1))


def pause_stdout(child: Child) -> None:
    """Stop reading the child's stdout (its pipe fills up); stderr is still collected."""
    child.sel.unregister(child.proc.stdout)


def resume_stdout(child: Child) -> None:
    child.sel.register(child.proc.stdout, selectors.EVENT_READ)


def feed(child: Child, data: bytes) -> threading.Thread:
    """Write `data` to the child's stdin from a thread (it blocks while the child does not read)."""
    def write() -> None:
        child.proc.stdin.write(data)
        child.proc.stdin.flush()
    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    return writer


def final_stats(child: Child) -> dict[str, int]:
    last = child.stdout_lines()[-1]
    assert last.startswith("tigo_ingest,"), last
    return {k: int(v.rstrip("i")) for k, v in (f.split("=") for f in last.split(" ")[1].split(","))
            if v.endswith("i")}


def power_lines(child: Child) -> list[bytes]:
    return [line for line in child.out.splitlines(True) if line.startswith(b"tigo_power_report,")]


def test_stalled_reader_input_keeps_draining_memory_bounded_drops_counted(influx_db):
    warmup, sent = 2_000, 60_000  # about 12 MB of line protocol against a 1 MiB backlog
    data = reports(warmup + sent)
    child = Child(tigo_execd_argv("run", "--jsonl", "-", "--stats-interval", "3600",
                                  "--max-buffer-mb", "1"))
    try:
        first = b"".join(data.splitlines(True)[:warmup])
        feed(child, first).join(10)
        child.wait_for(lambda: len(power_lines(child)) == warmup, 10, "the warm-up reports")
        rss_start = rss_kb(child.proc.pid)  # imported, converted, written: the steady state
        pause_stdout(child)
        writer = feed(child, data[len(first):])
        # the input drains although nobody reads stdout
        writer.join(30)
        assert not writer.is_alive(), "tigo-execd stopped reading its input while stdout stalled"
        child.wait_stderr(b"W! dropped the oldest", timeout=10)
        grown_mb = (rss_kb(child.proc.pid) - rss_start) / 1024
        assert grown_mb < 8, f"RSS grew by {grown_mb:.1f} MB with a 1 MiB backlog"
        assert b"Telegraf is not reading tigo-execd's stdout" in child.err
        resume_stdout(child)
        child.wait_stderr(b"I! stdout is read again", timeout=10)
    finally:
        child.close_stdin()
    assert child.finish(10) == 0
    stats = final_stats(child)
    received = power_lines(child)
    assert stats["reports"] == warmup + sent
    assert stats["reports_dropped"] > 0 and stats["stdout_backlog_bytes"] == 0
    assert len(received) + stats["reports_dropped"] == warmup + sent
    # whole lines only, oldest dropped: what arrived is the newest, in order, each line complete
    nodes_times = [(l.split(b",node_id=")[1].split(b",")[0], l.rsplit(b" ", 1)[1]) for l in received]
    assert nodes_times == sorted(nodes_times, key=lambda nt: (int(nt[1]), int(nt[0])))
    last_cycle = (warmup + sent) // CYCLE_NODES - 1
    assert nodes_times[-1] == (str(CYCLE_NODES).encode(),
                               b"%d\n" % ((T0 + 20 * last_cycle) * 10**9 + 123456000))
    influx_db.write(b"".join(received))  # InfluxDB rejects a batch with any broken line
    count = influx_db.query("SELECT count(power_w) FROM tigo_power_report")[0]["values"][0][1]
    assert count == len(received)
    assert len(re.findall(rb"W! dropped the oldest", child.err)) <= 2  # rate-limited


def test_a_file_source_waits_for_the_reader_and_loses_nothing(tmp_path):
    path = tmp_path / "backfill.jsonl"
    sent = 30_000
    path.write_bytes(reports(sent))
    child = Child(tigo_execd_argv("run", "--jsonl", str(path), "--stats-interval", "3600",
                                  "--max-buffer-mb", "1"), stdin=None)
    pause_stdout(child)
    time.sleep(1.0)  # the reader is away; a file source must simply wait
    assert child.proc.poll() is None
    assert rss_kb(child.proc.pid) < 80 * 1024
    resume_stdout(child)
    assert child.finish(30) == 0
    stats = final_stats(child)
    assert len(power_lines(child)) == stats["reports"] == sent and stats["reports_dropped"] == 0
    assert b"dropped" not in child.err


def test_exit_with_a_stalled_reader_counts_what_stays_unwritten():
    sent = 20_000
    child = Child(tigo_execd_argv("run", "--jsonl", "-", "--stats-interval", "3600",
                                  "--max-buffer-mb", "1"))
    pause_stdout(child)
    writer = feed(child, reports(sent))
    writer.join(30)
    assert not writer.is_alive()
    t0 = time.monotonic()
    child.close_stdin()  # Telegraf stopping us: EOF on the input as well
    child.wait_for(lambda: child.proc.poll() is not None, 10, "exit")
    assert time.monotonic() - t0 < 3.0  # the 2 s budget, and the interpreter's exit
    resume_stdout(child)
    assert child.finish(10) == 0
    m = re.search(rb"W! exiting with (\d+) reports and (\d+) other lines not written \(not read "
                  rb"within [\d.]+ s; reports_dropped=(\d+)\)", child.err)
    assert m, child.err[-2000:]
    assert int(m.group(2)) == 1  # the final tigo_ingest line waits behind the reports
    received = power_lines(child)
    assert len(received) + int(m.group(3)) == sent
    assert all(line.endswith(b"\n") and line.count(b" ") == 2 for line in received)


# Output itself, on a pipe of one page, with lines of many sizes: partial writes happen all the
# time, and a line the pipe took in part must be completed before anything else is written.

def run_output(lines: list[bytes], max_bytes: int, chunk: int, read_at: int) -> tuple[bytes, Output]:
    """Write `lines` in chunks while nobody reads; start reading after `read_at` chunks."""
    r, w = os.pipe()
    fcntl.fcntl(w, F_SETPIPE_SZ, 4096)
    got = bytearray()

    async def scenario() -> Output:
        out = Output(fd=w, max_bytes=max_bytes, drop=True)
        await out.open()
        loop = asyncio.get_running_loop()
        for i in range(0, len(lines), chunk):
            if i == read_at * chunk:
                os.set_blocking(r, False)
                loop.add_reader(r, lambda: got.extend(os.read(r, 65536)))
            out.write(b"".join(lines[i:i + chunk]))
            await asyncio.sleep(0)
        if read_at * chunk >= len(lines):
            os.set_blocking(r, False)
            loop.add_reader(r, lambda: got.extend(os.read(r, 65536)))
        await out.close(timeout=5)
        loop.remove_reader(r)
        return out

    try:
        out = asyncio.run(scenario())
        os.set_blocking(r, False)
        with contextlib.suppress(BlockingIOError):
            got.extend(os.read(r, 1 << 20))
    finally:
        os.close(r)
        os.close(w)
    return bytes(got), out


def test_output_drops_oldest_whole_lines_and_counts_them_exactly():
    lines = [b"m,n=%d f=%s %d\n" % (i, b"x" * (i * 37 % 900), i) for i in range(3000)]
    got, out = run_output(lines, max_bytes=20_000, chunk=50, read_at=40)
    received = got.splitlines(True)
    assert set(received) <= set(lines), "a broken or merged line reached the reader"
    assert received == sorted(received, key=lines.index)  # in order, oldest ones missing
    assert len(received) + out.reports_dropped == len(lines)
    assert out.reports_dropped > 0 and out.held_bytes == 0
    assert received[-1] == lines[-1]


def test_output_with_a_reader_that_keeps_up_drops_nothing():
    lines = [b"m,n=%d f=1 %d\n" % (i, i) for i in range(5000)]
    got, out = run_output(lines, max_bytes=4096, chunk=10, read_at=0)
    assert got == b"".join(lines) and out.reports_dropped == 0
