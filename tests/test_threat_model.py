"""The claims of the threat model (docs/threat-model.md), each tested where a test can show it.

Nothing on the bus or in a user-edited file is trusted; credentials reach programs only through the
environment and are never shown; the loopback bridge serves only its own taptap; the state file
cannot be swapped or half-written; hostile input cannot flood stderr or memory. Claims that other
tests already show are only referenced in its table, not repeated here.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import json
import os
import re
import secrets
import shutil
import socket
import stat
import struct
import subprocess
import time
from pathlib import Path

import pytest

from support import telegraf_harness as th
from support.bridge_run import BUS, run_bridge, taptap_starts
from support.paths import DATA, ROOT
from support.proc import FAKE_TAPTAP, Child, descendants, tigo_execd_argv
from support.serial_pty import Pty
from support.service_env import telegraf_env
from support.taptap_lines import stamp
from support.wait import wait_until_async
from tigo_execd import cli
from tigo_execd import log as logmod
from tigo_execd.clock import parse_timestamp
from tigo_execd.identity import store
from tigo_execd.identity.registry import Registry

SAMPLE = DATA / "taptap-upstream.jsonl"   # 10 reports, nodes 116, 82, 19, 121, 2 (4-A2346FZ), 3
TELEGRAF = ROOT / "telegraf"
SECRET_VARS = ("INFLUX_USER", "INFLUX_PASS", "MQTT_USER", "MQTT_PASS")


@pytest.fixture
def marker() -> str:
    """A password no program could print by chance: finding it anywhere means it leaked."""
    return "Tm" + secrets.token_hex(8)


@pytest.fixture
def influx_user(influxd_auth, marker) -> tuple[str, str, str]:
    """An InfluxDB user whose password is the marker, and a database of its own with two fresh
    reports: (user, password, database)."""
    token = secrets.token_hex(4)
    name, db = f"tm_{token}", f"tm_{token}"
    admin = influxd_auth.client(db)
    admin.query(f"CREATE USER \"{name}\" WITH PASSWORD '{marker}' WITH ALL PRIVILEGES")
    admin.query(f'CREATE DATABASE "{db}"')
    now = time.time_ns()
    admin.write(b"".join(b"tigo_power_report,gateway_id=4609,node_id=%d,src=tigo power_w=200 %d\n"
                         % (node, now - 60_000_000_000) for node in (1, 2)))
    yield name, marker, db
    admin.query(f'DROP DATABASE "{db}"')
    admin.query(f'DROP USER "{name}"')


def fresh(lines: list[bytes]) -> list[bytes]:
    """Sample reports moved to end now: a live source's reports must be dated by a sane clock."""
    stamps = [parse_timestamp(json.loads(line)["timestamp"]) for line in lines]
    shift = time.time_ns() - max(stamps)
    out = []
    for line, ns in zip(lines, stamps):
        doc, ns = json.loads(line), ns + shift
        doc["timestamp"] = stamp(ns)
        out.append(json.dumps(doc).encode() + b"\n")
    return out


def no_influx_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in SECRET_VARS}


def run_cmd(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          env={**env, "PYTHONPATH": str(ROOT)}, cwd=ROOT)


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def listening(pid: int) -> list[tuple[str, str]]:
    """(table, local address as /proc/net writes it) of every TCP socket `pid` listens on."""
    mine = socket_inodes(pid)
    found = []
    for table in ("tcp", "tcp6"):
        for row in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            cols = row.split()
            if cols[3] == "0A" and cols[9] in mine:  # 0A = TCP_LISTEN
                found.append((table, cols[1]))
    return found


# ---------------------------------------------------------------- credentials

def test_no_command_has_a_credentials_option():
    """Passwords come from the environment only: no option could put one on a command line."""
    parser = cli.build_parser([])
    sub = next(a for a in parser._actions if a.dest == "command")
    options = {(name, opt) for name, p in sub.choices.items() for a in p._actions
               for opt in a.option_strings}
    assert {name for name, _ in options} >= {"run", "watchdog", "nodes", "doctor"}
    leaky = [o for o in options if any(w in o[1].lower() for w in ("pass", "secret", "token", "cred"))]
    assert leaky == []


@pytest.mark.parametrize("conf", ["tigo.conf", "tigo-health.conf"])
def test_shipped_confs_keep_credentials_off_every_command_line(conf, tmp_path):
    """Every ${VAR} set to a marker: the secrets reach Telegraf's outputs, never an execd command."""
    text = (TELEGRAF / conf).read_text()
    (tmp_path / conf).write_text(text)
    names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    secret = {n for n in names if re.search("PASS|USER|TOKEN|SECRET|KEY", n)}
    assert secret >= {"INFLUX_USER", "INFLUX_PASS"}
    env = {name: f"<{name}>" for name in names} | {"MQTT_SERVER": "tcp://127.0.0.1:1883"}
    config = th.load_config(config_directory=tmp_path, env=env)
    for plugin in config.inputs:
        line = " ".join(map(str, plugin.options["command"])) + repr(plugin.options.get("environment"))
        assert not any(f"<{name}>" in line for name in secret), line
    secrets_used = {(o.options.get("username"), o.options.get("password")) for o in config.outputs}
    assert secrets_used <= {("<INFLUX_USER>", "<INFLUX_PASS>"), ("<MQTT_USER>", "<MQTT_PASS>")}
    assert len(secrets_used) == (1 if conf == "tigo.conf" else 2)
    assert all(o.options.get("username") and o.options.get("password") for o in config.outputs)


def test_settings_file_is_installed_readable_by_root_and_telegraf_only():
    """The install guide and default.example make /etc/default/telegraf 0640 root:telegraf."""
    readme = (ROOT / "docs" / "install.md").read_text()
    assert "sudo install -m 640 -o root -g telegraf telegraf/default.example /etc/default/telegraf" in readme
    assert "sudo chown root:telegraf /etc/default/telegraf && sudo chmod 640 /etc/default/telegraf" \
        in (TELEGRAF / "default.example").read_text()


def test_watchdog_and_nodes_never_show_the_password(influxd_auth, influx_user):
    user, password, db = influx_user
    env = no_influx_env()
    watchdog = tigo_execd_argv("watchdog", "--once", "--log-level", "debug", "--db", db,
                               "--influx-url", influxd_auth.url)
    nodes = tigo_execd_argv("nodes", "--log-level", "debug", "--db", db,
                            "--influx-url", influxd_auth.url)
    def in_url(secret: str) -> str:
        return influxd_auth.url.replace("://", f"://{user}:{secret}@")

    right = {**env, "INFLUX_USER": user, "INFLUX_PASS": password}
    wrong = {**env, "INFLUX_USER": user, "INFLUX_PASS": password + "x"}
    results = {
        "watchdog right": (run_cmd(watchdog, right), 0, "OK healthy"),
        "watchdog wrong": (run_cmd(watchdog, wrong), 77, "CRIT influx_auth_failed"),
        "nodes right": (run_cmd(nodes, right), 0, "gateway"),
        "nodes wrong": (run_cmd(nodes, wrong), 77, "E! tigo-execd nodes: InfluxDB at"),
        # the password in the URL, against the advice: used, warned about, never quoted
        "watchdog url": (run_cmd(tigo_execd_argv("watchdog", "--once", "--db", db, "--influx-url",
                                                 in_url(password)), env), 0, "OK healthy"),
        "nodes url": (run_cmd(tigo_execd_argv("nodes", "--db", db, "--influx-url",
                                              in_url(password + "x")), env),
                      77, "refused the credentials"),
    }
    for what, (r, code, expected) in results.items():
        assert r.returncode == code, (what, r.stdout, r.stderr)
        assert expected in r.stdout + r.stderr, (what, r.stdout, r.stderr)
        assert password not in r.stdout + r.stderr, what
    assert "W! --influx-url carries credentials" in results["watchdog url"][0].stderr


def test_doctor_never_shows_the_passwords(tmp_path, influxd_auth, influx_user, mosquitto):
    user, password, db = influx_user
    mqtt_password = password + "mqtt"
    (tmp_path / "telegraf.d").mkdir()
    shutil.copy(TELEGRAF / "tigo.conf", tmp_path / "telegraf.d")
    shutil.copy(TELEGRAF / "tigo-health.conf", tmp_path)
    argv = tigo_execd_argv("doctor", "--env-file", str(tmp_path / "default"),
                           "--config-directory", str(tmp_path / "telegraf.d"),
                           "--health-config", str(tmp_path / "tigo-health.conf"),
                           "--unit-dir", str(tmp_path), "--user", "root", "--timeout", "2")
    for influx_password in (password, password + "x"):
        (tmp_path / "default").write_text(
            f"TIGO_SOURCE=jsonl:{SAMPLE}\nINFLUX_URL={influxd_auth.url}\nINFLUX_DB={db}\n"
            f"INFLUX_USER={user}\nINFLUX_PASS={influx_password}\n"
            f"MQTT_SERVER=tcp://127.0.0.1:{mosquitto.port}\nMQTT_USER=u\nMQTT_PASS={mqtt_password}\n")
        r = run_cmd(argv, no_influx_env())
        auth = next(line for line in r.stdout.splitlines() if " influxdb auth: " in line)
        assert auth.startswith("ok" if influx_password == password else "FAIL"), r.stdout
        assert password not in r.stdout + r.stderr


def test_processes_from_the_shipped_confs_show_no_credentials(
        tmp_path, tigo_execd_bin, influxd_auth, influx_user, mosquitto):
    """Both Telegraf instances as installed, with the secrets in their environment: the data
    instance writes with them (so they are really used), the watchdog gets a wrong password; no
    command line, log line or MQTT payload shows either."""
    import paho.mqtt.subscribe as subscribe

    user, password, _ = influx_user
    etc = tmp_path / "etc"
    (etc / "telegraf.d").mkdir(parents=True)
    (etc / "telegraf.conf").write_text('[agent]\n  flush_interval = "200ms"\n')
    shutil.copy(TELEGRAF / "tigo.conf", etc / "telegraf.d")
    shutil.copy(TELEGRAF / "tigo-health.conf", etc)
    topic = f"tigo/threat-{os.getpid()}"
    db = f"tm_{secrets.token_hex(4)}"
    live = tmp_path / "live.jsonl"
    live.write_bytes(b"".join(fresh(SAMPLE.read_bytes().splitlines(True))))
    env = telegraf_env(tigo_execd_bin, influxd_auth.url, db, tmp_path / "state",
                       FAKE_TAPTAP_LINES=str(live), INFLUX_USER=user, INFLUX_PASS=password, MQTT_USER="u",
                       MQTT_PASS=password + "mqtt", MQTT_SERVER=f"tcp://127.0.0.1:{mosquitto.port}",
                       MQTT_TOPIC=topic)
    data = th.Harness(th.load_config(etc / "telegraf.conf", etc / "telegraf.d", env), th.Log(None))
    health = th.Harness(th.load_config(etc / "tigo-health.conf",
                                       env={**env, "INFLUX_PASS": password + "x"}), th.Log(None))
    admin = influxd_auth.client(db)
    command_lines: dict[int, bytes] = {}

    async def scenario():
        await data.start()
        await health.start(gather_loop=False)
        health.inputs[0].gather()
        await wait_until_async(lambda: data.outputs[0].written >= 10
                               and any(m.name == "tigo_health" for m in health.collected), 30,
                               lambda: f"10 reports and one health metric; "
                                       f"log: {data.log.records + health.log.records}")
        for execd in data.inputs + health.inputs:
            for pid in {execd.proc.pid, *descendants(execd.proc.pid)}:
                command_lines[pid] = Path(f"/proc/{pid}/cmdline").read_bytes()
        await health.stop()
        await data.stop()

    asyncio.run(scenario())
    assert len(command_lines) >= 3  # tigo-execd run, its (fake) taptap, the watchdog
    assert any(b"watchdog" in c for c in command_lines.values())
    assert all(password.encode() not in c for c in command_lines.values()), command_lines
    written = admin.query("SELECT count(power_w) FROM tigo_power_report")
    assert written[0]["values"][0][1] == 10  # the data instance's credentials were used
    admin.query(f'DROP DATABASE "{db}"')
    health_metric = next(m for m in health.collected if m.name == "tigo_health")
    assert health_metric.fields["reason"] == "influx_auth_failed"
    logged = [r.message for r in data.log.records + health.log.records]
    assert any("refused the credentials" in line for line in logged)  # the watchdog's W! line
    assert not any(password in line for line in logged)
    msg = subscribe.simple(topic, qos=1, hostname="127.0.0.1", port=mosquitto.port, retained=True)
    payload = json.loads(msg.payload)
    assert payload["reason"] == "influx_auth_failed" and "INFLUX_PASS" in payload["message"]
    assert password.encode() not in msg.payload


def unit_settings(path: Path) -> dict[str, list[str]]:
    """KEY=VALUE lines of a systemd unit or drop-in (comments and sections left out)."""
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        key, eq, value = line.strip().partition("=")
        if eq and not key.startswith(("#", ";", "[")):
            settings.setdefault(key, []).append(value)
    return settings


def test_services_run_as_telegraf_with_dialout_as_the_only_extra_right():
    """Telegraf's own unit runs as User=telegraf; the shipped drop-in adds group dialout and a state
    directory, nothing else; the health instance is user telegraf with no way to gain privileges."""
    drop_in = unit_settings(ROOT / "systemd" / "telegraf.service.d" / "tigo-execd.conf")
    assert drop_in == {"SupplementaryGroups": ["dialout"], "StateDirectory": ["tigo-execd"]}
    health = unit_settings(ROOT / "systemd" / "tigo-health.service")
    assert health["User"] == ["telegraf"] and health["NoNewPrivileges"] == ["true"]
    assert health["ProtectSystem"] == ["full"] and health["PrivateTmp"] == ["true"]
    granting = {"Group", "SupplementaryGroups", "AmbientCapabilities", "CapabilityBoundingSet",
                "PermissionsStartOnly", "SetUID", "SetGID"}
    assert granting.isdisjoint(health) and "root" not in repr(health).lower()


# ---------------------------------------------------------------- the loopback bridge

@contextlib.asynccontextmanager
async def serial_bridge(tmp_path: Path, prefix: list[str] | None = None):
    """`run --serial` on a pty, its (fake) taptap connected to the bridge: (run, pty, bridge port)."""
    pty = Pty()
    async with run_bridge(tmp_path, "--serial", pty.path, prefix=prefix) as run:
        await run.wait_err(b"connected to the bridge")
        [(_, argv)] = taptap_starts(tmp_path)
        yield run, pty, int(argv.rsplit(" ", 1)[1])


def test_the_bridge_listens_on_loopback_only(tmp_path):
    async def scenario():
        async with serial_bridge(tmp_path) as (run, _, port):
            loopback = struct.unpack("=I", socket.inet_aton("127.0.0.1"))[0]
            assert listening(run.proc.pid) == [("tcp", f"{loopback:08X}:{port:04X}")]
            await run.stop()

    asyncio.run(scenario())


def test_a_connection_from_another_user_is_refused(tmp_path):
    """tigo-execd without the rights to look into other users' processes (as under the telegraf
    user): a connection it cannot trace to its own taptap is refused, and the bus still flows."""
    blind = ["setpriv", "--bounding-set=-sys_ptrace,-dac_override,-dac_read_search"]
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]

    async def scenario():
        async with serial_bridge(tmp_path, prefix=blind) as (run, pty, port):
            intruder = await asyncio.create_subprocess_exec(
                *nobody, "bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port} && cat <&3",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(intruder.communicate(), 10)
            assert (intruder.returncode, out) == (0, b""), err  # connected, then closed on
            await run.wait_err(f"W! refused a connection to the taptap bridge 127.0.0.1:{port} from "
                               f"a process this user cannot see".encode())
            pty.write(b"".join(fresh(BUS.splitlines(True))))
            await run.wait_reports(10)
            await run.stop()

    asyncio.run(scenario())


# ---------------------------------------------------------------- the state file

def test_state_file_is_0644_in_a_0755_directory_even_under_umask_0(tmp_path):
    """The unit's StateDirectory= (STATE_DIRECTORY) as systemd passes it, umask 0 (the worst)."""
    state = tmp_path / "state"
    r = subprocess.run(tigo_execd_argv("run", "--jsonl", str(SAMPLE), "--stats-interval", "0"),
                       capture_output=True, timeout=60, umask=0, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "STATE_DIRECTORY": str(state)})
    assert r.returncode == 0, r.stderr
    registry = state / "registry.json"
    assert stat.S_IMODE(state.stat().st_mode) == 0o755
    assert stat.S_IMODE(registry.stat().st_mode) == 0o644  # readable for `nodes`, writable by owner
    assert json.loads(registry.read_text())["nodes"]["4609"]["2"]["barcode"] == "4-A2346FZ"
    assert [p.name for p in state.iterdir()] == ["registry.json"]  # no temporary file left


def test_state_file_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    """Written beside, fsynced, renamed: a reader sees the old file or the new one, never a part;
    a write that fails (disk full) leaves the old one."""
    path = tmp_path / "registry.json"
    registry = Registry()
    registry.learn_node(4609, 2, None, "4-A2346FZ")
    assert store.save_state(registry, path)
    first_inode, first = path.stat().st_ino, path.read_bytes()
    registry.learn_node(4609, 3, "04c05b4000a23471", None)
    assert store.save_state(registry, path)
    assert path.stat().st_ino != first_inode  # a new file renamed over the old, not rewritten in place
    second = path.read_bytes()
    assert b'"3"' in second and first != second

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    registry.learn_node(4609, 5, None, "4-A23471V")
    assert store.save_state(registry, path) is False
    assert path.read_bytes() == second
    assert [p.name for p in tmp_path.iterdir()] == ["registry.json"]


# ---------------------------------------------------------------- the names file

def test_hostile_names_become_exact_tag_values_and_nothing_else(tmp_path, influx_db):
    """Names a person (or anyone who can edit the file) wrote: line protocol syntax inside them is
    escaped, a newline or control character rejects the row, and InfluxDB stores exactly the name."""
    names = tmp_path / "names.csv"
    names.write_text(
        'gateway,node,panel,string\n'
        '4609,116,"a,b=c d""e\\f","east 1,evil=1 power_w=999 1"\n'
        '4609,82,"two\nlines",x\n'
        '4609,19,"tab\there",x\n'
        '4-A2346FZ," #!x=y\\,z\\"\n', encoding="utf-8")
    r = run_cmd(tigo_execd_argv("run", "--jsonl", str(SAMPLE), "--stats-interval", "0",
                                "--state-file", "", "--names", str(names)), dict(os.environ))
    assert r.returncode == 0, r.stderr
    warned = [line for line in r.stderr.splitlines() if line.startswith("W! ")]
    assert len(warned) == 2 and all("must be printable" in w for w in warned), r.stderr
    assert " line 4: " in warned[0] and " line 5: " in warned[1]  # lines 3-4 are one quoted row
    influx_db.write(r.stdout.encode())
    rows = [dict(zip(s["columns"], v)) for s in influx_db.query("SELECT * FROM tigo_power_report")
            for v in s["values"]]
    assert len(rows) == 10
    assert set(rows[0]) == {"time", "barcode", "current_in_a", "current_out_a", "duty_cycle",
                            "gateway_addr", "gateway_id", "node_addr", "node_id", "panel", "power_w",
                            "rssi", "src", "string", "temperature_c", "voltage_in_v", "voltage_out_v"}
    node116 = [row for row in rows if row["node_id"] == "116"]
    assert {(row["panel"], row["string"]) for row in node116} == \
        {('a,b=c d"e/f', "east 1,evil=1 power_w=999 1")}  # a backslash is written as /
    assert sorted(row["power_w"] for row in node116) == [212.021, 212.364]
    assert next(row for row in rows if row["node_id"] == "2")["panel"] == "#!x=y/,z/"
    assert {row["panel"] for row in rows if row["node_id"] in ("82", "19")} == {None}


# ---------------------------------------------------------------- denial of service

def test_a_10mb_line_and_a_flood_of_bad_lines_neither_crash_nor_flood(tmp_path):
    """taptap (the fake) prints a 10 MB line, 3,000 bad lines each different from the last, and
    2,000 stderr lines each different: every bad line is counted once, stderr stays short, memory
    stays small, the good reports around them are written."""
    good = fresh(SAMPLE.read_bytes().splitlines(True))
    bad = [b'{"gateway":{"id":1},"node":{"id":2},"timestamp":"not-a-time-%d"}\n' % i
           for i in range(1000)]
    bad += [b'{"gateway":{"id":%d},"node":{"id":2},"timestamp":"x"}\n' % (70000 + i)
            for i in range(1000)]
    bad += [b'{"broken %d\n' % i for i in range(1000)]
    lines = tmp_path / "lines"
    lines.write_bytes(good[0] + b'{"x":"' + b"A" * 10_000_000 + b'"}\n' + b"".join(bad) + good[1])
    child = Child(tigo_execd_argv("run", "--taptap-cmd", " ".join(FAKE_TAPTAP) + " observe --serial x",
                                  "--stats-interval", "0.3", "--state-file", ""),
                  env={"FAKE_TAPTAP_LINES": str(lines), "FAKE_TAPTAP_THEN": "sleep",
                       "FAKE_TAPTAP_STDERR": "\n".join(f"[2026-01-01T00:00:00Z WARN  taptap] "
                                                       f"odd frame {i}" for i in range(2000))})
    child.wait_for(lambda: b"reports=2i" in child.out, 30, "both good reports")
    # VmHWM: the peak RSS of tigo-execd since its exec (a child's rusage would also count the
    # pages it shared with the forking test process before exec)
    status = Path(f"/proc/{child.proc.pid}/status").read_text()
    peak_kib = int(next(l for l in status.splitlines() if l.startswith("VmHWM:")).split()[1])
    child.close_stdin()
    assert child.finish(10) == 0
    stats = [l for l in child.stdout_lines() if l.startswith("tigo_ingest,")][-1]
    assert "lines_read=3003i" in stats and "lines_invalid=3001i" in stats, stats
    assert peak_kib < 100_000, peak_kib  # the 10 MB line is never held whole
    err = child.stderr_lines()
    rejected = [l for l in err if l.startswith("W! rejected a taptap line")]
    assert 1 <= len(rejected) <= 8, err  # one per kind (JSON, time, ids, length) per minute
    assert len(err) <= logmod.MAX_KEYS + 20, len(err)  # taptap's own 2,000 share a bounded set
    assert all(l[:3] in ("E! ", "W! ", "I! ", "D! ") for l in err)


def test_log_kinds_are_bounded_and_a_flood_silences_no_other_family():
    """However many different kinds hostile input makes up, the logger keeps at most MAX_KEYS (and
    one overflow window per family); another family's first message still gets through."""
    out = io.StringIO()
    log = logmod.Log("info", out, clock=lambda: 0.0)
    for i in range(10 * logmod.MAX_KEYS):
        log.warn(f"odd frame {i}", key=f"taptap:odd frame {i}")
    log.warn("rejected a taptap line", key="invalid:timestamp ")
    log.warn("rejected another", key="invalid:not valid JSON")
    assert len(log._seen) <= logmod.MAX_KEYS + 2
    lines = out.getvalue().splitlines()
    assert len(lines) == logmod.MAX_KEYS + 2
    assert lines[-1] == "W! rejected a taptap line"
