"""`tigo-execd doctor` against real setups: each broken one is reported with its fix.

A pty stands in for the RS-485 adapter (its mode and group are set per test); InfluxDB and
Mosquitto are the real test servers; the Telegraf files are the shipped ones, installed into a
temporary /etc/telegraf; the settings come from an /etc/default/telegraf of the test's own.
"""

from __future__ import annotations

import grp
import os
import shutil
import subprocess

import pytest

from support.paths import ROOT
from support.proc import FAKE_TAPTAP, tigo_execd_argv
from support.servers import free_port

DIALOUT = grp.getgrnam("dialout").gr_gid
# The shipped systemd drop-in, as installed into /etc/systemd/system/telegraf.service.d/.
DROP_IN = ROOT / "systemd" / "telegraf.service.d" / "tigo-execd.conf"
# The parts of a stock /etc/telegraf/telegraf.conf (Telegraf's Debian package) that matter here:
# one [[outputs.influxdb]] with every option commented out, so it takes every metric.
STOCK_TELEGRAF_CONF = """\
# Telegraf Configuration
[global_tags]

[agent]
  interval = "10s"
  round_interval = true
  flush_interval = "10s"
  hostname = ""
  omit_hostname = false

###############################################################################
#                            OUTPUT PLUGINS                                   #
###############################################################################

# Configuration for sending metrics to InfluxDB
[[outputs.influxdb]]
  ## The full HTTP or UDP URL for your InfluxDB instance.
  # urls = ["http://127.0.0.1:8086"]
  ## The target database for metrics; will be created as needed.
  # database = "telegraf"

# Read metrics about cpu usage
[[inputs.cpu]]
  percpu = true
  totalcpu = true
  collect_cpu_time = false

# Read metrics about memory usage
[[inputs.mem]]
  # no configuration
"""


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
    (etc / "telegraf.conf").write_text(STOCK_TELEGRAF_CONF.replace(
        "[[outputs.influxdb]]\n", '[[outputs.influxdb]]\n  namedrop = ["tigo_*"]\n'))
    return {"etc": etc, "taptap": taptap, "port": pty_port}


def doctor(site, *extra: str) -> tuple[int, dict[str, str]]:
    """Run the doctor; exit code and {check name: its line}."""
    etc = site["etc"]
    argv = tigo_execd_argv("doctor", "--env-file", str(etc / "default"),
                           "--config", str(etc / "telegraf.conf"),
                           "--config-directory", str(etc / "telegraf.d"),
                           "--health-config", str(etc / "tigo-health.conf"),
                           "--unit-dir", str(etc / "units"), "--taptap", str(site["taptap"]),
                           "--user", "root", "--timeout", "2", *extra)
    result = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60,
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
                            "mqtt", "tigo.conf", "tigo-health.conf", "outputs", "groups"]
    assert all(line.startswith("ok") for line in checks.values())
    assert "accepts an MQTT connection" in checks["mqtt"]
    assert site["port"] in checks["source"]


def test_missing_taptap(site):
    rc, checks = doctor(site, "--taptap", "taptap-not-installed")
    assert rc == 1
    assert checks["taptap"].startswith("FAIL")
    assert "fix: install it for all users as docs/install.md step 4 does" in checks["taptap"]
    assert "cargo install --git https://github.com/willglynn/taptap --locked" in checks["taptap"]


def test_missing_tigo_execd_program_in_conf(site):
    default = site["etc"] / "default"
    default.write_text(default.read_text().replace("TIGO_EXECD=", "TIGO_EXECD=/nonexistent/"))
    rc, checks = doctor(site)
    assert rc == 1
    for conf in ("tigo.conf", "tigo-health.conf"):
        assert checks[conf].startswith("FAIL") and "Telegraf will not start" in checks[conf]
        assert "fix: edit" in checks[conf] and "TIGO_EXECD" in checks[conf]


STATE = "/var/lib/tigo-execd/taptap-state.json"  # the service's StateDirectory= (shipped drop-in)


@pytest.mark.parametrize(("build", "named", "identities"), [
    ("upstream", "taptap 0.1.1; upstream (willglynn/taptap)",
     "it reports identities in its power reports once it has seen the CCA read its node table"),
    ("fork-0.2.0", "taptap 0.2.0; the fork (litinoveweedle/taptap) 0.2.0",
     f"it reports identities in infrastructure reports (tigo-execd run passes `--persistent-file "
     f"{STATE}`)"),
    ("fork", "taptap 0.2.6; the fork (litinoveweedle/taptap) 0.2.5 or later",
     f"it reports identities in infrastructure reports (tigo-execd run passes `--state-file "
     f"{STATE}`)"),
])
def test_taptap_build_and_its_identities_are_named(site, monkeypatch, build, named, identities):
    """Asked of the program (`taptap --version`, `taptap observe --help`), for the bridge source."""
    monkeypatch.setenv("FAKE_TAPTAP_BUILD", build)
    rc, checks = doctor(site)
    assert rc == 0
    assert checks["taptap"] == f"ok    taptap: {site['taptap']} runs ({named}); {identities}"


def test_a_taptap_cmd_without_the_forks_state_file_is_told_what_to_add(site, monkeypatch):
    monkeypatch.setenv("FAKE_TAPTAP_BUILD", "fork")
    command = f"{site['taptap']} observe --serial {site['port']}"
    rc, checks = doctor(site, "--source", f"cmd:{command}")
    assert rc == 1
    assert checks["taptap"] == (
        f"FAIL  taptap: {site['taptap']} runs (taptap 0.2.6; the fork (litinoveweedle/taptap) 0.2.5 "
        f"or later); TIGO_SOURCE's command passes no state file: this taptap prints no "
        f"infrastructure report without --state-file, so no barcode ever reaches the reports -- "
        f"fix: add `--state-file {STATE}` to the taptap command in TIGO_SOURCE in "
        f"/etc/default/telegraf")
    rc, checks = doctor(site, "--source", f"cmd:{command} --state-file {STATE}")
    assert rc == 0
    assert checks["taptap"].endswith("it reports identities in infrastructure reports (its command "
                                     "passes a state file)")


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
    for line in (checks["groups"], checks["source"]):  # the same cause, seen from the port
        assert line.startswith("FAIL") and "(or install systemd/telegraf.service.d/tigo-execd.conf " \
            "as /etc/systemd/system/telegraf.service.d/tigo-execd.conf" in line
        assert "telegraf-dialout" not in line
    shutil.copy(DROP_IN, site["etc"] / "units" / "tigo-execd.conf")
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


@pytest.mark.parametrize("option", ["--db", "--influx-db"])  # --influx-db: its name before 0.2.0
def test_wrong_database(site, option):
    rc, checks = doctor(site, option, "no_such_db")
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


# ---------------------------------------------------------------- other outputs of the main Telegraf

def test_stock_telegraf_conf_output_gets_the_tigo_metrics(site):
    """The stock [[outputs.influxdb]] takes every metric: ours too, into its `telegraf` database."""
    conf = site["etc"] / "telegraf.conf"
    conf.write_text(STOCK_TELEGRAF_CONF)
    line = STOCK_TELEGRAF_CONF.splitlines().index("[[outputs.influxdb]]") + 1
    rc, checks = doctor(site)
    assert rc == 1 and checks["outputs"].startswith("FAIL"), checks["outputs"]
    assert (f"tigo_power_report, tigo_ingest also go to [[outputs.influxdb]] #1 (line {line}) of "
            f"{conf}, database 'telegraf'") in checks["outputs"]
    assert (f'fix: add namedrop = ["tigo_*"] to [[outputs.influxdb]] #1 (line {line}) of {conf}'
            in checks["outputs"])
    assert all(line.startswith("ok") for name, line in checks.items() if name != "outputs")
    conf.write_text(STOCK_TELEGRAF_CONF.replace(  # the fix, as the line says
        "[[outputs.influxdb]]\n", '[[outputs.influxdb]]\n  namedrop = ["tigo_*"]\n'))
    rc, checks = doctor(site)
    assert rc == 0 and checks["outputs"].startswith("ok")


@pytest.mark.parametrize(("filters", "received"), [
    ('namedrop = ["tigo_power_report"]', "tigo_ingest"),  # only part of ours dropped
    ('namedrop = ["cpu", "mem*"]', "tigo_power_report, tigo_ingest"),  # others' names dropped
    ('namepass = []', "tigo_power_report, tigo_ingest"),  # an empty list filters nothing
    ('namedrop = ["tigo_power_report", "tigo_ingest"]', None),
    ('namedrop = ["cpu", "tigo?*"]', None),
    ('namedrop = ["[st]igo_*"]', None),
    ('namepass = ["cpu", "mem"]', None),  # the output picks its own metrics
    ('namepass = ["tigo_*"]', None),  # asks for ours: wanted, not a leak
    ('[outputs.influxdb.tagpass]\n  cpu = ["cpu-total"]', None),  # routed by a tag ours lack
])
def test_filters_of_the_stock_output(site, filters, received):
    conf = site["etc"] / "telegraf.conf"
    conf.write_text(STOCK_TELEGRAF_CONF.replace(
        "  # database = \"telegraf\"\n", f'  database = "metrics"\n  {filters}\n'))
    rc, checks = doctor(site)
    if received is None:
        assert rc == 0 and checks["outputs"].startswith("ok"), checks["outputs"]
    else:
        assert rc == 1 and f": {received} also go to [[outputs.influxdb]] #1" in checks["outputs"]
        assert "database 'metrics'" in checks["outputs"]
        fix = "add \"tigo_*\" to the namedrop list" if "namedrop" in filters else "add namedrop ="
        assert f"fix: {fix}" in checks["outputs"], checks["outputs"]


def test_every_unfiltered_output_in_every_file_is_named(site):
    """Outputs of any kind, in telegraf.conf and in telegraf.d, each with its file and position;
    our own tigo.conf output and the separate health instance's outputs are not among them."""
    conf = site["etc"] / "telegraf.conf"
    conf.write_text(STOCK_TELEGRAF_CONF.replace('[[outputs.influxdb]]\n', '[[outputs.influxdb]]\n'
                    '  namedrop = ["tigo_*"]\n\n[[outputs.influxdb]]\n  database = "second"\n'))
    other = site["etc"] / "telegraf.d" / "cloud.conf"
    other.write_text('[[outputs.file]]\n  files = ["stdout"]\n  namedrop = ["cpu"]\n\n'
                     '[[outputs.influxdb_v2]]\n  urls = ["http://127.0.0.1:8086"]\n'
                     '  bucket = "b"\n  organization = "o"\n\n[[outputs.discard]]\n')
    rc, checks = doctor(site)
    assert rc == 1
    line = checks["outputs"]
    second = conf.read_text().splitlines().index('  database = "second"')  # its header's line
    assert f"[[outputs.influxdb]] #2 (line {second}) of {conf}, database 'second'" in line
    assert "[[outputs.influxdb]] #1" not in line  # filtered
    assert f"[[outputs.file]] #1 (line 1) of {other}" in line
    assert f"[[outputs.influxdb_v2]] #1 (line 5) of {other}" in line
    assert "discard" not in line and "tigo.conf" not in line and "tigo-health" not in line
    assert f'add "tigo_*" to the namedrop list of [[outputs.file]] #1 (line 1) of {other}' in line
    assert (f'add namedrop = ["tigo_*"] to [[outputs.influxdb_v2]] #1 (line 5) of {other}'
            in line)


def test_no_telegraf_conf(site):
    (site["etc"] / "telegraf.conf").unlink()
    rc, checks = doctor(site)
    assert rc == 0
    assert checks["outputs"] == (f"skip  outputs: {site['etc'] / 'telegraf.conf'} not found: the "
                                 "main Telegraf config's outputs are not checked")


def test_telegraf_conf_not_toml(site):
    (site["etc"] / "telegraf.conf").write_text(STOCK_TELEGRAF_CONF + "[[outputs.influxdb\n")
    rc, checks = doctor(site)
    assert rc == 1 and checks["telegraf.conf"].startswith("FAIL  telegraf.conf: error loading "
                                                          "config file")
    assert f"fix: fix the TOML in {site['etc'] / 'telegraf.conf'}" in checks["telegraf.conf"]


# ---------------------------------------------------------------- MQTT without the health instance

def test_no_health_instance_no_broker_needed(site):
    """The settings name a broker (as default.example does) that is not running."""
    default = site["etc"] / "default"
    dead = f"tcp://127.0.0.1:{free_port()}"
    default.write_text(default.read_text().replace("MQTT_SERVER=", f"MQTT_SERVER={dead}\n#"))
    rc, checks = doctor(site)
    assert rc == 1 and checks["mqtt"].startswith("FAIL")  # installed: checked
    health = site["etc"] / "tigo-health.conf"
    health.unlink()
    rc, checks = doctor(site)
    assert rc == 0, "\n".join(checks.values())
    assert checks["mqtt"] == (f"skip  mqtt: the health instance is not installed ({health} not "
                              "found): no broker needed")
    rc, checks = doctor(site, "--mqtt-server", dead)  # asked for explicitly: checked
    assert rc == 1 and checks["mqtt"].startswith("FAIL") and "fix: start the broker" in checks["mqtt"]


# ---------------------------------------------------------------- bad input: a message, no traceback

UNBALANCED = "cmd:taptap observe --serial '/dev/ttyUSB0"


def test_source_with_an_unbalanced_quote(site):
    for how in ("option", "settings"):
        if how == "settings":
            default = site["etc"] / "default"
            default.write_text(default.read_text().replace("TIGO_SOURCE=", f'TIGO_SOURCE="{UNBALANCED}"\n#'))
        rc, checks = doctor(site, *(["--source", UNBALANCED] if how == "option" else []))
        assert rc == 1
        assert checks["source"] == (
            f"FAIL  source: TIGO_SOURCE {UNBALANCED!r} is not a command line: no closing "
            "quotation -- fix: close the quote (or remove it) in TIGO_SOURCE in "
            "/etc/default/telegraf; quote the whole value: "
            "TIGO_SOURCE=\"cmd:taptap observe --serial /dev/ttyUSB0\"")
        assert checks["taptap"].startswith("ok")
        assert checks["groups"].startswith("skip")


@pytest.mark.parametrize(("name", "write", "expected"), [
    ("settings", lambda etc: (etc / "default").write_bytes(b"TIGO_SOURCE=/dev/tty\xff\n"),
     "is not UTF-8 text"),
    ("tigo.conf", lambda etc: (etc / "telegraf.d" / "tigo.conf").write_bytes(b"# \xff\n"),
     "error loading config file"),
    ("tigo.conf", lambda etc: (etc / "telegraf.d" / "tigo.conf").write_text(
        (etc / "telegraf.d" / "tigo.conf").read_text().replace("${INFLUX_DB:-bms}",
                                                               "${TIGO_UNSET:?must be set}")),
     "TIGO_UNSET: must be set"),
    ("telegraf.d", lambda etc: (etc / "telegraf.d" / "tigo.conf").write_text(
        'inputs = 5\n[outputs]\ninfluxdb = "x"\n'), "no `tigo-execd run` input"),
    ("tigo.conf", lambda etc: (etc / "telegraf.d" / "tigo.conf").write_text(
        '[[inputs.execd]]\ncommand = 7\n[[outputs.influxdb]]\nnamepass = ["tigo_power_report"]\n'
        'urls = []\n'), "inputs.execd: command is not a list"),
    ("mqtt", lambda etc: (etc / "default").write_text((etc / "default").read_text().replace(
        "MQTT_SERVER=", "MQTT_SERVER=tcp://127.0.0.1:notaport\n#")), "is not a broker address"),
])
def test_bad_files_get_a_message_not_a_traceback(site, name, write, expected):
    """Files the doctor parses, each broken in a way that used to raise (the helper asserts an
    empty stderr)."""
    write(site["etc"])
    rc, checks = doctor(site)
    assert rc == 1 and checks[name].startswith("FAIL") and expected in checks[name], checks[name]


def test_unreadable_unit_drop_ins_are_passed_over(site):
    """As systemd does; the readable one still gives the group."""
    units = site["etc"] / "units"
    (units / "a.conf").mkdir()
    (units / "b.conf").write_bytes(b"[Service]\nSupplementaryGroups=\xff\n")
    shutil.copy(DROP_IN, units / "tigo-execd.conf")
    rc, checks = doctor(site, "--user", "nobody")
    assert rc == 0 and checks["groups"] == (f"ok    groups: nobody has group dialout "
                                            f"({units / 'tigo-execd.conf'})")


# ---------------------------------------------------------------- InfluxDB URL without a scheme

def test_influx_url_without_scheme(site, influxd):
    bare = influxd.url.removeprefix("http://")
    default = site["etc"] / "default"
    default.write_text(default.read_text().replace("INFLUX_URL=", f"INFLUX_URL={bare}\n#"))
    for argv in ([], ["--influx-url", "admin:secret@" + bare]):
        rc, checks = doctor(site, *argv)
        assert rc == 1
        assert checks["influxdb"] == (f"FAIL  influxdb: URL {bare!r} has no scheme: add http:// -- "
                                      f"fix: INFLUX_URL=http://{bare} in /etc/default/telegraf")
        assert checks["influxdb auth"].startswith("skip")
    rc, checks = doctor(site, "--influx-url", "ftp://" + bare)
    assert rc == 1 and f"'ftp://{bare}': ftp:// is not InfluxDB's HTTP API" in checks["influxdb"]
    rc, checks = doctor(site, "--influx-url", f"http://{bare}")  # the fix, as the line says
    assert rc == 0 and checks["influxdb"].startswith("ok")
    for url, detail in ((f"http://{bare.split(':')[0]}:x", "Port could not be cast to integer"),
                        ("http://admin:secret@[::1", "Invalid IPv6 URL")):
        rc, checks = doctor(site, "--influx-url", url)
        assert rc == 1 and detail in checks["influxdb"] and "secret" not in checks["influxdb"]
        assert "fix: INFLUX_URL=http://HOST:8086 in /etc/default/telegraf" in checks["influxdb"]


@pytest.mark.parametrize("timeout", ["0", "-1", "nan", "inf", "3s"])
def test_timeout_must_be_seconds_above_zero(timeout):
    result = subprocess.run(tigo_execd_argv("doctor", "--timeout", timeout), check=False,
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 64 and result.stdout == ""
    assert result.stderr == (f"E! tigo-execd doctor: argument --timeout: {timeout!r} is not a "
                             "number of seconds above 0 (see: tigo-execd doctor --help)\n")
