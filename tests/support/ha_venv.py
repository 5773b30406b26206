"""Home Assistant's own code as the judge of our discovery payloads and value templates.

The `homeassistant` package (2024.3.3, the newest that runs on Python 3.11) pins versions that
clash with ours (astral 2.2, orjson 3.9.15, paho-mqtt 1.6.1, aiohttp), so it lives in a virtual
environment of its own, made once per machine under ~/.cache/tigo-execd (TIGO_HA_VENV overrides)
and keyed by version; making it takes about two minutes. The tests talk to it through one
subprocess per call: JSON in on stdin, JSON out. `CORE` starts a real Home Assistant core in
that environment (a few seconds) with the MQTT integration as a config entry.

In that environment, `CHECKER` expands the abbreviated keys as Home Assistant's MQTT discovery does
(homeassistant/components/mqtt/discovery.py, ABBREVIATIONS and DEVICE_ABBREVIATIONS), validates each
payload with the platform's DISCOVERY_SCHEMA (a key the schema drops as unknown is an error too:
the schemas remove extra keys silently), and renders value templates with Home Assistant's
template engine (homeassistant.helpers.template.Template, render_with_possible_json_value, the call
the MQTT entities make on each message).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

VERSION = "2024.3.3"
# The mqtt integration imports paho 1.6; the rest (its versions from Home Assistant's
# package_constraints.txt) is what the core needs to load its frontend, without which it starts in
# recovery mode and sets up no config entry; the cloud integration fails with josepy 2.
PINS = [f"homeassistant=={VERSION}", "paho-mqtt==1.6.1", "janus==1.0.0",
        "home-assistant-frontend==20240307.0", "Pillow==10.2.0", "psutil-home-assistant==0.0.1",
        "josepy<1.14", "SQLAlchemy==2.0.27", "fnv-hash-fast==0.5.0", "numpy==1.26.0",
        "securetar==2024.2.1"]
CHECKER = r"""
import asyncio, json, sys, tempfile
import importlib
from homeassistant.components.mqtt.abbreviations import ABBREVIATIONS, DEVICE_ABBREVIATIONS
from homeassistant.core import HomeAssistant
from homeassistant.helpers.template import Template

def expand(payload):
    out = {ABBREVIATIONS.get(k, k): v for k, v in payload.items()}
    if isinstance(out.get("device"), dict):
        out["device"] = {DEVICE_ABBREVIATIONS.get(k, k): v for k, v in out["device"].items()}
    return out

async def main(job):
    errors = []
    for item in job.get("configs", []):
        module = importlib.import_module("homeassistant.components.mqtt." + item["component"])
        payload = expand(item["payload"])
        try:
            valid = module.DISCOVERY_SCHEMA(payload)
        except Exception as exc:
            errors.append(f"{item['topic']}: {exc}")
            continue
        # The schemas drop unknown keys silently (extra=REMOVE_EXTRA): a misspelt key is an error.
        dropped = sorted(set(payload) - set(valid))
        device, valid_device = payload.get("device", {}), valid.get("device", {})
        dropped += sorted(f"device.{k}" for k in set(device) - set(valid_device))
        if dropped:
            errors.append(f"{item['topic']}: keys Home Assistant does not know: {dropped}")
    hass = HomeAssistant(tempfile.mkdtemp())
    rendered = [Template(r["template"], hass).async_render_with_possible_json_value(r["payload"], "<no json>")
                for r in job.get("renders", [])]
    return {"errors": errors, "rendered": [str(r) for r in rendered]}

print(json.dumps(asyncio.run(main(json.load(sys.stdin)))))
"""

CORE = r"""
import asyncio, json, os, sys, time
import aiohttp
from homeassistant import bootstrap, runner

async def main(cfg, mqtt_port, http_port, prefix, wanted, timeout):
    os.makedirs(os.path.join(cfg, ".storage"))
    with open(os.path.join(cfg, "configuration.yaml"), "w") as f:
        f.write("homeassistant:\n  name: test\n  time_zone: UTC\n  latitude: 0\n  longitude: 0\n"
                "  elevation: 0\n  unit_system: metric\n"
                f"http:\n  server_host: 127.0.0.1\n  server_port: {http_port}\n")
    entry = {"entry_id": "tigomqtt", "version": 1, "minor_version": 1, "domain": "mqtt",
             "title": "mqtt", "source": "user", "unique_id": None, "disabled_by": None,
             "options": {}, "pref_disable_new_entities": False, "pref_disable_polling": False,
             "data": {"broker": "127.0.0.1", "port": mqtt_port, "discovery": True,
                      "discovery_prefix": prefix}}
    with open(os.path.join(cfg, ".storage", "core.config_entries"), "w") as f:
        json.dump({"version": 1, "minor_version": 1, "key": "core.config_entries",
                   "data": {"entries": [entry]}}, f)
    hass = await bootstrap.async_setup_hass(runner.RuntimeConfig(config_dir=cfg, skip_pip=True))
    await hass.async_start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(
            hass.states.get(e) is not None and hass.states.get(e).state not in ("unknown", "unavailable")
            for e in wanted):  # availability arrives a moment after the entity is created
        await asyncio.sleep(0.5)
    out = {e: None for e in wanted}
    for e in wanted:
        state = hass.states.get(e)
        if state is not None:
            out[e] = {"state": state.state, "attributes": dict(state.attributes)}
            if e.startswith("image.") and "entity_picture" in state.attributes:
                # what the frontend gets: the picture through Home Assistant's own HTTP server
                async with aiohttp.ClientSession() as session, session.get(
                        f"http://127.0.0.1:{http_port}{state.attributes['entity_picture']}") as r:
                    out[e]["picture"] = {"status": r.status, "content_type": r.content_type,
                                         "body": (await r.read()).decode("utf-8", "replace")}
    print(json.dumps(out, default=str))
    await hass.async_stop()

a = sys.argv[1:]
asyncio.run(main(a[0], int(a[1]), int(a[2]), a[3], a[4].split(","), float(a[5])))
"""


TABLES = r"""
import json
from homeassistant.components.binary_sensor import BinarySensorDeviceClass
from homeassistant.components.sensor import SensorDeviceClass
from homeassistant.components.sensor.const import DEVICE_CLASS_STATE_CLASSES, DEVICE_CLASS_UNITS

print(json.dumps({
    "sensor": [c.value for c in SensorDeviceClass],
    "binary_sensor": [c.value for c in BinarySensorDeviceClass],
    "units": {c.value: [None if u is None else str(u) for u in units]
              for c, units in DEVICE_CLASS_UNITS.items()},
    "state_classes": {c.value: [s.value for s in states] for c, states in DEVICE_CLASS_STATE_CLASSES.items()},
}))
"""


def venv_dir() -> Path:
    if os.environ.get("TIGO_HA_VENV"):
        return Path(os.environ["TIGO_HA_VENV"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    pins = hashlib.sha256(" ".join(PINS).encode()).hexdigest()[:8]
    return cache / "tigo-execd" / f"ha-{VERSION}-py{sys.version_info[0]}.{sys.version_info[1]}-{pins}"


def ensure() -> Path:
    """The venv's python, made when missing (under a lock, so parallel runs make it once)."""
    root = venv_dir()
    python = root / "bin" / "python"
    done = root / ".installed"
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(root)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "-q", *PINS], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=1200)
            done.write_text(VERSION + "\n")
    return python


def check(configs: list[dict[str, Any]], renders: list[dict[str, str]]) -> dict[str, Any]:
    """configs: {topic, component, payload}; renders: {template, payload}. -> {errors, rendered}."""
    done = subprocess.run([str(ensure()), "-c", CHECKER], input=json.dumps(
        {"configs": configs, "renders": renders}), capture_output=True, text=True, timeout=300)
    if done.returncode:
        raise RuntimeError(f"Home Assistant checker failed: {done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def sensor_tables() -> dict[str, Any]:
    """Home Assistant's own tables (homeassistant.components.sensor.const): the device classes of
    sensors and binary sensors, the units each sensor device class allows (DEVICE_CLASS_UNITS) and
    its state classes (DEVICE_CLASS_STATE_CLASSES)."""
    done = subprocess.run([str(ensure()), "-c", TABLES], capture_output=True, text=True, timeout=300)
    if done.returncode:
        raise RuntimeError(f"Home Assistant's tables could not be read: {done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def core_states(config_dir: Path, mqtt_port: int, http_port: int, discovery_prefix: str,
                entity_ids: list[str], timeout: float = 60.0) -> dict[str, Any]:
    """Start a real Home Assistant core on the broker (MQTT as a config entry, its HTTP server on
    loopback), wait until the entities have states, stop it; entity id -> {state, attributes}, and
    for an image entity `picture`: {status, content_type, body} as its entity_picture URL serves it."""
    done = subprocess.run([str(ensure()), "-c", CORE, str(config_dir), str(mqtt_port), str(http_port),
                           discovery_prefix, ",".join(entity_ids), str(timeout)],
                          capture_output=True, text=True, timeout=timeout + 120)
    if done.returncode:
        raise RuntimeError(f"Home Assistant core failed: {done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
