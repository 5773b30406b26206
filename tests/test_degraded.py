"""What each command says and writes when InfluxDB is not there, beyond its exit code (the exit
codes are one table elsewhere): nothing half-written on stdout, one error naming the URL, and the
long-running ones carry on and recover when InfluxDB is back."""

from __future__ import annotations

import subprocess

import pytest

from support.proc import Child, tigo_execd_argv
from support.servers import InfluxServer, free_port
from support.telegraf_harness import parse_line
from support.watchdog_check import fleet, ns


@pytest.mark.parametrize("command", [["nodes"], ["faults"], ["rollup", "--retry-for", "0"]])
def test_a_reading_command_prints_nothing_and_one_error_naming_the_url(command):
    url = f"http://127.0.0.1:{free_port()}"
    done = subprocess.run(tigo_execd_argv(*command, "--influx-url", url), capture_output=True, text=True,
                          timeout=60)
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    [error] = [line for line in lines if line.startswith("E! ")]
    assert f"InfluxDB at {url} is unreachable" in error
    assert all(line[:3] in ("I! ", "W! ", "E! ") for line in lines)
    if command[0] == "rollup":
        advice = "run the same command again when InfluxDB is back: it resumes where it stopped"
        assert any(line.endswith(advice) for line in lines)


@pytest.fixture
def own_influxd():
    with InfluxServer() as server:
        yield server


def test_the_watchdog_says_influxdb_is_down_each_check_and_recovers(own_influxd):
    with own_influxd.database() as db:
        now = "2026-06-21T12:00:00Z"
        db.write("".join(fleet(ns(now), {1: 0.5, 2: 0.5})).encode())
        child = Child(tigo_execd_argv("watchdog", "--influx-url", db.url, "--db", db.db, "--now", now),
                      stdin=subprocess.PIPE)

        def check(n: int) -> dict:
            child.proc.stdin.write(b"\n")
            child.proc.stdin.flush()
            child.wait_for(lambda: len(child.stdout_lines()) >= n, 30, f"check {n}")
            metric = parse_line(child.stdout_lines()[n - 1])
            assert metric.name == "tigo_health"
            return metric.fields

        try:
            assert check(1)["reason"] == "healthy"
            own_influxd.pause()
            down = [check(2), check(3)]
            assert [(f["status"], f["reason"]) for f in down] == [("CRIT", "influx_unreachable")] * 2
            assert f"InfluxDB at {db.url} is unreachable" in down[0]["message"]
            assert child.err.count(b"is unreachable") == 1  # the warning once, not every minute
            own_influxd.resume()
            assert check(4)["reason"] == "healthy"
        finally:
            child.close_stdin()
        assert child.finish(30) == 0
