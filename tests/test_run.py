"""`tigo-execd run` as a process, the way Telegraf's inputs.execd runs it (TELEGRAF.md).

The fake taptap (tests/support/fake_taptap.py) crashes, hangs, writes to stderr and exits with taptap's codes.
"""

from __future__ import annotations

import io
import random
import re
import signal
import time
from pathlib import Path

import orjson
import pytest

from support.proc import FAKE_TAPTAP, Child, pid_alive, tigo_execd_argv
from tigo_execd.log import Log

DATA = Path(__file__).parent / "data"
PREFIXES = ("E! ", "W! ", "I! ", "D! ")


def taptap_cmd(*args: str) -> str:
    """The fake taptap replays the 2024/2025 samples: run it with `--clock-check off`."""
    return " ".join([*FAKE_TAPTAP, "observe", "--serial", "/dev/null", *args])


def run(*args: str, env=None, **kw) -> Child:
    return Child(tigo_execd_argv("run", *args), env=env, **kw)


def assert_prefixed(child: Child) -> None:
    bad = [line for line in child.stderr_lines() if not line.startswith(PREFIXES)]
    assert not bad, f"stderr lines without a Telegraf level prefix: {bad}"


def started_pids(path: Path) -> list[int]:
    return [int(line.split()[0]) for line in path.read_text().splitlines()] if path.exists() else []


def test_jsonl_file_converts_and_exits_0_at_eof():
    child = run("--jsonl", str(DATA / "taptap-fork.jsonl"), "--stats-interval", "60")
    assert child.finish() == 0
    lines = child.stdout_lines()
    assert len(lines) == 8  # 7 reports and the final tigo_ingest line
    assert lines[-1].startswith("tigo_ingest,source=jsonl lines_read=10i,reports=7i,lines_skipped=1i,"
                                "lines_invalid=0i,infrastructure_reports=2i,nodes_seen=5i,")
    assert_prefixed(child)


def test_jsonl_from_stdin_pipe_is_the_data():
    child = run("--jsonl", "-", "--stats-interval", "0")
    child.proc.stdin.write((DATA / "taptap-upstream.jsonl").read_bytes())
    child.close_stdin()
    assert child.finish() == 0
    assert len(child.stdout_lines()) == 10


def test_a_report_is_written_at_once_while_taptap_keeps_running(tmp_path):
    lines = tmp_path / "one.jsonl"
    lines.write_bytes((DATA / "taptap-upstream.jsonl").read_bytes().splitlines(True)[0])
    child = run("--taptap-cmd", taptap_cmd(), "--stats-interval", "0", "--clock-check", "off",
                env={"FAKE_TAPTAP_LINES": str(lines), "FAKE_TAPTAP_THEN": "sleep"})
    try:
        child.wait_stdout(b"node_id=116", timeout=10)
        assert child.proc.poll() is None
    finally:
        child.close_stdin()
    assert child.finish(5) == 0


@pytest.mark.parametrize("how", ["stdin-eof", "SIGTERM", "SIGINT"])
def test_shutdown_within_2s_stops_and_reaps_taptap(tmp_path, how):
    starts = tmp_path / "starts"
    child = run("--taptap-cmd", taptap_cmd(), "--stats-interval", "0",
                env={"FAKE_TAPTAP_THEN": "hang", "FAKE_TAPTAP_STARTS": str(starts)})
    child.wait_for(lambda: started_pids(starts), 10, "taptap started")
    child.wait_stderr(b"started taptap")
    taptap_pid = started_pids(starts)[0]
    t0 = time.monotonic()
    if how == "stdin-eof":
        child.close_stdin()
    else:
        child.proc.send_signal(getattr(signal, how))
    assert child.finish(5) == 0
    assert time.monotonic() - t0 < 2.0
    assert not pid_alive(taptap_pid)  # the fake ignores SIGTERM: it was SIGKILLed and reaped
    assert b"Traceback" not in child.err
    assert_prefixed(child)


def test_closed_stdout_exits_0_without_traceback(tmp_path):
    child = run("--taptap-cmd", taptap_cmd(), "--stats-interval", "0.05",
                env={"FAKE_TAPTAP_THEN": "sleep"})
    child.wait_stdout(b"tigo_ingest")
    child.sel.unregister(child.proc.stdout)
    child.proc.stdout.close()
    child.wait_for(lambda: child.proc.poll() is not None, 5, "exit after stdout closed")
    child.finish()
    assert child.proc.returncode == 0
    assert b"Traceback" not in child.err
    child.proc.stdin.close()


def test_taptap_crash_is_restarted_with_backoff_and_reported(tmp_path):
    starts = tmp_path / "starts"
    child = run("--taptap-cmd", taptap_cmd(), "--stats-interval", "0",
                env={"FAKE_TAPTAP_THEN": "exit:1", "FAKE_TAPTAP_STARTS": str(starts)})
    try:
        child.wait_for(lambda: len(started_pids(starts)) >= 3, 10, "three taptap starts")
        child.wait_stderr(b"taptap exited with code 1 (a read error on its source (see its E! line "
                          b"above)); restarting in 1 s")
        child.wait_stderr(b"restarting in 2 s")
        assert child.proc.poll() is None  # the plugin itself keeps running
    finally:
        child.close_stdin()
    assert child.finish(5) == 0
    assert_prefixed(child)


def test_taptap_stderr_is_relayed_with_levels_and_panics_as_errors(tmp_path):
    child = run("--taptap-cmd", taptap_cmd(), "--stats-interval", "0", "--log-level", "debug",
                env={"FAKE_TAPTAP_THEN": "panic"})
    try:
        child.wait_stderr(b"panicked at src/observer.rs")
        child.wait_stderr(b"restarting in 1 s")
    finally:
        child.close_stdin()
    child.finish(5)
    err = child.stderr_lines()
    assert "E! taptap: thread 'main' panicked at src/observer.rs:42:5:" in err
    assert any(l.startswith("W! taptap exited with code 101 (taptap panicked (see the E! taptap: "
                            "lines above)); restarting in 1 s") for l in err)
    # the slot-clock error is normal right after a start: debug, not error
    assert any(l.startswith("D! taptap[taptap::observer]: discarding power report") for l in err)
    assert not any(l.startswith("E! taptap[taptap::observer]") for l in err)
    assert_prefixed(child)


def test_missing_taptap_says_where_it_looked_and_keeps_running():
    child = run("--taptap-cmd", "taptap-does-not-exist observe --serial /dev/ttyUSB0",
                "--stats-interval", "0.1")
    try:
        child.wait_stderr(b"E! taptap-does-not-exist not found: looked on PATH")
        child.wait_stdout(b"taptap_running=0i")
        assert b".cargo/bin" in child.err and b"cargo install taptap" in child.err
        assert child.proc.poll() is None
    finally:
        child.close_stdin()
    assert child.finish(5) == 0


def test_stats_lines_report_the_supervised_taptap(tmp_path):
    child = run("--taptap-cmd", taptap_cmd(), "--stats-interval", "0.1", "--clock-check", "off",
                env={"FAKE_TAPTAP_LINES": str(DATA / "taptap-fork.jsonl"), "FAKE_TAPTAP_THEN": "sleep"})
    try:
        child.wait_for(lambda: b"reports=7i" in child.out and b"taptap_running=1i" in child.out, 10,
                       "a stats line with all reports and taptap running")
    finally:
        child.close_stdin()
    child.finish(5)
    stats = [l for l in child.stdout_lines() if l.startswith("tigo_ingest,source=taptap-cmd ")]
    assert "reports=7i" in stats[-1] and "taptap_starts=1i" in stats[-1]
    assert "last_report_age_s=" in stats[-1] and "nodes_seen=5i" in stats[-1]


def test_huge_and_broken_lines_are_dropped_counted_and_rate_limited(tmp_path):
    good = (DATA / "taptap-upstream.jsonl").read_bytes().splitlines(True)[0]
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"{" + b"x" * 300_000 + b"\n" + good + b"{broken\n" * 1000 + b"\xff\xfe\n"
                     + b'{"a":"\xff"}\n' + good)
    child = run("--jsonl", str(path), "--stats-interval", "1")
    assert child.finish() == 0
    lines = child.stdout_lines()
    assert len(lines) == 3
    assert "lines_invalid=1002i" in lines[-1] and "lines_skipped=1i" in lines[-1]
    assert "reports=2i" in lines[-1]
    warnings = [l for l in child.stderr_lines() if l.startswith("W! ")]
    assert 2 <= len(warnings) <= 5, warnings


@pytest.mark.parametrize("args, code", [
    ((), 64), (("--demo", "--jsonl", "x"), 64), (("--jsonl", "/nonexistent/file"), 66),
    (("--source", "ftp://x"), 64), (("--demo", "--measurement", "a\\b"), 64),
    (("--demo", "--stats-interval", "-1"), 64),
])
def test_usage_errors(args, code):
    child = run(*args)
    assert child.finish() == code
    assert child.err.strip() and child.out == b""
    assert all(l.startswith(PREFIXES) or l.startswith("usage:") for l in child.stderr_lines())


def test_source_spec_selects_the_source(tmp_path):
    child = run("--source", f"jsonl:{DATA / 'taptap-upstream.jsonl'}", "--stats-interval", "0")
    assert child.finish() == 0
    assert len(child.stdout_lines()) == 10


def test_demo_is_a_day_ending_now(tmp_path):
    state = tmp_path / "xdg"
    child = run("--demo", "--stats-interval", "0", env={"XDG_STATE_HOME": str(state)})
    assert child.finish(60) == 0
    lines = child.stdout_lines()
    assert len(lines) > 50_000
    stamps = [int(l.rsplit(" ", 1)[1]) for l in lines]
    assert abs(max(stamps) - time.time_ns()) < 60e9
    span_h = (max(stamps) - min(stamps)) / 3.6e12
    assert 24 <= span_h <= 28
    nodes = {tuple(t for t in l.split(" ")[0].split(",") if t.startswith(("gateway_id=", "node_id=")))
             for l in lines}
    assert len(nodes) >= 20 and len({n[0] for n in nodes}) == 3
    assert sum("barcode=" in l for l in lines) > 10_000
    assert not state.exists()  # its made-up optimizers never enter the user's node registry


# ---------------------------------------------------------------- the first day on a real Pi


@pytest.mark.parametrize("value", ["", "  "], ids=["empty", "blank"])
@pytest.mark.parametrize("option", ["--source", "--jsonl", "--taptap-cmd", "--serial", "--tcp",
                                    "--replay"])
def test_an_empty_source_is_a_usage_error_not_the_demo(tmp_path, option, value):
    """An empty TIGO_SOURCE once printed the demo day dated now into the real database."""
    state = tmp_path / "state"
    child = run(option, value, env={"STATE_DIRECTORY": str(state)})
    assert child.finish() == 64
    assert child.out == b""
    assert child.stderr_lines() == [
        (f"E! tigo-execd run: {option} is empty: name the bus source; with the Telegraf conf it is "
         f"TIGO_SOURCE in /etc/default/telegraf, which tigo.conf passes as --source (only --demo "
         f"prints the demo day)")]
    assert not state.exists()


def test_no_source_at_all_is_a_usage_error_not_the_demo():
    child = run("--stats-interval", "0")
    assert child.finish() == 64
    assert child.out == b""
    assert child.err.startswith(b"E! tigo-execd run: one of the arguments --taptap-cmd --jsonl "
                                b"--demo --source")


REAL_REGISTRY = {"version": 1, "gateways": {"4610": "04c05b300002be16"},
                 "nodes": {"4610": {"2": {"barcode": "4-A2346FZ", "node_addr": "04c05b4000a2346f"}}}}


@pytest.mark.parametrize("where", ["--state-file", "STATE_DIRECTORY", "XDG_STATE_HOME"])
def test_the_demo_neither_reads_nor_writes_the_real_registry(tmp_path, where):
    """Gateway 4610 node 2 exists in the demo too: read, the real barcode would tag its reports."""
    directory = tmp_path / "state" / ("tigo-execd" if where == "XDG_STATE_HOME" else "")
    directory.mkdir(parents=True)
    registry = directory / "registry.json"
    registry.write_bytes(orjson.dumps(REAL_REGISTRY))
    before = registry.read_bytes()
    args = ["--state-file", str(registry)] if where == "--state-file" else []
    env = {} if where == "--state-file" else {where: str(tmp_path / "state")}
    child = run("--demo", "--stats-interval", "0", *args, env=env)
    assert child.finish(60) == 0
    assert len(child.stdout_lines()) > 50_000
    assert b"4-A2346FZ" not in child.out and b"04c05b4000a2346f" not in child.out
    assert registry.read_bytes() == before
    assert sorted(p.name for p in directory.iterdir()) == ["registry.json"]  # no temporary file
    if where == "--state-file":
        assert f"I! --demo leaves the node registry alone: {registry} is neither read nor " \
               f"written".encode() in child.err
    assert_prefixed(child)


def test_a_raw_capture_given_to_jsonl_is_pointed_at_replay(tmp_path):
    """A --record capture is raw bus bytes: not one taptap JSON line, so the run says so once."""
    rng = random.Random(14)
    capture = tmp_path / "bus.bin"
    capture.write_bytes(bytes(rng.randrange(256) for _ in range(50_000)))
    child = run("--jsonl", str(capture), "--stats-interval", "0")
    assert child.finish() == 0
    told = [re.sub(r"the \d+ lines", "the N lines", l) for l in child.stderr_lines() if "--replay" in l]
    assert told == [(f"W! none of the N lines of {capture} was a taptap JSON report: a raw "
                     f"RS-485 capture (as --record writes) goes through taptap with --replay FILE, "
                     f"not --jsonl")]
    assert_prefixed(child)


def test_jsonl_with_reports_does_not_warn_about_captures():
    child = run("--jsonl", str(DATA / "taptap-fork.jsonl"), "--stats-interval", "0")
    assert child.finish() == 0
    assert b"--replay" not in child.err


@pytest.mark.parametrize("level", ["info", "debug"])
def test_suppressed_counts_are_debug_lines_shown_only_at_debug(level):
    """The count of rate-limited messages is a D! line: at --log-level info it is not written."""
    now = [0.0]
    out = io.StringIO()
    log = Log(level, out, clock=lambda: now[0])
    for _ in range(3):
        log.warn("rejected a taptap line", key="invalid:x")
    now[0] = 61.0
    log.report_suppressed()
    expected = ["W! rejected a taptap line"]
    if level == "debug":
        expected.append("D! 2 more messages of kind 'invalid:x' were suppressed")
    assert out.getvalue().splitlines() == expected
