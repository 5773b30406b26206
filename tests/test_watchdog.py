"""`tigo-execd watchdog` against a real InfluxDB: one fixture per reason, a fixed clock, and a run the
way Telegraf's execd drives it (stdin open, one newline per gather, EOF at the end)."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess

import pytest

from support.proc import tigo_execd_argv
from support.servers import free_port
from support.telegraf_harness import parse_line
from support.watchdog_check import (
    DAWN,
    MIDNIGHT,
    MIN,
    MUNICH,
    NOON,
    fleet,
    health,
    ingest,
    ingest_rows,
    ns,
    report,
    watchdog,
)


def write(db, lines: list[str]) -> None:
    db.write("".join(lines).encode())


def once(db, *args: str, now: str = NOON, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = watchdog(db, *args, now=now, env=env)
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == 1, proc.stdout
    assert all(l[:3] in ("E! ", "W! ", "I! ", "D! ") for l in proc.stderr.decode().splitlines())
    return proc.returncode, lines[0]


# ---------------------------------------------------------------- reasons


def test_healthy_fleet_is_ok(influx_db):
    now = ns(NOON)
    write(influx_db, fleet(now, {1: 0.5, 2: 1.0, 3: 0.3, 4: 2.0}) + ingest_rows("taptap-cmd", now))
    fields, nodes = health(influx_db, *MUNICH)
    assert (fields["status"], fields["code"], fields["reason"]) == ("OK", 0, "healthy")
    assert fields["lag_min"] == 0.3
    assert fields["last_ts_utc"] == "2026-06-21T11:59:42+00:00"
    assert (fields["nodes_expected"], fields["nodes_reporting"], fields["nodes_silent"]) == (4, 4, 0)
    assert fields["silent_nodes"] == "" and nodes == []
    assert 60 < fields["sun_elevation"] < 70
    code, line = once(influx_db, *MUNICH)
    assert code == 0 and line.startswith("OK healthy lag_min=0.3 last_ts_utc=2026-06-21T11:59:42")


def test_one_silent_node_among_healthy_ones_warns(influx_db):
    now = ns(NOON)
    write(influx_db, fleet(now, {1: 0.5, 2: 1.0, 3: 95, 4: 0.2}, gateway=4609)
          + fleet(now, {3: 0.4}, gateway=4610) + ingest_rows("taptap-cmd", now))
    fields, nodes = health(influx_db, *MUNICH)
    assert (fields["status"], fields["code"], fields["reason"]) == ("WARN", 1, "nodes_silent")
    assert (fields["nodes_expected"], fields["nodes_reporting"], fields["nodes_silent"]) == (5, 4, 1)
    assert fields["silent_nodes"] == "4609/3 (4-A3Z)"
    assert "4609/3" in fields["message"] and "30 min" in fields["message"]
    [node] = nodes
    assert node.tags == {"gateway_id": "4609", "node_id": "3", "barcode": "4-A3Z"}
    assert (node.fields["status"], node.fields["reason"], node.fields["lag_min"]) == (
        "WARN", "node_silent", 95.0)
    code, line = once(influx_db, *MUNICH)
    assert code == 1 and line.startswith("WARN nodes_silent lag_min=0.2 ") and "nodes=4/5" in line


def test_night_is_not_an_outage_with_a_location_but_is_without(influx_db):
    now = ns(MIDNIGHT)
    write(influx_db, fleet(now, {1: 300, 2: 305, 3: 310})
          + ingest_rows("taptap-cmd", now, lines_read=1000, reports=900,
                           last_report_age_s=18000.0))
    fields, nodes = health(influx_db, *MUNICH, now=MIDNIGHT)
    assert (fields["status"], fields["reason"]) == ("OK", "night")
    assert fields["sun_elevation"] < -15 and fields["lag_min"] == 300.0
    assert fields["nodes_silent"] == 0 and nodes == []
    assert once(influx_db, *MUNICH, now=MIDNIGHT)[0] == 0
    # The old check's false alarm: without a location, 300 min > 240 min is CRIT, and it says why.
    proc = watchdog(influx_db, now=MIDNIGHT)
    assert proc.returncode == 2 and proc.stdout.startswith(b"CRIT stale_data lag_min=300.0 ")
    assert b"I! watchdog: no --latitude/--longitude" in proc.stderr


def test_dawn_grace_waits_for_the_optimizers_to_wake_up(influx_db):
    now = ns(DAWN)
    later = "2026-06-21T04:30:00Z"
    write(influx_db, fleet(now, {1: 400, 2: 401}) + ingest_rows("taptap-cmd", ns(later), 45))
    fields, _ = health(influx_db, *MUNICH, now=DAWN)
    assert 5 < fields["sun_elevation"] < 7
    assert (fields["status"], fields["reason"]) == ("OK", "night")
    assert "rose above 5 deg less than 15 min ago" in fields["message"]
    # Half an hour later the same silence is an outage.
    fields, _ = health(influx_db, *MUNICH, now=later)
    assert (fields["status"], fields["reason"]) == ("CRIT", "stale_data")


def test_empty_database_is_no_data(influx_db):
    code, line = once(influx_db, *MUNICH)
    assert code == 2 and line.startswith("CRIT no_data nodes=0/0 ")
    fields, _ = health(influx_db, *MUNICH)
    assert fields["reason"] == "no_data" and fields["nodes_expected"] == 0
    assert "lag_min" not in fields and "last_ts_utc" not in fields


def test_missing_database_is_no_data(influxd):
    proc = subprocess.run(tigo_execd_argv("watchdog", "--once", "--influx-url", influxd.url,
                                          "--db", "never_created"), capture_output=True, timeout=60)
    assert proc.returncode == 70  # the check could not be made: no verdict's code
    assert proc.stdout.startswith(b"CRIT no_data: database 'never_created' does not exist")


def test_old_data_only_is_stale_not_no_data(influx_db):
    now = ns(NOON)
    write(influx_db, [report(1, 1, now - 10 * 24 * 60 * MIN)])
    code, line = once(influx_db, *MUNICH)
    assert code == 2 and line.startswith("CRIT stale_data nodes=0/0")
    assert "No report in the last 7 days" in line


def test_future_dated_point_does_not_hide_staleness(influx_db):
    now = ns(NOON)
    write(influx_db, fleet(now, {1: 180, 2: 181}) + [report(4609, 1, now + 120 * MIN)])
    fields, _ = health(influx_db, *MUNICH)
    assert (fields["status"], fields["reason"]) == ("CRIT", "stale_data")
    assert fields["lag_min"] == 180.0
    assert "120 min in the future" in fields["message"] and "clock" in fields["message"]


def test_influxdb_down(influx_db):
    port = free_port()
    proc = subprocess.run(tigo_execd_argv("watchdog", "--once", "--influx-url",
                                          f"http://127.0.0.1:{port}", "--now", NOON),
                          capture_output=True, timeout=60)
    assert proc.returncode == 69
    assert proc.stdout.startswith(b"CRIT influx_unreachable: InfluxDB at http://127.0.0.1:")
    assert b"W! InfluxDB at" in proc.stderr


def test_influxdb_that_never_answers_times_out():
    with socket.socket() as listener:  # accepts connections (kernel backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        proc = subprocess.run(tigo_execd_argv("watchdog", "--once", "--influx-url", url,
                                              "--timeout", "1"), capture_output=True, timeout=30)
    assert proc.returncode == 69
    assert proc.stdout.startswith(b"CRIT influx_unreachable") and b"timed out" in proc.stdout


@pytest.mark.parametrize("answer, reason", [
    (b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n<html>Grafana login</html>",
     b"CRIT influx_unreachable: http://127.0.0.1:"),
    (b"SSH-2.0-OpenSSH_9.2\r\n", b"CRIT influx_unreachable: http://127.0.0.1:"),
], ids=["html", "not-http"])
def test_another_service_on_the_influxdb_port(answer, reason):
    """A wrong port is a CRIT with a cause, never a traceback (whose exit code 1 would read as WARN)."""

    async def ask() -> tuple[int, bytes]:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            proc = await asyncio.create_subprocess_exec(
                *tigo_execd_argv("watchdog", "--once", "--influx-url", f"http://127.0.0.1:{port}"),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, _ = await asyncio.wait_for(proc.communicate(), 30)
        return proc.returncode, out

    code, out = asyncio.run(ask())
    assert code == 69 and out.startswith(reason)


def test_credentials_come_from_the_environment(influxd_auth, influx_auth_db):
    influx_auth_db.write("".join(fleet(ns(NOON), {1: 1.0})).encode())
    base = tigo_execd_argv("watchdog", "--once", "--influx-url", influxd_auth.url, "--db", influx_auth_db.db,
                           "--now", NOON)
    environ = {k: v for k, v in os.environ.items() if k not in ("INFLUX_USER", "INFLUX_PASS")}
    wrong = subprocess.run(base, capture_output=True, timeout=60,
                           env={**environ, "INFLUX_USER": "admin", "INFLUX_PASS": "wrong"})
    assert wrong.returncode == 77 and wrong.stdout.startswith(b"CRIT influx_auth_failed")
    assert b"INFLUX_USER and INFLUX_PASS" in wrong.stdout and b"wrong" not in wrong.stdout
    missing = subprocess.run(base, capture_output=True, timeout=60, env=environ)
    assert missing.stdout.startswith(b"CRIT influx_auth_failed")
    right = subprocess.run(base, capture_output=True, timeout=60,
                           env={**environ, "INFLUX_USER": "admin", "INFLUX_PASS": "adminpw"})
    assert right.returncode == 0 and right.stdout.startswith(b"OK healthy lag_min=1.0")


def test_refused_credentials_are_said_once_with_what_to_set(influxd_auth):
    from tigo_execd.influx import Influx, InfluxAuthFailed

    with pytest.raises(InfluxAuthFailed) as refused:
        Influx(influxd_auth.url, "bms", "admin", "wrong").query("SHOW DATABASES")
    environ = {k: v for k, v in os.environ.items() if k not in ("INFLUX_USER", "INFLUX_PASS")}
    proc = subprocess.run(tigo_execd_argv("watchdog", "--once", "--influx-url", influxd_auth.url,
                                          "--now", NOON),
                          capture_output=True, text=True, timeout=60,
                          env={**environ, "INFLUX_USER": "admin", "INFLUX_PASS": "wrong"})
    assert proc.returncode == 77
    assert proc.stdout == f"CRIT influx_auth_failed: {refused.value}\n"
    assert str(refused.value).endswith(": set INFLUX_USER and INFLUX_PASS (e.g. in "
                                       "/etc/default/telegraf) to a user that may read and write "
                                       "the database")
    assert proc.stdout.count("refused the credentials") == 1


@pytest.mark.parametrize("url", ["127.0.0.1:8086", "localhost:8086"])
def test_influx_url_without_scheme_says_add_http(url):
    """urllib only says "unknown url type", which read as "start InfluxDB"."""
    proc = subprocess.run(tigo_execd_argv("watchdog", "--once", "--influx-url", url, "--now", NOON),
                          capture_output=True, text=True, timeout=60)
    text = (f"InfluxDB URL '{url}' (INFLUX_URL, --influx-url) has no scheme: write http://{url} "
            f"(Telegraf's outputs.influxdb needs the scheme too)")
    assert proc.returncode == 64 and proc.stdout == ""  # found before any check
    assert proc.stderr.splitlines() == [f"E! tigo-execd watchdog: {text}"]
    nodes = subprocess.run(tigo_execd_argv("nodes", "--influx-url", url), capture_output=True,
                           text=True, timeout=60)
    assert nodes.returncode == 64 and nodes.stderr.splitlines() == [f"E! tigo-execd nodes: {text}"]


def test_unknown_retention_policy_is_a_query_failure(influx_db):
    code, line = once(influx_db, "--rp", "nope")
    assert code == 70 and line.startswith("CRIT influx_query_failed")
    assert "retention policy not found" in line


def test_retention_policy_is_used(influx_db, influxd):
    influxd.raw_query(f'CREATE RETENTION POLICY "short" ON "{influx_db.db}" DURATION 520w REPLICATION 1')
    influx_db.write("".join(fleet(ns(NOON), {1: 1.0})).encode(), rp="short")
    assert once(influx_db, *MUNICH)[1].startswith("CRIT no_data")
    assert once(influx_db, *MUNICH, "--rp", "short")[1].startswith("OK healthy")


@pytest.mark.parametrize("now", [NOON, MIDNIGHT])
def test_taptap_not_running_is_crit_day_and_night(influx_db, now):
    t = ns(now)
    write(influx_db, fleet(t, {1: 20, 2: 20}) + ingest_rows("taptap-cmd", t, taptap_running=0,
                                                            taptap_starts=7))
    fields, _ = health(influx_db, *MUNICH, now=now)
    assert (fields["status"], fields["reason"]) == ("CRIT", "taptap_not_running")
    assert "7 starts" in fields["message"] and "dialout" in fields["message"]


def test_one_sample_with_taptap_restarting_is_not_a_fault(influx_db):
    now = ns(NOON)
    rows = ingest_rows("taptap-cmd", now)
    rows[-1] = ingest("taptap-cmd", now - MIN + 1, lines_read=5, reports=5, taptap_starts=2,
                      taptap_running=0, last_report_age_s=3.0)
    write(influx_db, fleet(now, {1: 0.5}) + rows)
    assert health(influx_db, *MUNICH)[0]["reason"] == "healthy"


def serial_rows(now: int, **fields: int | float) -> list[str]:
    values = {"bus_bytes": 500_000, "source_connected": 1, "source_reconnects": 0,
              "taptap_starts": 1, "last_byte_age_s": 0.2}
    values.update(fields)
    return ingest_rows("serial", now, **values)


def test_source_disconnected(influx_db):
    now = ns(NOON)
    write(influx_db, fleet(now, {1: 30}) + serial_rows(now, source_connected=0, source_reconnects=9,
                                                        taptap_running=0))
    fields, _ = health(influx_db, *MUNICH)
    assert (fields["status"], fields["reason"]) == ("CRIT", "source_disconnected")
    assert "(serial)" in fields["message"] and "9 reconnects" in fields["message"]


def test_bus_silent(influx_db):
    now = ns(NOON)
    write(influx_db, fleet(now, {1: 30, 2: 31}) + serial_rows(now, last_byte_age_s=1800.0,
                                                               last_report_age_s=1800.0))
    fields, _ = health(influx_db, *MUNICH)
    assert (fields["status"], fields["reason"]) == ("CRIT", "bus_silent")
    assert "A and B swapped" in fields["message"]


def test_bus_silent_with_taptap_cmd_that_prints_nothing(influx_db):
    now = ns(NOON)
    write(influx_db, fleet(now, {1: 30}) + ingest_rows("taptap-cmd", now, lines_read=40,
                                                        last_report_age_s=1800.0))
    fields, _ = health(influx_db, *MUNICH)
    assert (fields["reason"], fields["status"]) == ("bus_silent", "CRIT")
    assert "update taptap" in fields["message"]


def test_bytes_but_no_reports_decoded(influx_db):
    now = ns(NOON)
    rows = [ingest("serial", now - i * MIN + 1, lines_read=0, reports=0, lines_invalid=0,
                   bus_bytes=1000 * (20 - i), source_connected=1, last_byte_age_s=0.1,
                   taptap_starts=1, taptap_running=1) for i in range(10, 0, -1)]
    write(influx_db, fleet(now, {1: 45, 2: 45}) + rows)
    fields, _ = health(influx_db, *MUNICH)
    assert (fields["status"], fields["reason"]) == ("CRIT", "no_reports_decoded")
    assert "update taptap" in fields["message"]


def test_invalid_lines_from_taptap_are_no_reports_decoded(influx_db):
    """The outage of 2026-02-16: taptap printed every report in a shape the ingest could not read."""
    now = ns(NOON)
    rows = [ingest("taptap-cmd", now - i * MIN + 1, lines_read=100 * (20 - i), reports=0,
                   lines_invalid=100 * (20 - i), taptap_starts=1, taptap_running=1)
            for i in range(10, 0, -1)]
    write(influx_db, fleet(now, {1: 600}) + rows)
    assert health(influx_db, *MUNICH)[0]["reason"] == "no_reports_decoded"


def test_ingest_stopped(influx_db):
    now = ns(NOON)
    write(influx_db, fleet(now, {1: 120}) + ingest_rows("taptap-cmd", now - 120 * MIN))
    for when in (NOON, MIDNIGHT):
        fields, _ = health(influx_db, *MUNICH, now=when)
        assert (fields["status"], fields["reason"]) == ("CRIT", "ingest_stopped")
        assert "systemctl status telegraf" in fields["message"]


def test_stale_without_self_metrics(influx_db):
    now = ns(NOON)
    write(influx_db, fleet(now, {1: 20, 2: 25}))
    fields, _ = health(influx_db, *MUNICH)
    assert (fields["status"], fields["reason"], fields["lag_min"]) == ("CRIT", "stale_data", 20.0)
    assert "no self-metrics" in fields["message"]


def test_stale_while_the_ingest_decodes_points_at_the_write_path(influx_db):
    now = ns(NOON)
    write(influx_db, fleet(now, {1: 20}) + ingest_rows("taptap-cmd", now))
    fields, _ = health(influx_db, *MUNICH)
    assert fields["reason"] == "stale_data" and "although tigo-execd decodes" in fields["message"]


@pytest.mark.parametrize("args", [("--latitude", "48"), ("--latitude", "95", "--longitude", "0"),
                                  ("--now", "2026-06-21T12:00:00"), ("--max-lag-min", "0"),
                                  ("--bogus",)])
def test_usage_errors_exit_64(args):
    proc = subprocess.run(tigo_execd_argv("watchdog", "--once", *args), capture_output=True,
                          timeout=30)
    assert proc.returncode == 64 and proc.stdout == b""
    assert all(l[:3] in ("E! ", "usa", "   ") for l in proc.stderr.decode().splitlines())


# ---------------------------------------------------------------- as Telegraf runs it


def test_execd_stdin_protocol(influx_db):
    """stdin open, one newline per gather, each answered at once with valid line protocol; EOF ends it."""
    now = ns(NOON)
    write(influx_db, fleet(now, {1: 0.5, 2: 80}) + [report(4609, 7, now - 90 * MIN, 'a "b",c=d e\\')]
          + ingest_rows("taptap-cmd", now))

    async def drive() -> list[list[str]]:
        proc = await asyncio.create_subprocess_exec(
            *tigo_execd_argv("watchdog", "--influx-url", influx_db.url, "--db", influx_db.db,
                             "--now", NOON, *MUNICH),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        gathers = []
        for _ in range(3):
            proc.stdin.write(b"\n")
            await proc.stdin.drain()
            lines = [await asyncio.wait_for(proc.stdout.readline(), 20) for _ in range(3)]
            gathers.append([line.decode() for line in lines])
        proc.stdin.close()
        rest = await asyncio.wait_for(proc.stdout.read(), 10)
        stderr = await proc.stderr.read()
        assert await asyncio.wait_for(proc.wait(), 5) == 0
        assert rest == b""
        assert all(l[:3] in ("E! ", "W! ", "I! ", "D! ") for l in stderr.decode().splitlines())
        return gathers

    gathers = asyncio.run(drive())
    assert gathers[0] == gathers[1] == gathers[2]  # fixed clock: the same check three times
    metrics = [parse_line(line.rstrip("\n")) for line in gathers[0]]
    assert all(line.endswith("\n") and line.count("\n") == 1 for line in gathers[0])
    assert [m.name for m in metrics] == ["tigo_health", "tigo_node_health", "tigo_node_health"]
    assert metrics[0].fields["reason"] == "nodes_silent"
    assert metrics[0].fields["silent_nodes"] == '4609/2 (4-A2Z), 4609/7 (a "b",c=d e/)'
    assert metrics[2].tags == {"gateway_id": "4609", "node_id": "7", "barcode": 'a "b",c=d e/'}


@pytest.mark.parametrize("ages", [{}, {1: 20}, {1: 0.5, 2: 80}], ids=["empty", "stale", "silent"])
def test_every_query_is_bounded(influx_db, ages):
    """No query scans all history (the old check's `SELECT last(power_w)` did): every SELECT has a
    time window ending at the check's now, and the one metadata query has a LIMIT."""
    write(influx_db, fleet(ns(NOON), ages) if ages else [])
    proc = watchdog(influx_db, *MUNICH, "--log-level", "debug")
    queries = [line.split("watchdog query: ", 1)[1] for line in proc.stderr.decode().splitlines()
               if "watchdog query: " in line]
    assert len(queries) >= 2
    for q in queries:
        if q.startswith("SELECT"):
            assert re.search(r"WHERE time > \d+ AND time <= \d+", q), q
        else:
            assert q.startswith("SHOW SERIES FROM") and q.endswith("LIMIT 1"), q
