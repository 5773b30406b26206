"""The shipped telegraf/ files, run the way Telegraf runs them (tests/support/telegraf_harness.py).

The confs are used unchanged, copied where the install guide puts them; only the environment
(what /etc/default/telegraf would hold) differs: TIGO_EXECD points at this checkout, TIGO_SOURCE
at the fake taptap, INFLUX_* at the test InfluxDB.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from support import telegraf_harness as th
from support.paths import ROOT
from support.proc import Child, descendants, pid_alive
from support.service_env import telegraf_env
from support.wait import wait_until_async
from tigo_execd.setup.telegraf_config import plugins, unknown_options

TELEGRAF = ROOT / "telegraf"
TELEGRAF_CONFS = sorted(TELEGRAF.glob("*.conf"))  # Telegraf's only: systemd's files are in systemd/
_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


@pytest.fixture
def etc(tmp_path) -> Path:
    """/etc/telegraf as the install guide leaves it: a main telegraf.conf and the drop-in."""
    (tmp_path / "telegraf.conf").write_text(
        '[agent]\n  hostname = "pi"\n  flush_interval = "500ms"\n')
    (tmp_path / "telegraf.d").mkdir()
    shutil.copy(TELEGRAF / "tigo.conf", tmp_path / "telegraf.d" / "tigo.conf")
    return tmp_path


def rows(client, q: str) -> list[dict]:
    return [dict(zip(s["columns"], v)) for s in client.query(q) for v in s["values"]]


# ---------------------------------------------------------------- static checks

@pytest.mark.parametrize("conf", TELEGRAF_CONFS, ids=lambda p: p.name)
def test_shipped_conf_uses_only_known_options(conf, tmp_path):
    (tmp_path / conf.name).write_text(conf.read_text())
    config = th.load_config(config_directory=tmp_path, env={})  # raises on any unknown option
    assert config.inputs


@pytest.mark.parametrize("conf", TELEGRAF_CONFS, ids=lambda p: p.name)
def test_every_variable_sits_in_a_string_and_is_documented(conf, tmp_path):
    text = conf.read_text()
    names = set(_REF.findall(text))
    assert names, "the confs take their settings from the environment"
    # Each variable set to a value that would break TOML outside a string: loading still works,
    # and no reference is left over, so every one of them was inside a string value.
    env = {name: f'"{name} x]' for name in names}
    (tmp_path / conf.name).write_text(text)
    config = th.load_config(config_directory=tmp_path, env=env)
    values = repr([p.options for p in config.inputs + config.outputs])
    assert "${" not in values
    documented = set(re.findall(r"^([A-Z_]+)=", (TELEGRAF / "default.example").read_text(), re.M))
    assert names <= documented, f"not in default.example: {sorted(names - documented)}"


@pytest.mark.parametrize("conf", TELEGRAF_CONFS, ids=lambda p: p.name)
def test_every_command_resolves(conf, tmp_path, tigo_execd_bin):
    (tmp_path / conf.name).write_text(conf.read_text())
    defaults = th.load_config(config_directory=tmp_path, env={})
    assert all(p.options["command"][0] == "/opt/tigo-execd/bin/tigo-execd" for p in defaults.inputs)
    config = th.load_config(config_directory=tmp_path,
                            env={"TIGO_EXECD": str(tigo_execd_bin), "PATH": os.environ["PATH"]})
    for plugin in config.inputs:
        argv = plugin.options["command"]
        assert os.access(argv[0], os.X_OK)
        # The arguments are ones tigo-execd accepts: --help with them parses (exit 0), a typo would not.
        sub = argv[1]
        result = subprocess.run([argv[0], sub, "--help"], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        for option in (a for a in argv[2:] if a.startswith("--")):
            assert option in result.stdout, f"{sub} has no option {option}"


# ---------------------------------------------------------------- end to end

def test_e2e_fake_taptap_to_influxdb(etc, tigo_execd_bin, influxd, influx_db):
    env = telegraf_env(tigo_execd_bin, influxd.url, influx_db.db, etc)
    harness = th.Harness(th.load_config(etc / "telegraf.conf", etc / "telegraf.d", env), th.Log(None))

    async def scenario():
        await harness.start()
        await wait_until_async(lambda: harness.outputs[0].written >= 10, 20,
                               lambda: f"10 reports written; Telegraf's log: {harness.log.records}")
        await harness.stop()

    asyncio.run(scenario())
    reports = rows(influx_db, "SELECT * FROM tigo_power_report")
    assert len(reports) == 10
    first = next(r for r in reports if r["node_id"] == "116" and r["time"] == 1724509001686961000)
    assert first["power_w"] == pytest.approx(212.364) and first["rssi"] == 132
    assert first["voltage_in_v"] == 30.6 and first["current_in_a"] == 6.94
    assert (first["src"], first["gateway_id"]) == ("tigo", "4609")
    assert "host" not in first  # the old schema to the letter: the output drops Telegraf's host tag
    node2 = next(r for r in reports if r["node_id"] == "2")
    assert (node2["node_addr"], node2["barcode"]) == ("04c05b4000a2346f", "4-A2346FZ")
    assert next(r for r in reports if r["node_id"] == "3")["current_out_a"] is None
    # tigo_ingest's last line is written on shutdown and flushed by Telegraf's last flush.
    stats = rows(influx_db, "SELECT * FROM tigo_ingest")
    assert stats and stats[-1]["reports"] == 10 and stats[-1]["source"] == "taptap-cmd"
    assert not harness.log.find("E", contains="parse error")


def test_harness_test_mode_prints_first_reports_within_seconds(etc, tigo_execd_bin, influxd):
    env = telegraf_env(tigo_execd_bin, influxd.url, "unused", etc)
    start = time.monotonic()
    child = Child([sys.executable, th.__file__, "--config", str(etc / "telegraf.conf"),
                   "--config-directory", str(etc / "telegraf.d"), "--input-filter", "execd",
                   "--test", "--test-wait", "3"], env={**env, "PYTHONPATH": str(ROOT / "tests")})
    child.wait_stdout(b"> tigo_power_report,", timeout=10)
    first = time.monotonic() - start
    assert child.finish(timeout=20) == 0
    lines = child.stdout_lines()
    assert first < 5.0, first
    first_report = th.parse_line(lines[0][2:])
    assert lines[0].startswith("> tigo_power_report,") and first_report.ts_ns == 1724509001686961000
    assert {k: first_report.tags[k] for k in ("gateway_id", "host", "node_id", "src")} == \
        {"gateway_id": "4609", "host": "pi", "node_id": "116", "src": "tigo"}
    assert "current_in_a=6.94,current_out_a=7.0319,duty_cycle=1," in lines[0]  # sorted, Go floats
    assert sum(line.startswith("> tigo_power_report,") for line in lines) == 10
    assert any(line.startswith("> tigo_ingest,host=pi,source=taptap-cmd ") for line in lines)


def test_stopping_leaves_no_process_behind(etc, tigo_execd_bin, influxd, influx_db):
    env = telegraf_env(tigo_execd_bin, influxd.url, influx_db.db, etc)
    child = Child([sys.executable, th.__file__, "--config", str(etc / "telegraf.conf"),
                   "--config-directory", str(etc / "telegraf.d")],
                  env={**env, "PYTHONPATH": str(ROOT / "tests")})
    try:
        child.wait_for(lambda: rows(influx_db, "SELECT count(power_w) FROM tigo_power_report"),
                       timeout=20, what="reports in InfluxDB")
        below = descendants(child.proc.pid)
        assert len(below) >= 2  # tigo-execd and the (fake) taptap it runs
        started = time.monotonic()
        child.proc.send_signal(signal.SIGTERM)  # systemctl stop telegraf
        assert child.finish(timeout=15) == 0
        assert time.monotonic() - started < 4.0  # tigo-execd left on stdin EOF: no SIGTERM needed
        assert [pid for pid in below if pid_alive(pid)] == []
        assert b"exited" not in child.err  # shut down, not crashed
    finally:
        child.kill()


def test_health_instance_publishes_retained_flat_json(tmp_path, tigo_execd_bin, influxd, influx_db,
                                                      mosquitto):
    import paho.mqtt.subscribe as subscribe

    now = time.time_ns()
    influx_db.write(b"".join(b"tigo_power_report,gateway_id=4609,node_id=%d,src=tigo power_w=200 %d\n"
                             % (node, now - 60_000_000_000) for node in (1, 2)))
    conf = tmp_path / "tigo-health.conf"
    shutil.copy(TELEGRAF / "tigo-health.conf", conf)  # its own instance: --config only
    topic = f"tigo/health-{os.getpid()}"
    env = telegraf_env(tigo_execd_bin, influxd.url, influx_db.db, tmp_path,
                       MQTT_SERVER=f"tcp://127.0.0.1:{mosquitto.port}", MQTT_TOPIC=topic)
    harness = th.Harness(th.load_config(conf, env=env), th.Log(None))

    async def once():  # `telegraf --once`: one gather, then stop, flushing to the outputs
        await harness.start(gather_loop=False)
        for execd in harness.inputs:
            execd.gather()
        await wait_until_async(lambda: any(m.name == "tigo_health" for m in harness.collected), 20,
                               lambda: f"a tigo_health metric; Telegraf's log: {harness.log.records}")
        await harness.stop()

    asyncio.run(once())
    msg = subscribe.simple(topic, qos=1, hostname="127.0.0.1", port=mosquitto.port, retained=True)
    assert msg.retain and msg.qos == 1
    doc = json.loads(msg.payload)
    assert (doc["status"], doc["code"], doc["reason"]) == ("OK", 0, "healthy")
    assert doc["nodes_reporting"] == 2 and 0.9 <= doc["lag_min"] <= 2.0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", doc["ts_utc"])
    assert not any(isinstance(v, (dict, list)) for v in doc.values())  # flat
    health = rows(influx_db, "SELECT * FROM tigo_health")
    assert health and health[0]["status"] == "OK"  # its history goes to InfluxDB as well


DOCS = [ROOT / "README.md", TELEGRAF / "README.md", *sorted(ROOT.glob("docs/**/*.md"))]


@pytest.mark.parametrize("doc", [p for p in DOCS if "```toml" in p.read_text()],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_toml_shown_in_the_docs_is_accepted_by_telegraf(doc):
    """Every ```toml block a reader may paste: valid TOML, known option names, ${VAR} in strings."""
    known = th.known_options()
    blocks = re.findall(r"```toml\n(.*?)```", doc.read_text(), re.S)
    assert blocks
    for block in blocks:
        parsed = tomllib.loads(block)
        for kind, table in plugins(parsed):
            assert unknown_options(kind, table, known) == [], block
        assert set(parsed) <= {"agent", "global_tags", "inputs", "outputs"}


def test_readme_configuration_is_the_shipped_conf():
    first_block = re.search(r"```toml\n(.*?)```", (TELEGRAF / "README.md").read_text(), re.S)[1]
    assert tomllib.loads(first_block) == tomllib.loads((TELEGRAF / "tigo.conf").read_text())
