"""The roof picture as Home Assistant's MQTT image entity: `homeassistant --layout FILE` and
`layout --format homeassistant` (issue 22).

The image's discovery config is judged by Home Assistant 2024.3.3's own MQTT `image` schema
(support/ha_venv.py); the shipped tigo-health.conf, unchanged, carries the picture through the
Telegraf harness (its `layout = "field"` output) to a real Mosquitto, and a real Home Assistant core
started on that broker serves it to the frontend through its own HTTP server as image/svg+xml.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from collections.abc import Callable
from xml.etree import ElementTree

import pytest

from support import ha_venv, telegraf_mqtt
from support import telegraf_harness as th
from support.ha_conf import CONF, Retained, conf_command, ha_env, load_demo, published, run_once
from support.paths import ROOT
from support.proc import Child, tigo_execd_argv
from support.servers import free_port
from support.wait import wait_until
from tigo_execd.analysis.roof_homeassistant import RoofImage

DEMO_LAYOUT = ROOT / "tigo_execd" / "data" / "demo-layout.txt"
DRAWN = {f"{gw}/{n}" for gw, count in ((4609, 9), (4610, 7), (4611, 6)) for n in range(2, count + 2)}
MIN_NS = 60 * 10**9


@pytest.fixture
def demo(influx_db, tmp_path) -> int:
    """The demo day (ending now) in the test's database; returns the time of its strongest report."""
    load_demo(influx_db, tmp_path)
    [row] = influx_db.query('SELECT max("power_w") FROM "tigo_power_report"', epoch="ns")[0]["values"]
    return int(row[0])


def _when(ns: int) -> str:
    from datetime import UTC, datetime
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def svg_panels(svg: str) -> set[str]:
    root = ElementTree.fromstring(svg)
    return {r.get("data-panel", "") for r in root.iter("{http://www.w3.org/2000/svg}rect")
            if r.get("data-panel") is not None}


@pytest.mark.timeout(1500)  # the first run on a machine makes Home Assistant's venv (minutes)
def test_the_image_config_is_valid_for_home_assistant_and_the_payload_is_the_svg(influx_db, demo):
    env = ha_env(influx_db, f"t{os.getpid()}r", TIGO_LAYOUT=str(DEMO_LAYOUT))
    metrics = run_once(env, "--now", _when(demo))
    msgs = published(metrics, env)
    config_topic = f"{env['HA_DISCOVERY_PREFIX']}/image/tigo_site_roof/config"
    config = json.loads(msgs[config_topic])
    assert config == {"name": "Roof", "uniq_id": "tigo_site_roof", "obj_id": "tigo_site_roof",
                      "ic": "mdi:solar-panel-large", "img_t": f"{env['HA_TOPIC_BASE']}/site/roof",
                      "cont_type": "image/svg+xml", "dev": {"ids": "tigo_site"}}
    result = ha_venv.check([{"topic": config_topic, "component": "image", "payload": config}], [])
    assert result["errors"] == []

    svg = msgs[config["img_t"]].decode()
    assert svg_panels(svg) == DRAWN  # the SVG itself, every drawn panel in it, parseable XML
    [image] = [m for m in metrics if m.name == "tigo_ha_image"]
    assert svg == image.fields["roof"]  # published byte for byte as the line carried it
    assert "\n" not in svg


@pytest.mark.timeout(1500)
def test_the_checker_knows_the_image_schema():
    good = {"name": "Roof", "uniq_id": "r", "img_t": "t/roof", "cont_type": "image/svg+xml",
            "dev": {"ids": "d"}}
    result = ha_venv.check([
        {"topic": "good", "component": "image", "payload": good},
        {"topic": "url", "component": "image", "payload": {**good, "url_t": "t/url"}},  # both topics
        {"topic": "none", "component": "image", "payload": {"name": "Roof", "uniq_id": "r"}},
        {"topic": "typo", "component": "image", "payload": {**good, "img_enc": "b64"}},
    ], [])
    assert [e.split(":")[0] for e in result["errors"]] == ["url", "none", "typo"]


def test_layout_format_homeassistant_prints_what_the_health_instance_publishes(influx_db, demo):
    env = ha_env(influx_db, "tigo_roof", HA_DISCOVERY_PREFIX="homeassistant", HA_TOPIC_BASE="tigo",
                 TIGO_LAYOUT=str(DEMO_LAYOUT))
    health = [line for line in subprocess.run(
        tigo_execd_argv(*conf_command(env)[1:], "--once", "--now", _when(demo)), capture_output=True,
        text=True, timeout=120, env={**os.environ, **env}, check=True).stdout.splitlines()
        if "image" in line.split(" ", 1)[0]]
    layout = subprocess.run(tigo_execd_argv("layout", "--demo", "--format", "homeassistant", "--influx-url",
                                            influx_db.url, "--db", influx_db.db, "--state-file", "",
                                            "--now", _when(demo)),
                            capture_output=True, text=True, timeout=120, check=True)
    assert layout.stdout.splitlines() == health and len(health) == 2


def image_svg(line: str) -> str:
    return str(th.parse_line(line.rstrip("\n")).fields["roof"])


def test_at_most_once_a_minute_with_the_newest_values(influx_db, demo):
    target = '"tigo_power_report"'
    roof = RoofImage(DEMO_LAYOUT)
    first = roof.line(influx_db, target, "tigo", demo)
    assert first.startswith("tigo_ha_image,topic=tigo/site roof=")
    assert roof.line(influx_db, target, "tigo", demo + MIN_NS - 1) == ""  # within the minute
    influx_db.write(f"tigo_power_report,gateway_id=4611,node_id=2 power_w=1.0 {demo + MIN_NS}\n"
                    .encode())  # newer than the demo's own reports up to then
    then = roof.line(influx_db, target, "tigo", demo + MIN_NS)
    assert 'data-panel="4611/2"' in image_svg(then)
    value = re.search(r'data-panel="4611/2"[^>]*data-value="([^"]*)"', image_svg(then))
    assert value and value[1] == "1", image_svg(then)


def test_a_bad_layout_file_is_told_once_and_fixing_it_brings_the_picture(influx_db, demo, tmp_path):
    """Two checks with a bad file (the clock running and states sent every check, to see each one
    end): its problem in E! lines once and no picture; the file fixed, the next check publishes the
    picture and says so."""
    layout = tmp_path / "roof.txt"
    layout.write_text("[west]\n4609/2 nope\n")
    env = ha_env(influx_db, f"t{os.getpid()}b", TIGO_LAYOUT=str(layout))
    child = Child(tigo_execd_argv(*conf_command(env)[1:], "--state-every-min", "0.0001"), env=env)

    def check(done) -> None:  # type: ignore[no-untyped-def]
        child.proc.stdin.write(b"\n")
        child.proc.stdin.flush()
        child.wait_for(done, what="a check's lines")

    try:
        for n in (1, 2):
            check(lambda n=n: child.out.count(b"tigo_ha_state,topic=") >= 23 * n)
        errors = [line for line in child.err.decode().splitlines() if line.startswith("E! ")]
        assert len(errors) == 2 and "line 2: 'nope' names no known panel" in errors[0], child.err
        assert errors[1] == "E! homeassistant: no Roof picture until the layout file is fixed"
        assert b"tigo_ha_image" not in child.out
        layout.write_text("[west]\n4609/2 4609/3\n")
        check(lambda: b"tigo_ha_image" in child.out)
        assert b"I! homeassistant: the layout file is fine again" in child.err
    finally:
        child.proc.stdin.close()
        child.proc.wait(timeout=30)


def test_the_field_layout_publishes_each_field_raw():
    conf = {"topic": '{{ .Tag "topic" }}', "layout": "field", "namepass": ["tigo_ha_image"]}
    metrics = [telegraf_mqtt.Metric("tigo_ha_image", {"topic": "tigo/site"},
                                    {"roof": '<svg a="1">\\</svg>', "n": 3, "x": 230.0, "ok": True}, 1),
               telegraf_mqtt.Metric("tigo_ha_state", {"topic": "tigo/site"}, {"power_w": 1.0}, 1)]
    assert telegraf_mqtt.messages(metrics, conf) == [
        ("tigo/site/roof", b'<svg a="1">\\</svg>'), ("tigo/site/n", b"3"), ("tigo/site/x", b"230"),
        ("tigo/site/ok", b"true")]


async def one_minute(env: dict[str, str], published: Callable[[], bool]) -> None:
    """The shipped conf in the Telegraf harness: one minute's gather of both inputs, until
    `published` holds."""
    harness = th.Harness(th.load_config(config=CONF, env=env))
    await harness.start(gather_loop=False)
    try:
        for execd in harness.inputs:
            execd.gather()
        await asyncio.to_thread(wait_until, published, 60, "the picture retained")
    finally:
        await harness.stop()


@pytest.mark.timeout(1500)  # the first run on a machine makes Home Assistant's venv (minutes)
def test_shipped_conf_end_to_end_home_assistant_serves_the_roof(influx_db, demo, mosquitto,
                                                                 tigo_execd_bin, tmp_path):
    """The shipped conf through the Telegraf harness to a real Mosquitto: the image config and the
    SVG are retained; a real Home Assistant core started then has the Roof image entity and serves
    the SVG, as image/svg+xml, at the entity's picture URL."""
    base = f"t{os.getpid()}h"
    env = {**ha_env(influx_db, base, TIGO_LAYOUT=str(DEMO_LAYOUT)), "TIGO_EXECD": str(tigo_execd_bin),
           "MQTT_SERVER": f"tcp://127.0.0.1:{mosquitto.port}"}
    roof_topic = f"{base}/tigo/site/roof"
    watcher = Retained(mosquitto.port, f"{base}/#")
    try:
        asyncio.run(one_minute(env, lambda: roof_topic in watcher.got))
    finally:
        watcher.close()
    svg = watcher.got[roof_topic].decode()
    assert svg_panels(svg) == DRAWN
    seen = ha_venv.core_states(tmp_path / "ha", mosquitto.port, free_port(), f"{base}/ha",
                               ["image.tigo_site_roof", "sensor.tigo_site_power"])
    roof = seen["image.tigo_site_roof"]
    assert roof["attributes"]["friendly_name"] == "Tigo site Roof"
    assert roof["picture"] == {"status": 200, "content_type": "image/svg+xml", "body": svg}
