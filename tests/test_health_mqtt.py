"""The health path to MQTT: watchdog output -> Telegraf's JSON serializer -> the JSONata of
telegraf/tigo-health.conf -> a real Mosquitto with the conf's topic, QoS and retain -> a late
subscriber (Home Assistant starting after the check) still gets the latest status."""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
import tomllib

import paho.mqtt.client as mqtt
import pytest

from support import telegraf_harness as th
from support import telegraf_mqtt
from support.paths import ROOT
from support.watchdog_check import MUNICH, NOON, fleet, health, ingest_rows, ns

CONF = ROOT / "telegraf" / "tigo-health.conf"
# Functions of JSONata 1.5 (Telegraf's blues/jsonata-go implements 1.5.4); later ones such as
# $distinct, $type, $eval, $formatInteger or a picture argument of $fromMillis are not there.
JSONATA_15 = {
    "sum", "count", "max", "min", "average", "string", "substring", "substringBefore",
    "substringAfter", "lowercase", "uppercase", "length", "trim", "pad", "contains", "split", "join",
    "match", "replace", "now", "millis", "formatNumber", "formatBase", "number", "abs", "floor",
    "ceil", "round", "power", "sqrt", "random", "boolean", "not", "exists", "append", "sort",
    "reverse", "shuffle", "zip", "keys", "lookup", "spread", "merge", "sift", "each", "map",
    "filter", "reduce", "toMillis", "fromMillis", "base64encode", "base64decode",
}
OLD_KEYS = {"status", "reason", "lag_min", "last_ts_utc", "ts_utc"}  # what users consume today


def mqtt_output(env: dict[str, str] | None = None) -> dict:
    """The conf's [[outputs.mqtt]] table with ${VAR} expanded as Telegraf would (no variable set:
    the defaults after ":-"); its JSONata is the file's text as tomllib reads it."""
    [plugin] = [p for p in th.load_config(config=CONF, env=env or {}).outputs
                if p.kind == "outputs.mqtt" and p.options["namepass"] == ["tigo_health"]]
    [table] = [t for t in tomllib.loads(CONF.read_text())["outputs"]["mqtt"]
               if t["namepass"] == ["tigo_health"]]
    assert plugin.options["json_transformation"] == table["json_transformation"]
    return plugin.options


def late_subscriber(port: int, topic: str, timeout: float = 10.0) -> mqtt.MQTTMessage:
    """Connect after the publish, subscribe, and return the retained message the broker hands over."""
    got: list[mqtt.MQTTMessage] = []
    arrived = threading.Event()

    def on_message(client, userdata, message) -> None:  # type: ignore[no-untyped-def]
        got.append(message)
        arrived.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="home-assistant-late")
    client.on_message = on_message
    client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
    client.connect("127.0.0.1", port)
    client.loop_start()  # paho's network thread
    try:
        assert arrived.wait(timeout), f"no retained message on {topic!r}"
    finally:
        client.disconnect()
        client.loop_stop()
    return got[0]


def test_transformation_stays_within_jsonata_15():
    expression = mqtt_output()["json_transformation"]
    assert set(re.findall(r"\$(\w+)\s*\(", expression)) <= JSONATA_15
    assert not re.search(r"\$fromMillis\([^()]*,", expression), "no picture argument in 1.5"
    assert "$$" not in expression  # Telegraf's config loader would turn $$ into $


def test_watchdog_status_reaches_a_late_mqtt_subscriber(influx_db, mosquitto):
    now = ns(NOON)
    influx_db.write("".join(fleet(now, {1: 0.5, 2: 1.0, 3: 95, 4: 0.2})
                            + ingest_rows("taptap-cmd", now)).encode())
    fields, node_metrics = health(influx_db, *MUNICH)
    metrics = [telegraf_mqtt.Metric("tigo_health", {}, fields, now), *node_metrics]

    conf = mqtt_output()
    msgs = telegraf_mqtt.messages(metrics, conf)
    assert [topic for topic, _ in msgs] == ["tigo/health"]  # namepass: node lines stay out of MQTT
    telegraf_mqtt.publish(msgs, conf, "127.0.0.1", mosquitto.port)

    message = late_subscriber(mosquitto.port, "tigo/health")
    assert message.retain and message.qos == 1
    assert message.payload.endswith(b"}\n") and message.payload.count(b"\n") == 1
    payload = json.loads(message.payload)
    assert payload.keys() >= OLD_KEYS
    assert payload == {
        "status": "WARN", "code": 1, "reason": "nodes_silent", "message": fields["message"],
        "lag_min": 0.2, "last_ts_utc": "2026-06-21T11:59:48+00:00",
        "ts_utc": "2026-06-21T12:00:00.000Z",
        "nodes_expected": 4, "nodes_reporting": 3, "nodes_silent": 1,
        "silent_nodes": "4609/3 (4-A3Z)", "sun_elevation": fields["sun_elevation"],
    }
    # Go's encoding/json wrote it: compact, keys sorted.
    assert message.payload.decode() == telegraf_mqtt.go_json(payload) + "\n"


def test_shipped_conf_end_to_end(influx_db, mosquitto, tigo_execd_bin):
    """tigo-health.conf unchanged, run by the Telegraf emulation: one gather -> MQTT and InfluxDB."""
    tigo_execd = tigo_execd_bin
    now = time.time_ns()
    influx_db.write("".join(fleet(now, {1: 0.5, 2: 1.0}) + ingest_rows("taptap-cmd", now)).encode())
    topic = f"test/{os.getpid()}/tigo/health"
    env = {"PATH": os.environ["PATH"], "TIGO_EXECD": str(tigo_execd), "INFLUX_URL": influx_db.url,
           "INFLUX_DB": influx_db.db, "MQTT_SERVER": f"tcp://127.0.0.1:{mosquitto.port}",
           "MQTT_TOPIC": topic}

    async def one_gather() -> list[th.Metric]:
        checked = asyncio.Event()
        harness = th.Harness(th.load_config(config=CONF, env=env),
                             on_metric=lambda m: checked.set() if m.name == "tigo_health" else None)
        await harness.start(gather_loop=False)
        for execd in harness.inputs:
            execd.gather()
        try:
            await asyncio.wait_for(checked.wait(), 30)
        finally:
            await harness.stop()  # closes the watchdog's stdin, then flushes the outputs
        return harness.collected

    [metric] = [m for m in asyncio.run(one_gather()) if m.name == "tigo_health"]
    assert metric.tags == {}  # omit_hostname
    payload = json.loads(late_subscriber(mosquitto.port, topic).payload)
    # No location in this environment: the 240-minute fallback, and two fresh optimizers.
    assert (payload["status"], payload["reason"], payload["nodes_reporting"]) == ("OK", "healthy", 2)
    assert "sun_elevation" not in payload
    history = influx_db.query('SELECT "status", "reason" FROM "tigo_health"')
    assert history[0]["values"][0][1:] == ["OK", "healthy"]


@pytest.mark.parametrize("value", [230.0, 0.1, 1e21, 1.5e-7, -0.0, 12.25])
def test_go_number_forms(value):
    """encoding/json prints the shortest form: 230.0 -> 230, exponent only outside [1e-6, 1e21)."""
    expected = {230.0: "230", 0.1: "0.1", 1e21: "1e+21", 1.5e-7: "1.5e-7", -0.0: "-0",
                12.25: "12.25"}[value]
    assert telegraf_mqtt.go_json(value) == expected
    assert json.loads(expected) == value


def test_serializer_document_shape():
    out = telegraf_mqtt.serialize_json(
        "tigo_health", {"host": "pi"}, {"lag_min": 1.5, "status": "OK", "x": float("nan"),
                                        "message": "a <b> & \"c\"\n"}, 1767225612345678901, {})
    assert out == (b'{"fields":{"lag_min":1.5,"message":"a \\u003cb\\u003e \\u0026 \\"c\\"\\n",'
                   b'"status":"OK"},"name":"tigo_health","tags":{"host":"pi"},'
                   b'"timestamp":1767225612}\n')
