"""`tigo-execd doctor` against real setups: each broken one is reported with its fix.

A pty stands in for the RS-485 adapter (its mode and group are set per test); InfluxDB and
Mosquitto are the real test servers; the Telegraf files are the shipped ones, installed into a
temporary /etc/telegraf; the settings come from an /etc/default/telegraf of the test's own.
"""

from __future__ import annotations

import grp
import json
import os
import shutil
import subprocess

import pytest

from support.paths import ROOT
from support.proc import FAKE_TAPTAP, tigo_execd_argv
from support.servers import free_port

DIALOUT = grp.getgrnam("dialout").gr_gid


@pytest.fixture
def pty_port():
    """A terminal device like /dev/ttyUSB0; only the master end stays open (nobody holds the port)."""
    master, slave = os.openpty()
    path = os.ttyname(slave)
    os.close(slave)
    os.chown(path, 0, DIALOUT)
    os.chmod(path, 0o660)
    yield path
    os.close(master)


@pytest.fixture
def site(tmp_path, pty_port, influxd, influx_db, mosquitto, tigo_execd_bin):
    """A working install: every check passes for user root."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    taptap = bin_dir / "taptap"
    taptap.write_text(f'#!/bin/sh\nexec {" ".join(FAKE_TAPTAP)} "$@"\n')
    execd = bin_dir / "tigo-execd"
    shutil.copy(tigo_execd_bin, execd)  # a copy of its own: some tests break it
    taptap.chmod(0o755)
    etc = tmp_path / "etc"
    (etc / "telegraf.d").mkdir(parents=True)
    shutil.copy(ROOT / "telegraf" / "tigo.conf", etc / "telegraf.d")
    shutil.copy(ROOT / "telegraf" / "tigo-health.conf", etc)
    (etc / "default").write_text(
        f"TIGO_SOURCE={pty_port}\nTIGO_EXECD={execd}\nINFLUX_URL={influxd.url}\n"
        f"INFLUX_DB={influx_db.db}\nMQTT_SERVER=tcp://127.0.0.1:{mosquitto.port}\n")
    (etc / "units").mkdir()
    return {"etc": etc, "taptap": taptap, "port": pty_port}


def doctor(site, *extra: str) -> tuple[int, dict[str, str]]:
    """Run the doctor; exit code and {check name: its line}."""
    etc = site["etc"]
    argv = tigo_execd_argv("doctor", "--env-file", str(etc / "default"),
                           "--config-directory", str(etc / "telegraf.d"),
                           "--health-config", str(etc / "tigo-health.conf"),
                           "--unit-dir", str(etc / "units"), "--taptap", str(site["taptap"]),
                           "--user", "root", "--timeout", "2", *extra)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.stderr == "", result.stderr
    lines = result.stdout.splitlines()
    checks = {line.split(": ", 1)[0].split(None, 1)[1]: line for line in lines}
    assert len(checks) == len(lines)
    return result.returncode, checks


def test_working_setup_passes_every_check(site):
    rc, checks = doctor(site)
    assert rc == 0, "\n".join(checks.values())
    assert list(checks) == ["taptap", "source", "influxdb", "influxdb auth", "influxdb database",
                            "mqtt", "tigo.conf", "tigo-health.conf", "groups"]
    assert all(line.startswith("ok") for line in checks.values())
    assert "accepts an MQTT connection" in checks["mqtt"]
    assert site["port"] in checks["source"]


def test_missing_taptap(site):
    rc, checks = doctor(site, "--taptap", "taptap-not-installed")
    assert rc == 1
    assert checks["taptap"].startswith("FAIL")
    assert "fix: install it for all users" in checks["taptap"] and "cargo install taptap" in checks["taptap"]


def test_missing_tigo_execd_program_in_conf(site):
    default = site["etc"] / "default"
    default.write_text(default.read_text().replace("TIGO_EXECD=", "TIGO_EXECD=/nonexistent/"))
    rc, checks = doctor(site)
    assert rc == 1
    for conf in ("tigo.conf", "tigo-health.conf"):
        assert checks[conf].startswith("FAIL") and "Telegraf will not start" in checks[conf]
        assert "fix: edit" in checks[conf] and "TIGO_EXECD" in checks[conf]


def test_unknown_option_in_conf(site):
    conf = site["etc"] / "telegraf.d" / "tigo.conf"
    conf.write_text(conf.read_text().replace('signal = "none"', 'signal = "none"\n  restart = "5s"'))
    rc, checks = doctor(site)
    assert rc == 1 and checks["tigo.conf"].startswith("FAIL")
    assert "inputs.execd: unknown option(s) restart" in checks["tigo.conf"]


def test_no_tigo_conf_installed(site):
    (site["etc"] / "telegraf.d" / "tigo.conf").unlink()
    rc, checks = doctor(site)
    assert rc == 1 and "fix: sudo cp telegraf/tigo.conf" in checks["telegraf.d"]


def test_port_missing(site):
    rc, checks = doctor(site, "--source", "/dev/serial/by-id/usb-FTDI_nothing-if00-port0")
    assert rc == 1
    assert checks["source"].startswith("FAIL") and "does not exist" in checks["source"]
    assert "fix: plug in the RS-485 adapter" in checks["source"]


def test_port_unreadable_for_the_service_user(site):
    os.chmod(site["port"], 0o000)
    rc, checks = doctor(site, "--user", "nobody")
    assert rc == 1
    assert "cannot be opened by user nobody" in checks["source"]
    assert "fix: sudo usermod -aG dialout nobody" in checks["source"]


def test_missing_group_and_the_drop_in_that_fixes_it(site):
    rc, checks = doctor(site, "--user", "nobody")
    assert rc == 1
    assert checks["groups"].startswith("FAIL") and "nobody is not in group dialout" in checks["groups"]
    assert "fix: sudo usermod -aG dialout nobody" in checks["groups"]
    assert checks["source"].startswith("FAIL")  # the same cause, seen from the port
    shutil.copy(ROOT / "telegraf" / "telegraf-dialout.conf", site["etc"] / "units" / "tigo.conf")
    rc, checks = doctor(site, "--user", "nobody")
    assert checks["groups"].startswith("ok") and "dialout" in checks["groups"]
    assert checks["source"].startswith("ok")


def test_port_busy(site):
    fd = os.open(site["port"], os.O_RDWR | os.O_NOCTTY)  # like a forgotten `taptap observe`
    try:
        rc, checks = doctor(site)
    finally:
        os.close(fd)
    assert rc == 1
    assert "is busy: open in python" in checks["source"] and f"(pid {os.getpid()})" in checks["source"]
    assert "fix: stop it (sudo fuser -v" in checks["source"]


def test_converter_unreachable(site, mosquitto):
    rc, checks = doctor(site, "--source", f"tcp://127.0.0.1:{free_port()}")
    assert rc == 1
    assert "not reachable" in checks["source"] and "TCP server mode" in checks["source"]
    assert checks["groups"].startswith("skip")  # no serial port, no group needed
    rc, checks = doctor(site, "--source", f"tcp://127.0.0.1:{mosquitto.port}")  # something listens
    assert rc == 0 and checks["source"].startswith("ok  ") and "accepts connections" in checks["source"]


def test_source_not_understood(site):
    rc, checks = doctor(site, "--source", "ttyUSB0")
    assert rc == 1 and "'ttyUSB0' is not a source" in checks["source"]
    assert "fix: set TIGO_SOURCE" in checks["source"]


def test_wrong_database(site):
    rc, checks = doctor(site, "--influx-db", "no_such_db")
    assert rc == 1
    assert "'no_such_db' does not exist" in checks["influxdb database"]
    assert "fix: influx -execute 'CREATE DATABASE no_such_db'" in checks["influxdb database"]


def test_influxdb_unreachable_and_wrong_password(site, influxd_auth):
    rc, checks = doctor(site, "--influx-url", f"http://127.0.0.1:{free_port()}")
    assert rc == 1 and "unreachable" in checks["influxdb"]
    assert "fix: start it" in checks["influxdb"]
    default = site["etc"] / "default"
    default.write_text(default.read_text().replace(
        "INFLUX_URL=", f"INFLUX_URL={influxd_auth.url}\n#") + "INFLUX_USER=admin\nINFLUX_PASS=wrong\n")
    rc, checks = doctor(site)
    assert rc == 1 and checks["influxdb auth"].startswith("FAIL")
    assert "fix: set INFLUX_USER and INFLUX_PASS" in checks["influxdb auth"]


def test_mqtt_broker_down(site):
    rc, checks = doctor(site, "--mqtt-server", f"tcp://127.0.0.1:{free_port()}")
    assert rc == 1 and checks["mqtt"].startswith("FAIL")
    assert "fix: start the broker" in checks["mqtt"]


def test_shipped_option_list_is_the_tests_copy():
    package = json.loads((ROOT / "tigo_execd" / "data" / "telegraf-plugin-options.json").read_text())
    tests = json.loads((ROOT / "tests" / "data" / "telegraf-plugin-options.json").read_text())
    assert package == tests
