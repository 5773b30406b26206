"""Home Assistant's own code as the judge of our discovery payloads and value templates.

The `homeassistant` package (2024.3.3, the newest that runs on Python 3.11) pins versions that
clash with ours (astral 2.2, orjson 3.9.15, paho-mqtt 1.6.1, aiohttp), so it lives in a virtual
environment of its own, made once per machine under ~/.cache/tigo-execd (TIGO_HA_VENV overrides)
and keyed by version; making it takes about two minutes. The tests talk to it through one
subprocess per call: JSON in on stdin, JSON out.

In that environment, `CHECKER` expands the abbreviated keys as Home Assistant's MQTT discovery does
(homeassistant/components/mqtt/discovery.py, ABBREVIATIONS and DEVICE_ABBREVIATIONS), validates each
payload with the platform's DISCOVERY_SCHEMA (a key the schema drops as unknown is an error too:
the schemas remove extra keys silently), and renders value templates with Home Assistant's
template engine (homeassistant.helpers.template.Template, render_with_possible_json_value, the call
the MQTT entities make on each message).
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

VERSION = "2024.3.3"
PINS = [f"homeassistant=={VERSION}", "paho-mqtt==1.6.1"]  # the mqtt integration imports paho 1.6
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


def venv_dir() -> Path:
    if os.environ.get("TIGO_HA_VENV"):
        return Path(os.environ["TIGO_HA_VENV"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "tigo-execd" / f"ha-{VERSION}-py{sys.version_info[0]}.{sys.version_info[1]}"


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
