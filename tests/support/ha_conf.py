"""The shipped health conf (telegraf/tigo-health.conf) driven as Telegraf drives it, for the Home
Assistant tests: the demo day in InfluxDB with a names file, the conf's environment, its
`homeassistant` command line run once, what its MQTT outputs publish, and a subscriber that keeps
the retained messages."""

from __future__ import annotations

import os
import subprocess
import threading

import paho.mqtt.client as mqtt

from support import telegraf_harness as th
from support import telegraf_mqtt
from support.paths import ROOT
from support.proc import tigo_execd_argv

CONF = ROOT / "telegraf" / "tigo-health.conf"
NAMES = [  # gateway, node, panel name as the names file has it
    ("4610", "2", 'Süd "1" / 🌞'), ("4610", "3", "east roof, left"), ("4611", "2", "O'Brien's"),
    ("4611", "3", "a/b/c"), ("4609", "2", "  ")]  # blank: not a name, the barcode is used


def names_file(tmp_path) -> str:
    path = tmp_path / "names.csv"
    rows = ["# gateway,node,panel"] + [f'{g},{n},"{p.replace(chr(34), chr(34) * 2)}"'
                                       for g, n, p in NAMES if p.strip()]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return str(path)


def load_demo(influx_db, tmp_path) -> int:
    """The demo day (ending now) with a names file; returns the newest report's time."""
    done = subprocess.run(tigo_execd_argv("run", "--demo", "--stats-interval", "0", "--names",
                                          names_file(tmp_path)),
                          capture_output=True, timeout=120, check=True)
    lines = done.stdout.splitlines(True)
    for i in range(0, len(lines), 20000):
        influx_db.write(b"".join(lines[i:i + 20000]))
    return max(int(line.rsplit(b" ", 1)[1]) for line in lines)


def ha_env(influx_db, base: str, **extra: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "INFLUX_URL": influx_db.url, "INFLUX_DB": influx_db.db,
            "HA_DISCOVERY_PREFIX": f"{base}/ha", "HA_TOPIC_BASE": f"{base}/tigo",
            "MQTT_TOPIC": f"{base}/tigo/health", **extra}


def conf_command(env: dict[str, str]) -> list[str]:
    """The homeassistant command line of the shipped conf, with env as Telegraf would expand it."""
    [execd] = [p for p in th.load_config(config=CONF, env=env).inputs
               if "homeassistant" in p.options["command"]]
    return list(execd.options["command"])


def run_once(env: dict[str, str], *extra: str) -> list[th.Metric]:
    argv = tigo_execd_argv(*conf_command(env)[1:], "--once", *extra)
    done = subprocess.run(argv, capture_output=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env})
    assert done.returncode == 0, done.stderr
    assert not [l for l in done.stderr.decode().splitlines() if l[:3] not in ("I! ", "D! ")]
    return [th.parse_line(l) for l in done.stdout.decode().splitlines()]


def published(metrics: list[th.Metric], env: dict[str, str]) -> dict[str, bytes]:
    """topic -> payload, through every outputs.mqtt of the shipped conf (the last one wins)."""
    out: dict[str, bytes] = {}
    for plugin in th.load_config(config=CONF, env=env).outputs:
        if plugin.kind == "outputs.mqtt":
            out.update(telegraf_mqtt.messages(metrics, plugin.options))
    return out


class Retained:
    """A subscriber that keeps the newest retained message per topic under a prefix."""

    def __init__(self, port: int, pattern: str) -> None:
        self.got: dict[str, bytes] = {}
        self.history: dict[str, list[bytes]] = {}
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"ha-{os.getpid()}")
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *a: c.subscribe(pattern, qos=1)
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()  # paho's network thread

    def _on_message(self, client, userdata, message) -> None:  # type: ignore[no-untyped-def]
        with self.lock:
            self.got[message.topic] = message.payload
            self.history.setdefault(message.topic, []).append(message.payload)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
