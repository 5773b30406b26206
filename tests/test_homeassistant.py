"""`tigo-execd homeassistant` -> the shipped tigo-health.conf's MQTT outputs -> Home Assistant.

Payloads are judged by Home Assistant 2024.3.3's own discovery schemas and template engine (in a
virtual environment of their own: support/ha_venv.py); the end-to-end tests run the shipped conf
unchanged through the Telegraf harness with a real InfluxDB holding the demo day and a real
Mosquitto, only the environment differing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import os
import re
import subprocess
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from support import ha_venv, telegraf_mqtt
from support import telegraf_harness as th
from support.dashboard_grafana import Range, all_panels, interpolate, load, resolve_variables
from support.ha_conf import CONF, NAMES, Retained, ha_env, load_demo, published, run_once
from support.proc import tigo_execd_argv
from support.servers import MosquittoServer, free_port
from support.wait import wait_until
from tigo_execd import lineproto

NS = 1_000_000_000
NUMERIC = re.compile(r"-?\d+(\.\d+)?(e[-+]?\d+)?")


def tz_with_midnight_at(epoch_s: int) -> str:
    """A POSIX TZ whose local midnight falls at epoch_s (POSIX offsets count west as positive)."""
    east = -epoch_s % 86400
    if east > 12 * 3600:
        east -= 86400
    west = -east
    sign = "-" if west < 0 else "+"
    h, rem = divmod(abs(west), 3600)
    return f"<TST>{sign}{h:02d}:{rem // 60:02d}:{rem % 60:02d}"


def health_payloads(env: dict[str, str]) -> list[bytes]:
    """What the watchdog's output publishes for an OK check and for a CRIT one without lag."""
    ok = {"status": "OK", "code": 0, "reason": "healthy", "message": "22 of 22 reporting",
          "lag_min": 0.3, "nodes_expected": 22, "faults": 1, "fault_panels": "4610/2 (a) shaded"}
    crit = {"status": "CRIT", "code": 2, "reason": "influx_unreachable", "message": "down"}
    now = time.time_ns()
    return [published([telegraf_mqtt.Metric("tigo_health", {}, f, now)], env)[env["MQTT_TOPIC"]]
            for f in (ok, crit)]


def valid_state(config: dict[str, Any], component: str, value: str) -> bool:
    if component == "binary_sensor":
        return value in ("ON", "OFF")
    if config.get("dev_cla") == "timestamp":
        return dt.datetime.fromisoformat(value).tzinfo is not None
    if "unit_of_meas" in config or "stat_cla" in config:
        return value == "None" or bool(NUMERIC.fullmatch(value))
    return bool(value)


@pytest.mark.timeout(1500)  # the first run on a machine makes Home Assistant's venv (minutes)
def test_discovery_validates_in_home_assistant_and_every_template_renders(influx_db, tmp_path):
    load_demo(influx_db, tmp_path)
    env = ha_env(influx_db, f"t{os.getpid()}a")
    msgs = published(run_once(env), env)
    configs = {t: json.loads(p) for t, p in msgs.items() if t.startswith(env["HA_DISCOVERY_PREFIX"])}
    assert len(configs) == 6 + 22 * 7  # the site and 22 panels
    states = {t: p.decode() for t, p in msgs.items() if t not in configs}
    healths = health_payloads(env)

    checks, renders, expect = [], [], []
    for topic, config in configs.items():
        component = topic.split("/")[-3]
        assert re.fullmatch(r"[a-zA-Z0-9_-]+", config["uniq_id"])
        assert topic == f"{env['HA_DISCOVERY_PREFIX']}/{component}/{config['uniq_id']}/config"
        checks.append({"topic": topic, "component": component, "payload": config})
        sources = [p.decode() for p in healths] if config["stat_t"] == env["MQTT_TOPIC"] \
            else [states[config["stat_t"]]]
        for payload in sources:
            renders.append({"template": config["val_tpl"], "payload": payload})
            expect.append(lambda v, c=config, k=component: valid_state(c, k, v))
            if "avty_tpl" in config:
                renders.append({"template": config["avty_tpl"], "payload": states[config["avty_t"]]})
                expect.append(lambda v: v in ("online", "offline"))
            if "json_attr_tpl" in config:
                renders.append({"template": config["json_attr_tpl"], "payload": payload})
                expect.append(lambda v: set(json.loads(v)) == {"reason", "message"})
    result = ha_venv.check(checks, renders)
    assert result["errors"] == []
    bad = [(r, v) for r, v, ok in zip(renders, result["rendered"], expect) if not ok(v)]
    assert bad == []

    devices = {c["dev"]["ids"]: c["dev"] for c in configs.values()}
    assert len({c["uniq_id"] for c in configs.values()}) == len(configs)
    for gateway, node, name in NAMES:
        assert devices[f"tigo_{gateway}_{node}"]["name"] == (name if name.strip() else
                                                              devices[f"tigo_{gateway}_{node}"]["sn"])
    assert devices["tigo_4610_2"]["via_device"] == "tigo_site"


@pytest.mark.timeout(1500)
def test_the_home_assistant_checker_rejects_what_home_assistant_would():
    good = {"name": "P", "uniq_id": "x", "stat_t": "t", "dev": {"ids": "d", "name": "D"}}
    result = ha_venv.check([
        {"topic": "good", "component": "sensor", "payload": good},
        {"topic": "class", "component": "sensor", "payload": {**good, "dev_cla": "pwr"}},
        {"topic": "typo", "component": "sensor", "payload": {**good, "stat_cls": "measurement"}},
        {"topic": "dev", "component": "sensor", "payload": {**good, "dev": {"ids": "d", "mfr": "x"}}},
        {"topic": "binary", "component": "binary_sensor", "payload": {**good, "unit_of_meas": "W"}},
    ], [{"template": "{{ value_json.a | default('None') }}", "payload": '{"b": 1}'}])
    assert [e.split(":")[0] for e in result["errors"]] == ["class", "typo", "dev", "binary"]
    assert result["rendered"] == ["None"]


def test_night_reads_zero_and_a_panel_silent_by_day_is_unavailable(influx_db):
    now = time.time_ns() // NS * NS
    lines = []
    for node in (1, 2, 3):
        last = now - (40 * 60 * NS if node == 3 else 10 * NS)  # node 3 silent for 40 min
        for k in range(30):
            lines.append(lineproto.line("tigo_power_report", {"gateway_id": "7", "node_id": str(node)},
                                        {"power_w": 200.0 + node, "voltage_in_v": 33.5,
                                         "temperature_c": 40.0, "rssi": 120},
                                        last - k * 20 * NS))
    influx_db.write("".join(l for l in lines if l).encode())
    env = ha_env(influx_db, f"t{os.getpid()}b")
    stamp = dt.datetime.fromtimestamp(now / NS, dt.UTC).isoformat()

    day = {t: json.loads(p) for t, p in published(run_once(env, "--now", stamp), env).items()}
    base = env["HA_TOPIC_BASE"]
    assert day[f"{base}/panel/7_1"]["power_w"] == 201 and day[f"{base}/panel/7_1"]["status"] == "online"
    assert day[f"{base}/panel/7_3"]["status"] == "offline"  # silent while the others report
    assert day[f"{base}/site"]["power_w"] == 201 + 202

    later = dt.datetime.fromtimestamp(now / NS + 3 * 3600, dt.UTC).isoformat()  # everyone asleep
    night = {t: json.loads(p) for t, p in published(run_once(env, "--now", later), env).items()}
    for node in (1, 2, 3):
        state = night[f"{base}/panel/7_{node}"]
        assert (state["status"], state["power_w"], state["voltage_in_v"]) == ("online", 0, 0)
        assert "temperature_c" not in state and state["last_report"].endswith("+00:00")
    assert night[f"{base}/site"]["power_w"] == 0


def test_a_panels_faults_are_its_newest_panel_day_kinds(influx_db):
    """Faults: the kinds of the panel's newest tigo_panel_day of the last 2 days, as Home Assistant
    renders them; `none` when that day had none or there is none that recent. The site's Panel
    faults counts the watchdog's warn findings, unknown before its first analysis."""
    now = time.time_ns() // NS * NS
    hour = 3600 * NS
    lines = [lineproto.line("tigo_power_report", {"gateway_id": "7", "node_id": str(node)},
                            {"power_w": 200.0, "rssi": 120}, now - 10 * NS) for node in (1, 2, 3, 4)]
    for node, hours_ago, kinds in ((1, 44, "hot"), (1, 20, "underperforming,shaded"),
                                   (2, 20, ""), (3, 80, "no_power")):  # node 4: no panel day
        lines.append(lineproto.line("tigo_panel_day", {"gateway_id": "7", "node_id": str(node)},
                                    {"energy_kwh": 1.5, "kinds": kinds}, now - hours_ago * hour))
    influx_db.write("".join(l for l in lines if l).encode())
    env = ha_env(influx_db, f"t{os.getpid()}g")
    stamp = dt.datetime.fromtimestamp(now / NS, dt.UTC).isoformat()
    msgs = published(run_once(env, "--now", stamp), env)
    prefix, base = env["HA_DISCOVERY_PREFIX"], env["HA_TOPIC_BASE"]

    panel = json.loads(msgs[f"{prefix}/sensor/tigo_7_1_faults/config"])
    site = json.loads(msgs[f"{prefix}/sensor/tigo_site_faults/config"])
    assert (panel["name"], panel["stat_t"], site["stat_t"]) == ("Faults", f"{base}/panel/7_1",
                                                               env["MQTT_TOPIC"])
    renders = [{"template": panel["val_tpl"], "payload": msgs[f"{base}/panel/7_{node}"].decode()}
               for node in (1, 2, 3, 4)]
    renders += [{"template": site["val_tpl"], "payload": p.decode()} for p in health_payloads(env)]
    result = ha_venv.check([{"topic": t, "component": "sensor", "payload": c}
                            for t, c in (("panel", panel), ("site", site))], renders)
    assert result["errors"] == []
    # the OK health message has faults 1; the CRIT one none yet (unknown in Home Assistant)
    assert result["rendered"] == ["underperforming,shaded", "none", "none", "none", "1", "None"]


def dashboard_energy(influx_db, from_ns: int, to_ns: int, **selected: list[str]) -> float:
    """The Grafana dashboard's 'Energy today' over [from, to] (a node: its gateway and node selected)."""
    dash = load()
    rng = Range(from_ns // 1_000_000, to_ns // 1_000_000)
    panel = next(p for p in all_panels(dash) if p["title"] == "Energy today")
    variables = resolve_variables(dash, influx_db, rng, **selected)
    series = influx_db.query(interpolate(panel["targets"][0]["query"], variables, rng))
    return sum(v[1] or 0 for s in series for v in s["values"])  # the stat panel's reduce: sum


def test_energy_today_is_the_dashboards(influx_db, tmp_path):
    """Midday of the demo day: per panel and for the site, the dashboard's number within 1 %."""
    last = load_demo(influx_db, tmp_path)
    midnight = (last - 20 * 3600 * NS) // (60 * NS) * 60 * NS  # ~20:00 local at the demo's end
    env = ha_env(influx_db, f"t{os.getpid()}c", TZ=tz_with_midnight_at(midnight // NS))
    # At the end of a bucket: the dashboard's last bucket is complete too (inside one, it counts
    # the bucket's mean so far for all of its 5 minutes).
    noon = (midnight + 13 * 3600 * NS) // (300 * NS) * 300 * NS - 1
    stamp = dt.datetime.fromtimestamp(noon / NS, dt.UTC).isoformat()
    states = {t: json.loads(p) for t, p in published(run_once(env, "--now", stamp), env).items()}
    base = env["HA_TOPIC_BASE"]

    panels = {k.split("/")[-1] for k in states if "/panel/" in k}
    assert len(panels) == 22
    for key in panels:
        gateway, node = key.split("_")
        kwh = dashboard_energy(influx_db, midnight, noon, gateway=[gateway], node=[node])
        assert abs(states[f"{base}/panel/{key}"]["energy_kwh"] - kwh) <= 0.01 * kwh + 0.001, key
    site, grafana = states[f"{base}/site"]["energy_kwh"], dashboard_energy(influx_db, midnight, noon)
    assert grafana > 20 and abs(site - grafana) <= 0.01 * grafana
    # Completed buckets count as on the dashboard; the newest ones a little less.
    settled = (noon - 60 * NS) // (300 * NS) * 300 * NS - 1
    assert dashboard_energy(influx_db, midnight, settled) - 0.0011 <= site < grafana
    # Inside the next bucket: still within 1 % of the dashboard's figure of the completed buckets.
    inside = dt.datetime.fromtimestamp(noon / NS + 100, dt.UTC).isoformat()
    later = {t: json.loads(p) for t, p in published(run_once(env, "--now", inside), env).items()}
    assert abs(later[f"{base}/site"]["energy_kwh"] - grafana) <= 0.01 * grafana
    # A restart (a new process) reads the same back; a minute later it has only grown.
    assert states == {t: json.loads(p) for t, p in published(run_once(env, "--now", stamp), env).items()}
    for minutes in range(1, 8):
        stamp = dt.datetime.fromtimestamp(noon / NS + 60 * minutes, dt.UTC).isoformat()
        later = {t: json.loads(p) for t, p in published(run_once(env, "--now", stamp), env).items()}
        for topic, state in states.items():
            if "energy_kwh" in state:
                assert later[topic]["energy_kwh"] >= state["energy_kwh"], (topic, minutes)
        states = later


def test_environment_cannot_change_the_payload_expressions():
    """Telegraf substitutes $name in conf strings when such a variable exists: the two HA outputs'
    JSONata has no `$` at all, so even variables named like JSONata's words leave it alone."""
    words = {w: "X" for w in ("fields", "merge", "each", "sift", "v", "k", "name", "tags", "topic")}
    env = {"PATH": os.environ["PATH"], **words}
    json = ("tigo_ha_config", "tigo_ha_state")  # tigo_ha_image's output (layout field) has no JSONata
    loaded = [p.options for p in th.load_config(config=CONF, env=env).outputs
              if p.kind == "outputs.mqtt" and p.options["namepass"][0] in json]
    raw = [t for t in tomllib.loads(CONF.read_text())["outputs"]["mqtt"] if t["namepass"][0] in json]
    assert [o["json_transformation"] for o in loaded] == [t["json_transformation"] for t in raw]
    assert all("$" not in t["json_transformation"] and t["layout"] == "non-batch" and t["qos"] == 1
               and t["retain"] for t in raw)


def test_discovery_off_and_bad_settings(influx_db):
    env = ha_env(influx_db, f"t{os.getpid()}d", HA_DISCOVERY_PREFIX="")
    metrics = run_once(env)
    assert {m.name for m in metrics} == {"tigo_ha_state"}  # no data yet: the site, 0 W, 0 kWh
    for option, value in (("--id-prefix", "a b"), ("--discovery-prefix", "ha/#"),
                          ("--topic-base", "/x"), ("--state-every-min", "0")):
        done = subprocess.run(tigo_execd_argv("homeassistant", "--once", option, value),
                              capture_output=True, timeout=60)
        assert done.returncode == 64 and done.stderr.startswith(b"E! "), (option, done.stderr)


# ---------------------------------------------------------------- end to end, the shipped conf


@pytest.mark.timeout(1500)  # the first run on a machine makes Home Assistant's venv (minutes)
def test_shipped_conf_end_to_end_with_a_day_boundary(influx_db, mosquitto, tigo_execd_bin, tmp_path):
    """The demo day in InfluxDB, local midnight 20 s ahead (TZ): configs and states are retained
    at the first gather, energy today drops to 0 exactly once, at midnight; then a real Home
    Assistant core shows the entities with their states."""
    load_demo(influx_db, tmp_path)
    midnight = time.time() + 20
    base = f"t{os.getpid()}e"
    env = {**ha_env(influx_db, base, TZ=tz_with_midnight_at(int(midnight))),
           "TIGO_EXECD": str(tigo_execd_bin), "MQTT_SERVER": f"tcp://127.0.0.1:{mosquitto.port}"}
    site_topic, health_topic = f"{base}/tigo/site", f"{base}/tigo/health"
    watcher = Retained(mosquitto.port, f"{base}/#")

    async def run() -> None:
        harness = th.Harness(th.load_config(config=CONF, env=env))
        await harness.start(gather_loop=False)
        try:
            for execd in harness.inputs:  # the minute's gather: watchdog and homeassistant
                execd.gather()
            await asyncio.to_thread(wait_until, lambda: len(watcher.got) >= 6 + 22 * 7 + 23 + 1, 60,
                                    "configs and states retained")
            first = json.loads(watcher.got[site_topic])
            assert first["energy_kwh"] > 5
            while time.time() < midnight + 2:
                await asyncio.sleep(0.5)
            for topic in (site_topic, health_topic):  # midnight passed; then one more minute
                for execd in harness.inputs:
                    execd.gather()
                before = len(watcher.history.get(topic, []))
                await asyncio.to_thread(wait_until, lambda t=topic, n=before: len(watcher.history[t]) > n,
                                        30, f"a new message on {topic}")
        finally:
            await harness.stop()

    try:
        asyncio.run(run())
    finally:
        watcher.close()
    energies = [json.loads(p)["energy_kwh"] for p in watcher.history[site_topic]]
    drops = [(a, b) for a, b in itertools.pairwise(energies) if b < a]
    assert len(drops) == 1 and energies[-1] == 0, energies
    configs = [t for t in watcher.got if t.startswith(f"{base}/ha/")]
    assert len(configs) == 6 + 22 * 7
    health = json.loads(watcher.got[health_topic])
    assert health["status"] in ("OK", "WARN", "CRIT") and health["reason"]  # the watchdog published

    # A real Home Assistant core, started now, finds it all in the retained messages.
    wanted = ["sensor.tigo_4610_2_power", "sensor.tigo_4610_2_energy_today",
              "sensor.tigo_4611_3_last_report", "sensor.tigo_site_energy_today",
              "binary_sensor.tigo_site_problem", "sensor.tigo_site_reason", "sensor.tigo_4610_2_faults"]
    seen = ha_venv.core_states(tmp_path / "ha", mosquitto.port, free_port(), f"{base}/ha", wanted)
    assert seen["sensor.tigo_4610_2_power"]["attributes"]["friendly_name"] == 'Süd "1" / 🌞 Power'
    assert seen["sensor.tigo_4610_2_power"]["attributes"]["unit_of_measurement"] == "W"
    assert float(seen["sensor.tigo_4610_2_power"]["state"]) >= 0
    assert seen["sensor.tigo_4610_2_energy_today"]["attributes"]["state_class"] == "total_increasing"
    assert float(seen["sensor.tigo_site_energy_today"]["state"]) == energies[-1] == 0
    assert seen["sensor.tigo_4611_3_last_report"]["attributes"]["friendly_name"] == "a/b/c Last report"
    assert seen["binary_sensor.tigo_site_problem"]["state"] == ("off" if health["status"] == "OK" else "on")
    assert seen["binary_sensor.tigo_site_problem"]["attributes"]["reason"] == health["reason"]
    assert seen["sensor.tigo_site_reason"]["state"] == health["reason"]
    assert seen["sensor.tigo_4610_2_faults"]["attributes"]["friendly_name"] == 'Süd "1" / 🌞 Faults'
    assert re.fullmatch(r"none|[a-z_]+(,[a-z_]+)*", seen["sensor.tigo_4610_2_faults"]["state"])


class MosquittoOn(MosquittoServer):
    """A Mosquitto on a given port: the same broker, started again (retained messages are gone,
    as after a restart without persistence)."""

    def __init__(self, port: int) -> None:
        self.wanted = port
        super().__init__()

    def _spawn(self, argv: list[str]) -> None:
        self.port = self.wanted
        (self.dir / "mosquitto.conf").write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        super()._spawn(argv)


@pytest.mark.timeout(300)  # Telegraf's 15 s retry, a minute to the first gather, two flushes
def test_broker_down_at_start_then_restarting(influx_db, tigo_execd_bin, tmp_path):
    """Down at start: Telegraf retries once after 15 s, and the broker is up by then; the first
    minute's gather has every config and state retained within two minutes of the start.
    Restarted while running: what could not be published waits in the outputs' buffers and
    arrives after."""
    load_demo(influx_db, tmp_path)
    port = free_port()
    base = f"t{os.getpid()}f"
    env = {**ha_env(influx_db, base), "TIGO_EXECD": str(tigo_execd_bin),
           "MQTT_SERVER": f"tcp://127.0.0.1:{port}"}
    health_topic = f"{base}/tigo/health"

    async def run() -> None:
        harness = th.Harness(th.load_config(config=CONF, env=env))
        started = time.monotonic()
        starting = asyncio.create_task(harness.start())  # gathers once a minute, the first after one
        await asyncio.sleep(3)
        assert harness.log.find(level="E", contains="retrying in 15s")
        broker = await asyncio.to_thread(MosquittoOn, port)
        await starting  # connected on the retry
        watcher = Retained(port, f"{base}/#")
        try:
            await asyncio.to_thread(wait_until, lambda: len(watcher.got) >= 6 + 22 * 7 + 23 + 1,
                                    120 - (time.monotonic() - started),
                                    "configs and states retained within two minutes of the start")
            broker.stop()
            for execd in harness.inputs:  # a minute while the broker is away
                execd.gather()
            await asyncio.to_thread(wait_until, lambda: harness.log.find(
                level="E", contains="Error writing to outputs.mqtt"), 30, "a failed flush")
            broker = await asyncio.to_thread(MosquittoOn, port)
            await asyncio.to_thread(wait_until, lambda: len(watcher.history[health_topic]) >= 2, 60,
                                    "the health message of the minute without broker")
        finally:
            await harness.stop()
            watcher.close()
            broker.stop()

    asyncio.run(run())


# ---------------------------------------------------------------- load


def fleet_lines(panels: int, start_ns: int, end_ns: int) -> list[str]:
    """Every panel reporting every 20 s over [start, end), power following a sine over the span."""
    import math

    lines = []
    for t in range(start_ns, end_ns, 20 * NS):
        sun = math.sin(math.pi * (t - start_ns) / (end_ns - start_ns))
        for i in range(panels):
            tags = {"gateway_id": str(10 + i // 100), "node_id": str(2 + i % 100)}
            lines.append(lineproto.line("tigo_power_report", tags, {
                "power_w": round(300 * sun + i % 7, 3), "voltage_in_v": 33.1, "temperature_c": 30.5,
                "rssi": 120}, t + i * 7_000_000) or "")
    return lines


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_minute_of_100_panels_costs_little(influxd, influx_db, capsys):
    """100 panels, 12 h of reports: each later minute's work (ours and InfluxDB's) well under 1 s."""
    from tigo_execd.health.homeassistant import Publisher, Settings

    now = time.time_ns() // (60 * NS) * (60 * NS) - 6 * 60 * NS
    lines = fleet_lines(100, now - 12 * 3600 * NS, now + 6 * 60 * NS)  # the last 6 min come later
    split = len(lines) - 6 * 3 * 100
    for i in range(0, split, 50000):
        influx_db.write("".join(lines[i:min(i + 50000, split)]).encode())
    publisher = Publisher(Settings(influx_db, "", "tigo_power_report", "homeassistant", "tigo/health",
                                   "tigo", "tigo", "Tigo site", 7.0, 30.0, 5.0, 60.0))
    costs = []
    for minute in range(6):
        influx_db.write("".join(lines[split + minute * 300:split + (minute + 1) * 300]).encode())
        ours, theirs = time.process_time(), cpu_of(influxd.proc.pid)
        out = publisher.check(now + minute * 60 * NS)
        costs.append((time.process_time() - ours, cpu_of(influxd.proc.pid) - theirs, out.count("\n")))
    with capsys.disabled():
        print(f"\nI! 100 panels, CPU s per minute (ours, influxd, lines): {costs}")
    first, later = costs[0], costs[1:]
    assert first[2] == 6 + 700 + 101 and all(lines >= 101 for _, _, lines in later)
    assert max(ours + theirs for ours, theirs, _ in later) < 1.0


class FakeInflux:
    """InfluxDB answers for 2,000 panels: the newest report of each; energy rows for the buckets."""

    def __init__(self, panels: int) -> None:
        self.panels = panels
        self.now = self.last = 0
        self.awake = True

    def query(self, q: str, epoch: str = "ns") -> list[dict[str, Any]]:
        keys = [{"gateway_id": str(10 + i // 300), "node_id": str(2 + i % 300)} for i in range(self.panels)]
        if q.startswith('SELECT last("kinds")'):  # yesterday's tigo_panel_day: a few faulty panels
            return [{"tags": k, "columns": ["time", "kinds"],
                     "values": [[0, "" if i % 50 else "shaded"]]} for i, k in enumerate(keys)]
        if q.startswith('SELECT last("power_w")'):
            if self.awake:
                self.last = self.now - 5 * NS  # at night: the evening's last report stays
            cols = ["time", "power_w", "voltage_in_v", "temperature_c", "rssi", "barcode", "panel"]
            return [{"tags": k, "columns": cols,
                     "values": [[self.last, 200.0 + (self.now // NS // 60 + i) % 50 if self.awake else 3.0,
                                 33.0, 30.0, 120, None, None]]} for i, k in enumerate(keys)]
        if "count(" in q:
            return [{"tags": k, "columns": ["time", "s", "n"], "values": [[0, 3000.0, 15]]}
                    for k in keys] if self.awake else []
        return [{"tags": k, "columns": ["time", "p"], "values": [[0, 200.0]]} for k in keys] \
            if self.awake else []


def test_2000_panels_message_count_per_minute(capsys):
    """Messages per minute for 2,000 panels: all states by day (they change), at night the same
    every --state-every-min only; configs all at start, then spread over the hour."""
    from tigo_execd.health.homeassistant import Publisher, Settings

    fake = FakeInflux(2000)
    publisher = Publisher(Settings(fake, "", "m", "homeassistant", "tigo/health", "tigo",  # type: ignore[arg-type]
                                   "tigo", "Tigo site", 7.0, 30.0, 5.0, 60.0))
    start = 1_750_000_000 * NS // (3600 * NS) * 3600 * NS
    counts = []
    cpu = time.process_time()
    for minute in range(120):
        fake.now = start + minute * 60 * NS
        fake.awake = minute < 60
        out = publisher.check(fake.now)
        counts.append((out.count("tigo_ha_config,"), out.count("tigo_ha_state,"), len(out)))
    cpu = time.process_time() - cpu
    day, night = counts[1:60], counts[61:]
    with capsys.disabled():
        print(f"\nI! 2000 panels: first minute {counts[0][:2]} (configs, states), "
              f"{counts[0][2] / 1e6:.1f} MB of line protocol; by day {sum(c + s for c, s, _ in day) / 59:.0f}"
              f" messages/min; at night {sum(c + s for c, s, _ in night) / 59:.0f} messages/min; "
              f"{cpu / 120:.2f} s CPU/min")
    assert counts[0][:2] == (6 + 2000 * 7, 2001)
    assert all(c <= 7 * -(-2000 // 60) + 6 for c, _, _ in counts[1:])  # the hourly refresh, spread
    assert all(s >= 2000 for _, s, _ in day), day  # every panel: its power changed
    assert sum(s for _, s, _ in night) <= 2001 * (59 // 5 + 2)  # unchanged: every 5 minutes
