"""One command-line contract: every command meets the same failures with the same exit code
(tigo_execd/exitcodes.py's table) and says so in one `E! tigo-execd COMMAND: ` line, never a
traceback. A command added later is one more entry in COMMANDS (and in INFLUX when it reads
InfluxDB)."""

from __future__ import annotations

import os
import pty
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.proc import Child, tigo_execd_argv
from support.servers import free_port
from tigo_execd import exitcodes
from tigo_execd.journal import Journal

# every command, with what makes it do its work (the InfluxDB options come from each case)
COMMANDS = {
    "run": ["run", "--demo"],
    "barcode": ["barcode", "4-A0B1C2N"],
    "nodes": ["nodes"],
    "watchdog": ["watchdog", "--once"],
    "ports": ["ports"],
    "doctor": ["doctor", "--env-file", "/nonexistent"],
    "faults": ["faults"],
    "rollup": ["rollup"],
    "heal": ["heal", "--journal", "JOURNAL"],
    "homeassistant": ["homeassistant", "--once"],
    "layout": ["layout", "--demo"],
}
INFLUX = ["nodes", "watchdog", "faults", "rollup", "heal", "homeassistant", "layout"]  # they query InfluxDB
NO_RETRY = {"rollup": ["--retry-for", "0"]}  # InfluxDB down: fail now, not after a minute
EXISTING_DB = "tigo_demo"


@pytest.fixture(scope="module")
def journal_dir(tmp_path_factory) -> Path:
    """A journal with one report, for heal to compare."""
    directory = tmp_path_factory.mktemp("journal")
    j = Journal(directory)
    an_hour_ago = time.time_ns() - 3600 * 10**9  # within heal's default window, settled
    j.append(f"tigo_power_report,gateway_id=1,node_id=2 power_w=100 {an_hour_ago}\n".encode())
    j.close()
    return directory


@pytest.fixture(scope="module")
def demo_db(influxd):
    influxd.raw_query(f'CREATE DATABASE "{EXISTING_DB}"')
    yield influxd
    influxd.raw_query(f'DROP DATABASE "{EXISTING_DB}"')


def argv(command: str, journal: Path, *extra: str) -> list[str]:
    return tigo_execd_argv(*[str(journal) if a == "JOURNAL" else a for a in COMMANDS[command]], *extra)


def run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("INFLUX_USER", "INFLUX_PASS")}
    return subprocess.run(args, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                          env={**environ, **(env or {})})


def assert_one_error_line(command: str, stderr: str, *said: str) -> str:
    """stderr has Telegraf prefixes only, no traceback, and exactly one E! line, which names the
    command and says every one of `said`; returns that line."""
    lines = stderr.splitlines()
    assert "Traceback" not in stderr, stderr
    assert all(line[:3] in ("E! ", "W! ", "I! ", "D! ") for line in lines), stderr
    errors = [line for line in lines if line.startswith("E! ")]
    assert len(errors) == 1, stderr
    assert errors[0].startswith(f"E! tigo-execd {command}: "), errors[0]
    for words in said:
        assert words in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("command", INFLUX)
def test_influxdb_stopped_is_69(command, journal_dir):
    url = f"http://127.0.0.1:{free_port()}"
    proc = run(argv(command, journal_dir, "--influx-url", url, *NO_RETRY.get(command, [])))
    assert proc.returncode == 69, proc.stderr
    assert_one_error_line(command, proc.stderr, f"InfluxDB at {url} is unreachable",
                          "check that InfluxDB runs")


@pytest.mark.parametrize("command", INFLUX)
def test_database_missing_is_70_and_names_the_closest(command, journal_dir, demo_db):
    proc = run(argv(command, journal_dir, "--influx-url", demo_db.url, "--db", "tigo_dmeo"))
    assert proc.returncode == 70, proc.stderr
    assert_one_error_line(command, proc.stderr, "database 'tigo_dmeo' does not exist",
                          "did you mean tigo_demo?")
    assert b"tigo_dmeo" not in demo_db.raw_query("SHOW DATABASES")  # nothing created it


@pytest.mark.parametrize("command", INFLUX)
def test_query_rejected_is_70(command, journal_dir, demo_db):
    proc = run(argv(command, journal_dir, "--influx-url", demo_db.url, "--db", EXISTING_DB,
                    "--rp", "no_such_rp"))
    assert proc.returncode == 70, proc.stderr
    assert_one_error_line(command, proc.stderr, "no_such_rp")


@pytest.mark.parametrize("command", INFLUX)
def test_credentials_refused_is_77(command, journal_dir, influxd_auth):
    proc = run(argv(command, journal_dir, "--influx-url", influxd_auth.url),
               env={"INFLUX_USER": "admin", "INFLUX_PASS": "wrong"})
    assert proc.returncode == 77, proc.stderr
    assert_one_error_line(command, proc.stderr, "refused the credentials", "INFLUX_USER")


@pytest.mark.parametrize("url, fix", [
    ("127.0.0.1:8086", "write http://127.0.0.1:8086"),
    ("http://127.0.0.1:99999", "a port from 1 to 65535"),
    ("ftp://127.0.0.1:8086", "InfluxDB answers on http:// or https://"),
])
@pytest.mark.parametrize("command", INFLUX)
def test_bad_url_is_64_before_any_connection(command, journal_dir, url, fix):
    proc = run(argv(command, journal_dir, "--influx-url", url))  # rollup: no --retry-for 0
    assert proc.returncode == 64, proc.stderr
    assert_one_error_line(command, proc.stderr, fix)
    assert "retrying" not in proc.stderr


@pytest.mark.parametrize("command", INFLUX)
def test_database_name_influxql_cannot_quote_is_64(command, journal_dir):
    proc = run(argv(command, journal_dir, "--db", "bms\nx"))
    assert proc.returncode == 64, proc.stderr
    assert_one_error_line(command, proc.stderr, "cannot be written in InfluxQL")


@pytest.mark.parametrize("command", COMMANDS)
def test_unknown_option_is_64_and_names_the_command_and_the_closest(command, journal_dir):
    proc = run(argv(command, journal_dir, "--log-levl", "info"))
    assert proc.returncode == 64, proc.stderr
    assert_one_error_line(command, proc.stderr, "unrecognized arguments: --log-levl",
                          "did you mean --log-level?")


@pytest.mark.parametrize("command", COMMANDS)
def test_abbreviation_is_refused(command, journal_dir):
    proc = run(argv(command, journal_dir, "--log-lev", "info"))
    assert proc.returncode == 64, proc.stderr
    assert_one_error_line(command, proc.stderr, "unrecognized arguments: --log-lev",
                          "did you mean --log-level?")


@pytest.mark.parametrize("command", COMMANDS)
def test_help_ends_with_the_exit_codes(command):
    proc = run(tigo_execd_argv(command, "--help"))
    assert proc.returncode == 0 and proc.stderr == ""
    tail = " ".join(proc.stdout.split()).rsplit("Exit codes: ", 1)[1]
    assert tail.startswith("0 done") and "64 usage" in tail and "130 interrupted by SIGINT" in tail
    assert tail.endswith("(all commands: docs/reference/exit-codes.md).")
    assert ("69 InfluxDB" in tail) == (command in INFLUX)


@pytest.mark.parametrize("command", INFLUX)
@pytest.mark.parametrize("sig, code, said", [(signal.SIGINT, 130, "interrupted (SIGINT)"),
                                             (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_signal_mid_run(command, journal_dir, sig, code, said):
    """The command waits on an InfluxDB that accepts the connection and never answers."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        child = Child(argv(command, journal_dir, "--influx-url",
                           f"http://127.0.0.1:{silent.getsockname()[1]}", "--timeout", "60"),
                      stdin=subprocess.DEVNULL)
        silent.settimeout(30)
        peer, _ = silent.accept()  # its first query is in flight
        with peer:
            child.proc.send_signal(sig)
            assert child.finish(30) == code, child.err
    assert_one_error_line(command, child.err.decode(), said)


def test_version():
    proc = run(tigo_execd_argv("--version"))
    assert proc.returncode == 0 and proc.stdout.strip() == "tigo-execd 0.2.0"


DELAYS_MS = [i * 5 for i in range(41)]  # 0 .. 200 ms after start


def block_stop_signals() -> None:
    """In the child between fork and exec: what a launcher that blocks SIGINT gives Python."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


@pytest.mark.parametrize("command, done", [(["run", "--demo", "--stats-interval", "0"], 0),
                                           (["faults", "--influx-url", "http://127.0.0.1:9"], 69)])
def test_sigint_at_any_moment_of_start_up(command, done):
    """Ctrl-C at any moment of start-up, imports included (a KeyboardInterrupt raised inside
    orjson's import could crash the interpreter): 130 with one E! line, or the command's own end
    when it was done first; never a traceback or a crash. SIGINT is blocked across exec, as
    tigo_execd's __main__ blocks it first thing: Python's own start-up before the package's first
    line (site, runpy) is no code of the package's, and no program can shield it from inside."""
    outcomes = []
    for delay in DELAYS_MS:
        proc = subprocess.Popen([sys.executable, "-m", "tigo_execd", *command], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env={**os.environ, "PYTHONPATH": os.getcwd()}, preexec_fn=block_stop_signals)
        try:
            proc.wait(delay / 1000)  # the delay itself: a command may also be done by then
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        outcomes.append(proc.returncode)
        assert b"Traceback" not in err and b"Fatal Python error" not in err, (delay, err)
        assert proc.returncode in (done, 130), (delay, proc.returncode, err)
        if proc.returncode == 130:
            assert err.decode().splitlines()[-1].endswith("interrupted (SIGINT) before it finished")
    # Nothing is done within 10 ms of exec (Python's own start-up alone takes longer), so these were
    # surely interrupted; how many later ones were depends on the machine's speed, not on the code.
    assert outcomes[:3] == [130, 130, 130], outcomes


@pytest.mark.parametrize("command", ["watchdog", "homeassistant"])
def test_in_a_terminal_it_says_what_it_waits_for(command):
    """stdin a terminal (a pty): one I! line saying it waits for Telegraf's newline, and --once."""
    main, sub = pty.openpty()
    try:
        child = Child(tigo_execd_argv(command, "--influx-url", "http://127.0.0.1:9"), stdin=sub)
        child.wait_stderr(b"waiting for a newline on stdin", timeout=30)
        line = next(x for x in child.stderr_lines() if "waiting for a newline" in x)
        assert line.startswith(f"I! {command}: ") and "--once" in line
    finally:
        child.kill()
        os.close(main)
        os.close(sub)


def test_the_docs_table_is_the_code_table():
    """docs/reference/exit-codes.md shows exitcodes.TABLE, row for row."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "reference" / "exit-codes.md").read_text()
    shown = re.findall(r"^\| (\d+) \| (.+?) \| (.+?) \|$", text, re.MULTILINE)
    want = [(str(r.code), r.meaning, ", ".join(f"`{c}`" for c in r.commands) or "every command")
            for r in exitcodes.TABLE]
    assert shown == want


@pytest.mark.parametrize("content, code, said", [
    ("barcode,panel\n4-A0B1C2N,Süd 1\n".encode("cp1252"), 65,
     "line 2 is not UTF-8 text (byte 0xfc): save it as UTF-8"),
    (None, 66, "cannot open names file"),
])
def test_names_file_not_utf8_or_missing(tmp_path, content, code, said):
    names = tmp_path / "names.csv"
    if content is not None:
        names.write_bytes(content)
    proc = run(tigo_execd_argv("faults", "--names", str(names), "--influx-url", "http://127.0.0.1:9"))
    assert proc.returncode == code, proc.stderr
    assert_one_error_line("faults", proc.stderr, said, str(names))


@pytest.mark.parametrize("value, said", [("4-A0B1C2Y", "wrong check letter"), ("zz", "not a node address")])
def test_bad_barcode_is_65(value, said):
    proc = run(tigo_execd_argv("barcode", value))
    assert proc.returncode == 65 and proc.stdout == "", proc.stderr
    assert_one_error_line("barcode", proc.stderr, said)


def test_main_in_process_leaves_the_signals_as_it_found_them(capsys):
    """Blocked and handled while a command runs; the caller (here pytest) gets its own back."""
    from tigo_execd import cli

    def state() -> tuple:
        return (signal.pthread_sigmask(signal.SIG_BLOCK, set()), signal.getsignal(signal.SIGINT),
                signal.getsignal(signal.SIGTERM))

    before = state()
    assert cli.main(["barcode", "4-A0B1C2N"]) == 0
    assert capsys.readouterr().out.strip() == "04:C0:5B:40:00:A0:B1:C2"
    assert state() == before
