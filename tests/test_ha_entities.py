"""`tigo-execd homeassistant` at its edges: every entity's device class, unit and state class as Home
Assistant's own tables allow them; energy today exact on both sides of a bucket's settling edge; a
minute InfluxDB cannot answer; and its documented options at values other than their defaults,
through the command line (docs/reference/homeassistant.md)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from support import ha_venv
from support.proc import tigo_execd_argv
from support.servers import free_port
from support.telegraf_harness import Metric, parse_line
from support.watchdog_check import MIN, NOON, ns, report
from tigo_execd import lineproto
from tigo_execd.health.homeassistant import Publisher, Settings
from tigo_execd.influx import Influx

NS = 1_000_000_000
S = 20 * NS  # one report every 20 s, as taptap sends them


@pytest.fixture
def utc() -> Iterator[None]:
    """Local time is UTC: "today" starts at 00:00Z."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if saved is None:
        os.environ.pop("TZ")
    else:
        os.environ["TZ"] = saved
    time.tzset()


def settings(db: Influx, **changed) -> Settings:
    base = dict(influx=db, rp="", measurement="tigo_power_report", discovery_prefix="homeassistant",
                health_topic="tigo/health", topic_base="tigo", id_prefix="tigo", site_name="Tigo site",
                inventory_days=7.0, node_silence_min=30.0, state_every_min=5.0, config_every_min=60.0)
    return Settings(**{**base, **changed})


def metrics(text: str) -> list[Metric]:
    return [parse_line(line) for line in text.splitlines()]


def by_topic(text: str, name: str) -> dict[str, dict]:
    return {m.tags["topic"]: m.fields for m in metrics(text) if m.name == name}


def write_power(db: Influx, start_ns: int, end_ns: int, watts: float, nodes=(2,)) -> None:
    db.write("".join(lineproto.line("tigo_power_report", {"gateway_id": "4609", "node_id": str(n)},
                                    {"power_w": watts, "voltage_in_v": 33.5, "temperature_c": 30.0,
                                     "rssi": 120}, t)
                     for t in range(start_ns, end_ns, S) for n in nodes).encode())


# ---------------------------------------------------------------- Home Assistant's tables


def test_every_entity_pairs_its_device_class_unit_and_state_class_as_home_assistant_allows(influx_db):
    now = ns(NOON)
    write_power(influx_db, now - 10 * MIN, now, 250.0, nodes=(2, 3))
    configs = by_topic(Publisher(settings(influx_db)).check(now), "tigo_ha_config")
    assert len(configs) == 6 + 2 * 7
    tables = ha_venv.sensor_tables()
    seen = set()
    for topic, config in configs.items():
        component = topic.split("/")[1]
        device_class, unit, state_class = (config.get(k) for k in ("dev_cla", "unit_of_meas", "stat_cla"))
        seen.add((component, device_class, unit, state_class))
        if component == "binary_sensor":
            assert device_class in tables["binary_sensor"] and unit is None and state_class is None, topic
            continue
        assert component == "sensor", topic
        if device_class is None:
            continue
        assert device_class in tables["sensor"], topic
        # A class missing from DEVICE_CLASS_UNITS (timestamp) takes no unit at all
        assert unit in tables["units"].get(device_class, [None]), (topic, device_class, unit)
        assert state_class is None or state_class in tables["state_classes"][device_class], (
            topic, device_class, state_class)
    assert seen == {  # every combination we publish, so a new one is looked at here
        ("binary_sensor", "problem", None, None), ("sensor", None, None, None),
        ("sensor", "duration", "min", "measurement"), ("sensor", None, None, "measurement"),
        ("sensor", "power", "W", "measurement"), ("sensor", "energy", "kWh", "total_increasing"),
        ("sensor", "voltage", "V", "measurement"), ("sensor", "temperature", "°C", "measurement"),
        ("sensor", "timestamp", None, None)}


# ---------------------------------------------------------------- energy today, exactly


def site_energy(publisher: Publisher, now_ns: int) -> float:
    return by_topic(publisher.check(now_ns), "tigo_ha_state")["tigo/site"]["energy_kwh"]


def test_energy_today_is_exact_on_both_sides_of_a_bucket_settling(influx_db, utc):
    """Six 5-minute buckets of 15 reports at 600 W: 0.05 kWh each (600 W x 5 min). A bucket counts
    whole once it ended SETTLE (60 s) ago; a nanosecond earlier the newest one is provisional,
    sum / max(count, 16) = 562.5 W, so 5 x 0.05 + 562.5 / 12000 = 0.296875 kWh."""
    start = ns("2026-06-21T10:00:00Z")
    write_power(influx_db, start, start + 30 * MIN, 600.0)
    settle_edge = start + 31 * MIN
    assert site_energy(Publisher(settings(influx_db)), settle_edge) == 0.3
    assert site_energy(Publisher(settings(influx_db)), settle_edge - 1) == 0.297
    one = Publisher(settings(influx_db))  # the same publisher across the edge never goes down
    assert [site_energy(one, t) for t in (settle_edge - 1, settle_edge, settle_edge + 5 * MIN)] == [
        0.297, 0.3, 0.3]


def test_energy_today_starts_again_at_local_midnight(influx_db, utc):
    midnight = ns("2026-06-22T00:00:00Z")
    write_power(influx_db, midnight - 30 * MIN, midnight + 30 * MIN, 1200.0)
    publisher = Publisher(settings(influx_db))
    # 23:30-23:55: five buckets of 0.1; 23:55-23:59: 13 reports of 1200 W / 16 = 975 W, 0.08125
    assert site_energy(publisher, midnight - 1 * MIN) == 0.581
    assert site_energy(publisher, midnight + 31 * MIN) == 0.6  # today: 00:00-00:30 only


# ---------------------------------------------------------------- InfluxDB trouble


def test_a_minute_influxdb_cannot_answer_is_a_warning_and_the_next_one_publishes(influx_db, logged):
    now = ns(NOON)
    write_power(influx_db, now - 10 * MIN, now, 250.0)
    down = Influx(f"http://127.0.0.1:{free_port()}", influx_db.db, timeout=2)
    publisher = Publisher(settings(down))
    assert publisher.check(now) == ""
    assert logged.getvalue().startswith("W! homeassistant: no update this minute: ")
    publisher.s.influx = influx_db  # InfluxDB is back
    states = by_topic(publisher.check(now + MIN), "tigo_ha_state")
    assert states["tigo/panel/4609_2"]["power_w"] == 250.0


def test_the_command_with_influxdb_down_prints_nothing_and_warns():
    done = subprocess.run(tigo_execd_argv("homeassistant", "--once", "--influx-url",
                                          f"http://127.0.0.1:{free_port()}"),
                          capture_output=True, text=True, timeout=60)
    assert done.stdout == "" and "Traceback" not in done.stderr
    assert "W! homeassistant: no update this minute" in done.stderr


# ---------------------------------------------------------------- options off their defaults


def run_once(db: Influx, *args: str, stdin: str | None = None) -> str:
    argv = tigo_execd_argv("homeassistant", "--influx-url", db.url, "--db", db.db, "--now", NOON, *args)
    if stdin is None:
        argv.append("--once")
    done = subprocess.run(argv, input=stdin or "", capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "E! " not in done.stderr, done.stderr
    return done.stdout


def test_node_silence_min_marks_a_panel_offline_past_its_edge(influx_db):
    now = ns(NOON)
    influx_db.write("".join([report(4609, 2, now), report(4609, 3, now - 10 * MIN),
                             report(4609, 4, now - 10 * MIN - 1_000_000)]).encode())
    status = {t: f["status"] for t, f in by_topic(run_once(influx_db, "--node-silence-min", "10"),
                                                  "tigo_ha_state").items() if "panel" in t}
    assert status == {"tigo/panel/4609_2": "online", "tigo/panel/4609_3": "online",
                      "tigo/panel/4609_4": "offline"}
    default = by_topic(run_once(influx_db), "tigo_ha_state")
    assert {f["status"] for t, f in default.items() if "panel" in t} == {"online"}


def test_site_name_health_topic_and_state_every_min_reach_the_configs(influx_db):
    influx_db.write(report(4609, 2, ns(NOON)).encode())
    configs = by_topic(run_once(influx_db, "--site-name", "Roof east", "--health-topic", "home/pv/health",
                                "--state-every-min", "2"), "tigo_ha_config")
    problem = configs["homeassistant/binary_sensor/tigo_site_problem/config"]
    assert (problem["dev_name"], problem["stat_t"], problem["json_attr_t"]) == (
        "Roof east", "home/pv/health", "home/pv/health")
    power = configs["homeassistant/sensor/tigo_4609_2_power/config"]
    assert power["exp_aft"] == 3 * 2 * 60  # three missed states


def test_inventory_days_is_how_far_back_a_panel_is_published(influx_db):
    now = ns(NOON)
    influx_db.write("".join([report(4609, 2, now), report(4609, 3, now - 2 * 1440 * MIN)]).encode())
    def panels(*args: str) -> set[str]:
        return {t for t in by_topic(run_once(influx_db, *args), "tigo_ha_state") if "panel" in t}
    assert panels("--inventory-days", "1") == {"tigo/panel/4609_2"}
    assert panels() == {"tigo/panel/4609_2", "tigo/panel/4609_3"}


def test_config_every_min_is_how_often_every_config_is_sent_again(influx_db):
    influx_db.write(report(4609, 2, ns(NOON)).encode())
    def configs(*args: str) -> int:
        return sum(m.name == "tigo_ha_config" for m in metrics(run_once(influx_db, *args, stdin="\n\n")))
    assert configs() == 6 + 7  # unchanged: the second check sends none
    assert configs("--config-every-min", "1") == 2 * (6 + 7)  # the whole period is one check


def test_state_every_min_is_how_long_an_unchanged_state_waits(influx_db):
    now = ns(NOON)
    influx_db.write(report(4609, 2, now - 10 * MIN).encode())  # asleep: the state does not change
    publisher = Publisher(settings(influx_db, state_every_min=2.0))
    assert "tigo/site" in by_topic(publisher.check(now), "tigo_ha_state")
    assert by_topic(publisher.check(now + 2 * MIN - 1), "tigo_ha_state") == {}
    again = by_topic(publisher.check(now + 2 * MIN), "tigo_ha_state")
    assert set(again) == {"tigo/site", "tigo/panel/4609_2"}
