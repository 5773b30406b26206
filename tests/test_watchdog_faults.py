"""The watchdog's panel faults through the shipped telegraf/tigo-health.conf (Telegraf harness) and a
real InfluxDB holding a physical faulty site without a names file (two roof faces on one gateway,
tests/test_faults_physical.py; its peers are learned from the data): the hourly analysis runs as
a child process while the minute checks go on undelayed, its warn findings make the check
`WARN panel_fault`, and the previous complete day goes to InfluxDB as `tigo_panel_day` once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from support import physsite, site
from support import telegraf_harness as th
from support.paths import ROOT
from support.physsite_sites import INJECTED, SITES
from support.proc import descendants, pid_alive, tigo_execd_argv
from support.service_env import telegraf_env
from support.wait import wait_until, wait_until_async
from support.watchdog_check import fleet, health, ingest_rows, ns

CONF = ROOT / "telegraf" / "tigo-health.conf"
PHYSICAL = SITES["two faces, one gateway"].with_conditions(**INJECTED["two faces, one gateway"])
NOW = "2026-07-14T00:05:00Z"       # just after the site's week (July 7-13), its sun still up
DAY = ns("2026-07-13T00:00:00Z")   # the previous complete day, sunny (UTC: no location in the env)
INTERVAL = 0.25                    # the agent's interval, shortened: checks while the analysis runs


@pytest.fixture(scope="module")
def faulty_site(influxd):
    return physsite.database(influxd, PHYSICAL)


def fixed_clock_bin(tmp_path: Path) -> Path:
    """tigo-execd of this checkout, its watchdog at NOW (the conf's own arguments unchanged)."""
    path = tmp_path / "tigo-execd"
    path.write_text(f'#!/bin/sh\nPYTHONPATH="{ROOT}" exec "{sys.executable}" -m tigo_execd "$@" '
                    f'--now {NOW}\n')
    path.chmod(0o755)
    return path


def label(gateway: int, node: int) -> str:
    [p] = [p for p in PHYSICAL.nodes if (p.gateway, p.node) == (gateway, node)]
    return f"{gateway}/{node} ({p.barcode})"


def analysis_running(watchdog_pid: int) -> bool:
    """The watchdog's `tigo-execd faults` child is alive."""
    for pid in descendants(watchdog_pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"\0faults\0" in cmdline and pid_alive(pid):
            return True
    return False


def test_panel_fault_through_the_health_instance(tmp_path, faulty_site, mosquitto):
    env = telegraf_env(fixed_clock_bin(tmp_path), faulty_site.url, faulty_site.db, tmp_path,
                       MQTT_SERVER=f"tcp://127.0.0.1:{mosquitto.port}",
                       MQTT_TOPIC=f"test/{os.getpid()}/faults/health")
    arrivals: list[tuple[float, th.Metric]] = []
    harness = th.Harness(th.load_config(config=CONF, env=env),
                         on_metric=lambda m: arrivals.append((time.monotonic(), m)))
    during: list[float] = []  # how long each check took while the analysis ran

    def healths() -> list[th.Metric]:
        return [m for _, m in arrivals if m.name == "tigo_health"]

    async def one_check(pid: int) -> th.Metric:
        before, running, sent = len(healths()), analysis_running(pid), time.monotonic()
        for execd in harness.inputs:
            execd.gather()
        await wait_until_async(lambda: len(healths()) > before, 20,
                               lambda: f"a tigo_health line; log: {harness.log.records}")
        took = [t for t, m in arrivals if m.name == "tigo_health"][before] - sent
        if running and analysis_running(pid):  # the analysis ran before and after: throughout
            during.append(took)
        return healths()[before]

    async def run() -> list[th.Metric]:
        await harness.start(gather_loop=False)
        [execd] = [i for i in harness.inputs if "watchdog" in i.command]  # beside homeassistant
        assert execd.proc is not None
        pid = execd.proc.pid
        try:
            first = await one_check(pid)
            assert first.fields["reason"] == "healthy" and "faults" not in first.fields  # none yet
            deadline = time.monotonic() + 90
            while (last := healths()[-1]).fields["reason"] != "panel_fault":
                assert time.monotonic() < deadline, f"no panel_fault: {last.fields}"
                await asyncio.sleep(INTERVAL)
                await one_check(pid)
            for _ in range(3):  # later checks: the same verdict, no second tigo_panel_day
                await one_check(pid)
        finally:
            await harness.stop()
        return healths()

    checks = asyncio.run(run())
    # A check answered while the analysis ran before and after it: it did not wait for it (an
    # ordering, not a time bound: the machine may be loaded)
    assert during, "no check ran while the analysis did"
    print(f"\n{len(during)} checks while the analysis ran: max {max(during):.3f} s")

    verdict = checks[-1].fields
    expected = {key for key, kinds in PHYSICAL.expected().items() if ("shaded", "info") not in kinds}
    assert (verdict["status"], verdict["code"]) == ("WARN", 1)
    assert verdict["faults"] >= len(expected)
    assert f"{label(4609, 3)} bypass_diode" in verdict["fault_panels"]
    assert f"{label(4609, 5)} underperforming" in verdict["fault_panels"]
    assert "shaded" not in verdict["fault_panels"]  # info, never an alarm
    assert verdict["message"].startswith(f"{verdict['faults']} panel faults ({label(4609, 3)} ")
    assert "tigo-execd faults" in verdict["message"]

    days = [m for _, m in arrivals if m.name == "tigo_panel_day"]
    assert len(days) == len(PHYSICAL.nodes)  # one day, once, for every panel
    assert {m.ts_ns for m in days} == {DAY}
    by_node = {(m.tags["gateway_id"], m.tags["node_id"]): m for m in days}
    assert by_node[("4609", "5")].fields["energy_ratio"] < 0.8
    assert "bypass_diode" in by_node[("4609", "3")].fields["kinds"]
    assert by_node[("4609", "2")].fields["kinds"] == ""
    assert by_node[("4609", "11")].fields["peer_group"] == "4609/b"  # learned: the WSW face

    # through the conf's outputs.influxdb: one point per panel, at the day's start
    written = faulty_site.query('SELECT "energy_ratio", "kinds" FROM "tigo_panel_day" '
                                'GROUP BY "gateway_id", "node_id"')
    assert len(written) == len(days)
    assert all([row[0] for row in s["values"]] == [DAY] for s in written)


def test_no_analysis_with_faults_every_min_0(influx_db):
    """--faults-every-min 0 turns the analysis off: the check carries no fault fields."""
    now = ns(NOW)
    influx_db.write("".join(fleet(now, {1: 0.5, 2: 1.0}) + ingest_rows("taptap-cmd", now)).encode())
    fields, _ = health(influx_db, "--faults-every-min", "0", now=NOW)
    assert fields["reason"] == "healthy" and "faults" not in fields


def test_faults_json_days_adds_the_panel_days(faulty_site):
    """`--format json-days`: the findings exactly as `--format json`, plus the complete days."""
    def run(fmt: str) -> bytes:
        argv = tigo_execd_argv("faults", "--influx-url", faulty_site.url, "--db", faulty_site.db,
                               "--now", NOW, "--format", fmt)
        proc = subprocess.run(argv, capture_output=True, timeout=120)
        assert proc.returncode == 1, proc.stderr
        return proc.stdout

    both = orjson.loads(run("json-days"))
    assert both["findings"] == orjson.loads(run("json"))
    days = sorted({d["time_s"] for d in both["panel_days"]})
    assert days == [ns(f"2026-07-{d:02d}T00:00:00Z") // 10**9 for d in range(7, 14)]  # complete only
    assert {frozenset(d["fields"]) for d in both["panel_days"]} >= {
        frozenset({"energy_kwh", "energy_ratio", "vin_ratio", "temp_delta_c", "report_ratio", "kinds",
                   "peer_group"})}
    # the peers learned without a names file: the roof's two faces
    assert {d["fields"]["peer_group"] for d in both["panel_days"]} == {"4609/a", "4609/b"}


class Watchdog:
    """`tigo-execd watchdog` in execd mode at NOW, one check per `check()`, its other lines kept."""

    def __init__(self, db, *args: str, now: str = NOW) -> None:
        argv = tigo_execd_argv("watchdog", "--influx-url", db.url, "--db", db.db, "--now", now, *args)
        env = {k: v for k, v in os.environ.items() if k not in ("INFLUX_USER", "INFLUX_PASS")}
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self.other: list[th.Metric] = []

    def check(self) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(b"\n")
        self.proc.stdin.flush()
        while not (line := self.proc.stdout.readline()).startswith(b"tigo_health "):
            assert line, "the watchdog ended"
            self.other.append(th.parse_line(line.decode().rstrip("\n")))
        return th.parse_line(line.decode().rstrip("\n")).fields

    def __enter__(self) -> Watchdog:
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.other += [th.parse_line(line.decode().rstrip("\n")) for line in self.proc.stdout]
        assert self.proc.wait(10) == 0


def test_analysis_at_most_every_period_and_each_day_written_once(faulty_site):
    """--faults-every-min: no new analysis within the period, one once it is over; the day both
    analyses cover is written once. (The child is started before the check's line is printed.)"""
    period = 6.0
    with Watchdog(faulty_site, "--faults-every-min", str(period / 60)) as wd:
        wd.check()
        started = time.monotonic()
        assert analysis_running(wd.proc.pid)
        wait_until(lambda: not analysis_running(wd.proc.pid), 60, "the analysis to finish")
        assert time.monotonic() - started < period, "the analysis took longer than the test's period"
        assert wd.check()["reason"] == "panel_fault"  # its result...
        assert not analysis_running(wd.proc.pid)       # ... and no new analysis within the period
        wait_until(lambda: time.monotonic() - started >= period, 10, "the period to pass")
        wd.check()
        assert analysis_running(wd.proc.pid)
        wait_until(lambda: not analysis_running(wd.proc.pid), 60, "the second analysis to finish")
        assert wd.check()["reason"] == "panel_fault"
    days = [m for m in wd.other if m.name == "tigo_panel_day"]
    assert len(days) == len(PHYSICAL.nodes) and {m.ts_ns for m in days} == {DAY}


def test_a_worse_reason_wins_over_panel_fault_and_the_fields_stay(influxd):
    """A gateway gone silent (nodes_silent) outranks panel_fault; faults/fault_panels are still there
    (the generated site of tests/support/site.py, whose gateway 4610 can stop)."""
    now = "2026-06-22T12:00:00Z"  # noon of that site's 8th day
    name = f"wdsilent{os.getpid()}"
    influxd.raw_query(f'CREATE DATABASE "{name}"')
    db = influxd.client(name)
    try:
        site.standard(site.INJECTED, days=8, stop={4610: ns(now) // 10**9 - 7200}).write(db)
        with Watchdog(db, now=now) as wd:
            first = wd.check()
            assert first["reason"] == "nodes_silent" and "faults" not in first
            wait_until(lambda: not analysis_running(wd.proc.pid), 60, "the analysis to finish")
            second = wd.check()
        assert (second["status"], second["reason"]) == ("WARN", "nodes_silent")
        assert second["faults"] >= 1 and "4609/3 (4-090003Z) bypass_diode" in second["fault_panels"]
    finally:
        influxd.raw_query(f'DROP DATABASE "{name}"')


def test_the_layout_faces_are_the_hourly_analysis_peer_groups(faulty_site, tmp_path):
    """watchdog --layout hands the layout file to its faults child: each face with an azimuth is
    one peer group in the tigo_panel_day it writes (instead of the faces learned from the data)."""
    faces: dict[physsite.Face, list[str]] = {}
    for n in PHYSICAL.nodes:
        faces.setdefault(n.face, []).append(f"{n.gateway}/{n.node}")
    layout = tmp_path / "roof.txt"
    layout.write_text("".join(f"[{face.name} azimuth={face.azimuth:g} tilt={face.tilt:g}]\n{' '.join(ids)}\n"
                              for face, ids in faces.items()))
    with Watchdog(faulty_site, "--layout", str(layout)) as wd:
        wd.check()
        wait_until(lambda: not analysis_running(wd.proc.pid), 60, "the analysis to finish")
        wd.check()
    groups = {m.tags["node_id"]: m.fields["peer_group"] for m in wd.other if m.name == "tigo_panel_day"}
    expected = {str(n.node): f"face {n.face.name}" for n in PHYSICAL.nodes}
    assert groups == expected
