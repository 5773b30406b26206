"""`tigo-execd rollup` against a real InfluxDB: rollups equal the raw aggregates, live data is rolled up
by the continuous queries, a re-run or a resumed run changes nothing, and every refusal is a clear
message with its exit code."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections import defaultdict

import pytest

from support.proc import Child, stop_between_requests, tigo_execd_argv
from support.rollup_history import DAY_MS, day_lines, write_history
from support.servers import InfluxServer
from support.wait import wait_until

PANELS = 6
DAYS = 9
LINE = re.compile(r"gateway_id=(\d+),node_id=(\d+),.*power_w=([\d.]+),.* (\d+)$")


def rollup(url: str, db: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": os.getcwd(), **(env or {})}
    return subprocess.run(tigo_execd_argv("rollup", "--influx-url", url, "--db", db, *args),
                          capture_output=True, text=True, env=full_env, timeout=300)


def rows(db, q: str) -> dict[tuple, list]:
    """Series of a query keyed by (gateway, node) tags, values as lists."""
    return {(s.get("tags", {}).get("gateway_id"), s.get("tags", {}).get("node_id")): s["values"]
            for s in db.query(q)}


def dump(db) -> list:
    """Everything the rollups hold, in a comparable order."""
    out = []
    for m in ("tigo_power_report_5m", "tigo_power_report_1h"):
        for s in db.query(f'SELECT * FROM "tigo_rollup"."{m}" GROUP BY *'):
            out.append((m, sorted(s["tags"].items()), s["values"]))
    return sorted(out, key=repr)


@pytest.fixture(scope="module")
def day0() -> int:
    """The first midnight of a history that ends yesterday, read when the tests run (not at import)."""
    return (int(time.time() * 1000) // DAY_MS - DAYS - 1) * DAY_MS


@pytest.fixture(scope="module")
def history(influxd, day0):
    with influxd.database("rollhist") as db:
        n = write_history(db, day0, DAYS, PANELS)
        done = rollup(influxd.url, db.db)
        assert done.returncode == 0, done.stderr
        yield db, n, done.stderr


def test_rollups_equal_raw_aggregates(history, day0):
    db, n, stderr = history
    assert all(line[:3] in ("I! ", "W! ") for line in stderr.splitlines()), stderr
    assert f"{n} reports" in stderr and f"({DAYS + 2}/{DAYS + 2} days" in stderr  # up to today
    where = f"WHERE time >= {day0}ms AND time < {day0 + DAYS * DAY_MS}ms"
    by = 'GROUP BY time(1d), "gateway_id", "node_id" fill(none)'
    counts = rows(db, f'SELECT count("power_w") FROM "tigo_power_report" {where} {by}')
    assert len(counts) == PANELS  # the node that appears on the third day included
    for m in ("tigo_power_report_5m", "tigo_power_report_1h"):
        assert rows(db, f'SELECT sum("reports") FROM "tigo_rollup"."{m}" {where} {by}') == counts, m

    # energy per node and day: the dashboard's formula on raw reports, the rollups, and plain Python
    per_node = '"gateway_id", "node_id" fill(none)'
    raw_kwh = rows(db, 'SELECT sum("p") / 12000 FROM (SELECT mean("power_w") AS "p" FROM "tigo_power_report" '
                       f"{where} GROUP BY time(5m), {per_node}) {where} {by}")
    buckets: dict[tuple, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for d in range(DAYS):
        for line in day_lines(day0, d, PANELS):
            gw, node, p, ns = LINE.search(line).groups()
            ms = int(ns) // 1_000_000
            buckets[(gw, node)][ms - ms % 300000].append(float(p))
    python_kwh: dict[tuple, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for key, bs in buckets.items():
        for b, ps in bs.items():
            python_kwh[key][b - b % DAY_MS] += sum(ps) / len(ps) / 12000
    for m in ("tigo_power_report_5m", "tigo_power_report_1h"):
        got = rows(db, f'SELECT sum("energy_wh") / 1000 FROM "tigo_rollup"."{m}" {where} {by}')
        assert got.keys() == raw_kwh.keys() == python_kwh.keys()
        for key, values in got.items():
            for (t, kwh), (t2, want) in zip(values, raw_kwh[key]):
                assert t == t2 and kwh == pytest.approx(want, rel=1e-9), (m, key, t)
                assert kwh == pytest.approx(python_kwh[key][t // 1_000_000], rel=1e-9), (m, key, t)
    # against the dashboard's former 3-minute buckets: within 0.5 % per site and day
    old = db.query(f'SELECT sum("p") / 20000 FROM (SELECT mean("power_w") AS "p" FROM "tigo_power_report" '
                   f"{where} GROUP BY time(3m), {per_node}) {where} GROUP BY time(1d)")
    new = db.query(f'SELECT sum("energy_wh") / 1000 FROM "tigo_rollup"."tigo_power_report_1h" {where} '
                   "GROUP BY time(1d)")
    for (_, a), (_, b) in zip(old[0]["values"], new[0]["values"]):
        assert b == pytest.approx(a, rel=0.005)

    # means: the 1 h rollup holds the hour's mean of the reports, the 5 min one the 5 minutes'
    for m, bucket in (("tigo_power_report_1h", "1h"), ("tigo_power_report_5m", "5m")):
        for field in ("power_w", "voltage_in_v", "temperature_c", "rssi"):
            raw = rows(db, f'SELECT mean("{field}") FROM "tigo_power_report" {where} '
                           f'GROUP BY time({bucket}), "gateway_id", "node_id" fill(none)')
            got = rows(db, f'SELECT mean("{field}") FROM "tigo_rollup"."{m}" {where} '
                           f'GROUP BY time({bucket}), "gateway_id", "node_id" fill(none)')
            assert got.keys() == raw.keys()
            for key in raw:
                assert [t for t, _ in got[key]] == [t for t, _ in raw[key]]
                assert [v for _, v in got[key]] == pytest.approx([v for _, v in raw[key]], rel=1e-12)


def test_rerun_changes_nothing(history, influxd):
    db = history[0]
    before = dump(db)
    again = rollup(influxd.url, db.db)
    assert again.returncode == 0, again.stderr
    assert "create" not in again.stderr  # the RP and the CQs are there already
    assert dump(db) == before
    cqs = [row[0] for s in db.query("SHOW CONTINUOUS QUERIES") if s["name"] == db.db
           for row in s["values"]]
    assert sorted(cqs) == ["tigo_power_report_rollup_1h", "tigo_power_report_rollup_1h_energy",
                           "tigo_power_report_rollup_5m"]


@pytest.fixture(scope="module")
def own_influxd():
    """An influxd of this module's own, to stop and start under a running backfill."""
    with InfluxServer() as server:
        yield server


OUTAGE_DAYS = 60 + DAYS + 2  # the backfill of an outage test: from a lone report 60 days earlier, to today


def outage_history(server: InfluxServer, db: str, panels: int, day0: int) -> None:
    """The history, and one report 60 days before it: the backfill has quick days to do on either
    side of the moment it is held."""
    server.raw_query(f'CREATE DATABASE "{db}"')
    write_history(server.client(db), day0, DAYS, panels)
    server.client(db).write(f"tigo_power_report,gateway_id=1,node_id=1 power_w=1 "
                            f"{(day0 - 60 * DAY_MS) * 1_000_000}".encode())


def outage_between_queries(child: Child, server: InfluxServer, db: str) -> None:
    """InfluxDB goes away while the child is held between two queries of its backfill with days
    left to do (none in flight: what a stopping InfluxDB answers to a query in flight is tested in
    test_influx_outage), then the child goes on."""
    child.wait_stderr(b"(2/", timeout=60)
    stop_between_requests(child.proc, server.port)
    series = server.client(db).query('SELECT "done", "until" FROM "tigo_rollup"."tigo_rollup_progress" '
                                     "WHERE time >= 7258118400s")
    done, until = series[0]["values"][-1][1:]
    assert done < until, "the backfill ended before the child could be held: give it more days"
    server.pause()
    child.proc.send_signal(signal.SIGCONT)


def test_outage_resumed_backfill_equals_uninterrupted(own_influxd, day0):
    server = own_influxd
    for name in ("whole", "cut"):
        outage_history(server, name, 3, day0)
    whole = rollup(server.url, "whole")
    assert whole.returncode == 0, whole.stderr

    child = Child(tigo_execd_argv("rollup", "--influx-url", server.url, "--db", "cut",
                                  "--retry-for", "0"))
    outage_between_queries(child, server, "cut")
    assert child.finish(60) == 69, child.err
    assert b"resumes where it stopped" in child.err and b"Traceback" not in child.err
    server.resume()

    again = rollup(server.url, "cut")
    assert again.returncode == 0, again.stderr
    assert "resuming the backfill interrupted at" in again.stderr
    assert f"(1/{OUTAGE_DAYS} days" not in again.stderr  # the days done before are not done again
    assert dump(server.client("cut")) == dump(server.client("whole"))


def test_outage_waits_for_influxdb_to_come_back(own_influxd, day0):
    """InfluxDB restarting mid-backfill: the run waits for it and finishes."""
    server = own_influxd
    outage_history(server, "blip", 2, day0)
    child = Child(tigo_execd_argv("rollup", "--influx-url", server.url, "--db", "blip"))
    outage_between_queries(child, server, "blip")
    child.wait_stderr(b"retrying for", timeout=30)
    server.resume()
    assert child.finish(120) == 0, child.err
    assert f"({OUTAGE_DAYS}/{OUTAGE_DAYS} days".encode() in child.err and b"rollup done" in child.err


@pytest.fixture(scope="module")
def cq_influxd():
    with InfluxServer(cq_interval="1s") as server:
        yield server


def test_continuous_queries_roll_up_live_data(cq_influxd):
    server = cq_influxd
    server.raw_query('CREATE DATABASE "live"')
    db = server.client("live")
    now_ms = int(time.time() * 1000)
    start = now_ms - now_ms % 300000 - 1800000  # the last half hour, whole 5-minute buckets
    lines = [f"tigo_power_report,gateway_id=1,node_id={n},src=tigo power_w={100 + n + t % 7},rssi=100i,"
             f"voltage_in_v=30.0 {(start + t * 20000 + n * 3000) * 1_000_000}"
             for n in (1, 2) for t in range(90)]
    db.write("\n".join(lines).encode())
    setup = rollup(server.url, "live", "--days", "0")  # only the CQs: no backfill
    assert setup.returncode == 0, setup.stderr
    assert "no history rolled up" in setup.stderr
    where = f"WHERE time >= {start}ms AND time < {start + 1800000}ms"
    group = ' GROUP BY time(5m), "node_id" fill(none)'
    want = rows(db, f'SELECT mean("power_w"), count("power_w") FROM "tigo_power_report" {where}{group}')
    got_q = f'SELECT mean("power_w"), sum("reports") FROM "tigo_rollup"."tigo_power_report_5m" {where}{group}'
    wait_until(lambda: rows(db, got_q) == want, 30, lambda: f"CQ rollups {rows(db, got_q)} to equal {want}")


def test_no_permission_gives_the_admin_commands(influxd_auth, influx_auth_db, day0):
    server, perm = influxd_auth, influx_auth_db.db
    server.raw_query("CREATE USER writer WITH PASSWORD 'w'")
    server.raw_query(f'GRANT ALL ON "{perm}" TO writer')
    write_history(influx_auth_db, day0, 2, 2)
    env = {"INFLUX_USER": "writer", "INFLUX_PASS": "w"}
    refused = rollup(server.url, perm, env=env)
    assert refused.returncode == 77, refused.stderr
    assert refused.stderr.startswith("E! ") and "Traceback" not in refused.stderr
    assert "may not create retention policies or continuous queries" in refused.stderr
    commands = re.findall(r"-execute '([^']+)'", refused.stderr)
    assert commands and commands[0].startswith(f'CREATE RETENTION POLICY "tigo_rollup" ON "{perm}"')
    assert sum(c.startswith("CREATE CONTINUOUS QUERY") for c in commands) == 3
    for c in commands:  # what the admin does
        server.raw_query(c)
    done = rollup(server.url, perm, env=env)
    assert done.returncode == 0, done.stderr
    assert "create" not in done.stderr
    server.raw_query('DROP USER "writer"')


def test_missing_measurement_and_retention_policy(influx_db, influxd):
    empty = rollup(influxd.url, influx_db.db)
    assert empty.returncode == 66, empty.stderr
    assert f"no reports in {influx_db.db}.autogen.tigo_power_report" in empty.stderr
    assert "--measurement" in empty.stderr
    other = rollup(influxd.url, influx_db.db, "--rp", "nope")
    assert other.returncode == 70 and "retention policy 'nope' does not exist" in other.stderr
    # a missing database, InfluxDB down: tests/test_cli_contract.py, for every command


@pytest.mark.parametrize("args", [["--days", "x"], ["--days", "-1"], ["--since", "yesterday"],
                                  ["--days", "1", "--since", "2024-01-01T00:00:00Z"],
                                  ["--since", "2024-01-01T00:00:00"]])
def test_usage_errors(args):
    bad = subprocess.run(tigo_execd_argv("rollup", *args), capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert bad.returncode == 64 and bad.stderr.startswith("E! "), bad.stderr
