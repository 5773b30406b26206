"""`tigo-execd doctor`: checks a Telegraf + tigo-execd install in the order a person would.

taptap, the bus source, InfluxDB, the MQTT broker (when the health instance is installed), the
telegraf.d files, the other outputs of the main Telegraf (telegraf.conf's stock InfluxDB output
would take the Tigo metrics too), the telegraf user's groups: one line per check, and for each
failure the command or edit that fixes it. It judges from the service's point of view, not the
caller's: the environment is /etc/default/telegraf (what systemd gives Telegraf), commands are
looked up on the service's PATH, and the serial port's permissions are checked for the telegraf
user with the groups systemd gives it. Run it with sudo so that it can read /etc/default/telegraf.
Exit 0 when every check passes, 1 otherwise.

This module judges; what it reads is parsed elsewhere, the same way the services read it:
Telegraf's files by telegraf_config.py (Telegraf 1.38+'s rules), systemd's by systemd.py, running
processes by procfs.py, and the broker's answer by mqtt_probe.py.
"""

from __future__ import annotations

import argparse
import errno
import grp
import os
import shlex
import socket
import stat
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tigo_execd import argtypes, exitcodes
from tigo_execd.bus.feeds import parse_host_port
from tigo_execd.bus.ports import BY_ID, by_id_links
from tigo_execd.cli import Subparsers, add_log_level
from tigo_execd.influx import (
    Influx,
    InfluxAuthFailed,
    InfluxBadUrl,
    InfluxError,
    InfluxUnreachable,
    check_url,
)
from tigo_execd.ingest.run import parse_source_spec
from tigo_execd.procfs import holders
from tigo_execd.setup.mqtt_probe import CONNACK, mqtt_handshake
from tigo_execd.setup.telegraf_config import (
    MEASUREMENT,
    command_of,
    header_lines,
    known_options,
    load_conf,
    plugins,
    tigo_metrics_sent,
    unknown_options,
)
from tigo_execd.systemd import (
    SERVICE_PATH,
    SERVICE_STATE_DIR,
    ServiceUser,
    group_name,
    read_env_file,
    user_name,
)
from tigo_execd.taptap import (
    STATE_FILE,
    build_family,
    cargo_bin,
    has_state_option,
    resolve,
    state_file_need,
    state_option,
)

TAPTAP_INSTALL = ("install it for all users as docs/install.md step 4 does: curl -fsSL "
                  "https://sh.rustup.rs | sh -s -- -y --profile minimal && ~/.cargo/bin/cargo install "
                  "--git https://github.com/willglynn/taptap --locked && "
                  "sudo install -m 755 ~/.cargo/bin/taptap /usr/local/bin/taptap")
DROP_IN = "systemd/telegraf.service.d/tigo-execd.conf"  # shipped; gives the service dialout


# ---------------------------------------------------------------- results

@dataclass
class Finding:
    """One check's verdict, printed as one line with the fix for a failure."""

    name: str
    status: str  # "ok", "FAIL" or "skip" (does not apply)
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status:<4}  {self.name}: {self.detail}"
        return text + (f" -- fix: {self.fix}" if self.fix else "")


def ok(name: str, detail: str) -> Finding:
    return Finding(name, "ok", detail)


def fail(name: str, detail: str, fix: str) -> Finding:
    return Finding(name, "FAIL", detail, fix)


def skip(name: str, detail: str) -> Finding:
    return Finding(name, "skip", detail)


# ---------------------------------------------------------------- what the service will run

Conf = tuple[Path, dict[str, Any] | None, str]  # (path, parsed or None, why not)


@dataclass
class Setup:
    """What Telegraf will use, read from the env file and the installed confs."""

    env: dict[str, str]
    env_problem: Finding | None
    confs: list[Conf]  # telegraf.d's files, then the health instance's
    main: list[Conf]  # the main instance's: --config (when it exists), then telegraf.d's files
    source: str | None
    influx: dict[str, Any]
    mqtt: dict[str, Any]

    @classmethod
    def read(cls, args: argparse.Namespace) -> Setup:
        env: dict[str, str] = {}
        problem = None
        try:
            env = read_env_file(Path(args.env_file))
        except FileNotFoundError:
            pass  # no settings file: every ${VAR:-default} takes its default
        except OSError as exc:
            problem = fail("settings", f"cannot read {args.env_file}: {exc.strerror}",
                           "run the doctor with sudo")
        except ValueError as exc:
            problem = fail("settings", str(exc), f"save {args.env_file} as UTF-8 text")

        def read(path: Path) -> list[Conf]:
            if not path.exists():
                return []
            try:
                return [(path, load_conf(path, env), "")]
            except ValueError as exc:
                return [(path, None, str(exc))]

        directory = [c for p in sorted(Path(args.config_directory).glob("*.conf")) for c in read(p)]
        setup = cls(env, problem, directory + read(Path(args.health_config)),
                    read(Path(args.config)) + directory, None, {}, {})
        setup._pick(args)
        return setup

    def _pick(self, args: argparse.Namespace) -> None:
        """The source, InfluxDB output and MQTT output the confs configure (options override)."""
        for _, doc, _ in self.confs:
            for kind, table in plugins(doc or {}):
                command = command_of(table)
                if kind == "inputs.execd" and "run" in command[1:2] and "--source" in command[:-1]:
                    self.source = self.source or command[command.index("--source") + 1]
                passes = table.get("namepass", [MEASUREMENT])
                if kind == "outputs.influxdb" and MEASUREMENT in passes and not self.influx:
                    self.influx = table
                if kind == "outputs.mqtt" and not self.mqtt:
                    self.mqtt = table
        self.source = args.source or self.source or self.env.get("TIGO_SOURCE")
        self.influx = dict(self.influx) or {
            "urls": [self.env.get("INFLUX_URL") or "http://127.0.0.1:8086"],
            "database": self.env.get("INFLUX_DB") or "bms",
            "username": self.env.get("INFLUX_USER", ""), "password": self.env.get("INFLUX_PASS", "")}
        if args.influx_url:
            self.influx["urls"] = [args.influx_url]
        if args.influx_db:
            self.influx["database"] = args.influx_db
        self.mqtt = dict(self.mqtt) or {"username": self.env.get("MQTT_USER", ""),
                                        "password": self.env.get("MQTT_PASS", "")}
        servers = self.mqtt.get("servers")
        self.mqtt["server"] = args.mqtt_server or \
            (str(servers[0]) if isinstance(servers, list) and servers else None) \
            or self.env.get("MQTT_SERVER")


# ---------------------------------------------------------------- the checks

def _run(argv: list[str], timeout: float) -> tuple[int, str]:
    proc = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def parse_source(spec: str | None) -> tuple[str, str]:
    """`run --source SPEC` as tigo-execd reads it: ("serial"|"tcp"|"taptap_cmd"|"jsonl", value).

    ("invalid", spec) for what is no source; ("unsplittable", shlex's reason) for a cmd: line that
    cannot be split into words (an unbalanced quote), so that no caller has to split it unguarded.
    """
    if not spec:
        return "", ""
    try:
        kind, value = parse_source_spec(spec)
    except ValueError:
        return "invalid", spec
    if kind == "taptap_cmd":
        try:
            shlex.split(value)
        except ValueError as exc:
            return "unsplittable", str(exc).lower()
    return kind, value


def check_taptap(taptap: str, source: str | None, timeout: float) -> Finding:
    """taptap found on the service's PATH, it runs, which build it is, and whether it will report
    the optimizers' identities (barcodes) the way the source runs it."""
    kind, value = parse_source(source)
    if kind == "jsonl":
        return skip("taptap", "not needed: the source is a file of taptap output")
    argv = shlex.split(value) if kind == "taptap_cmd" else []
    if argv:
        taptap = argv[0]
    path = resolve(taptap, SERVICE_PATH, cargo=False)
    if path is None and os.sep in taptap and os.path.exists(taptap):
        return fail("taptap", f"{taptap} is not executable", f"sudo chmod 755 {taptap}")
    if path is None:
        cargo = cargo_bin("taptap")
        if cargo.exists():
            return fail("taptap", f"only in {cargo}, which the telegraf service cannot see",
                        f"sudo install -m 755 {cargo} /usr/local/bin/taptap")
        return fail("taptap", f"{taptap!r} not found on the service's PATH ({SERVICE_PATH})",
                    TAPTAP_INSTALL)
    try:
        rc, out = _run([path, "--version"], timeout)
        version = out.splitlines()[0] if rc == 0 and out else ""
        if rc != 0:
            rc, out = _run([path, "--help"], timeout)
            if "usage" not in out.lower():
                raise OSError(f"exit code {rc}: {out[:200]}")
        _, observe_help = _run([path, "observe", "--help"], timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return fail("taptap", f"{path} does not run: {exc}", "reinstall it: " + TAPTAP_INSTALL)
    found = f"{path} runs ({version or 'version not reported'}; {build_family(observe_help)})"
    option = state_option(observe_help)
    state = SERVICE_STATE_DIR / STATE_FILE
    if option is None:
        return ok("taptap", f"{found}; it reports identities in its power reports once it has seen "
                  "the CCA read its node table")
    add = f"add `{option} {state}` to the taptap command in TIGO_SOURCE in /etc/default/telegraf"
    if argv and not has_state_option(argv):
        if option == "--state-file":
            return fail("taptap", f"{found}; TIGO_SOURCE's command passes no state file: "
                        f"{state_file_need(option)}", add)
        return ok("taptap", f"{found}; it reports identities in infrastructure reports, but "
                  f"{state_file_need(option)}: {add}")
    how = "its command passes a state file" if argv else f"tigo-execd run passes `{option} {state}`"
    return ok("taptap", f"{found}; it reports identities in infrastructure reports ({how})")


def _group_fix(group: str, user: str) -> str:
    """Two ways to give the service user the serial port's group: /etc/group or our drop-in."""
    return (f"sudo usermod -aG {group} {user} (or install {DROP_IN} as "
            "/etc/systemd/system/telegraf.service.d/tigo-execd.conf and run sudo systemctl "
            "daemon-reload), then sudo systemctl restart telegraf")


def serial_port(source: str | None) -> str | None:
    """The serial device a source spec reads, if any."""
    kind, value = parse_source(source)
    if kind == "serial":
        return value
    argv = shlex.split(value) if kind == "taptap_cmd" else []
    return argv[argv.index("--serial") + 1] if "--serial" in argv[:-1] else None


def check_source(source: str | None, user: ServiceUser | None, timeout: float) -> Finding:
    """The serial port exists, the service may open it, nobody else has it; or the converter answers."""
    kind, value = parse_source(source)
    if kind == "unsplittable":
        return fail("source", f"TIGO_SOURCE {source!r} is not a command line: {value}",
                    "close the quote (or remove it) in TIGO_SOURCE in /etc/default/telegraf; "
                    "quote the whole value: TIGO_SOURCE=\"cmd:taptap observe --serial /dev/ttyUSB0\"")
    if kind in ("", "invalid"):
        return fail("source", f"TIGO_SOURCE {value!r} is not a source" if value else
                    "no source configured", "set TIGO_SOURCE in /etc/default/telegraf "
                    "(a /dev/serial/by-id/... path or tcp://HOST:PORT)")
    if kind == "tcp":
        try:
            host, tcp_port = parse_host_port(value)
            socket.create_connection((host, tcp_port), timeout=timeout).close()
        except (OSError, ValueError) as exc:
            return fail("source", f"converter {value} not reachable: {exc}",
                        "check the converter's address and port and that it is in TCP server mode")
        return ok("source", f"converter {host}:{tcp_port} accepts connections")
    if kind == "jsonl":
        if value != "-" and not os.access(value, os.R_OK):
            return fail("source", f"{value} cannot be read", "check the path in TIGO_SOURCE")
        return ok("source", f"file {value}")
    port = serial_port(source)
    if port is None:
        return ok("source", f"{source} (a taptap command line; its port is not checked)")
    try:
        st = os.stat(port)
    except OSError:
        by_id = [f"/{BY_ID}/{name}" for name in by_id_links()]
        return fail("source", f"{port} does not exist",
                    "plug in the RS-485 adapter and set TIGO_SOURCE to one of: "
                    + (", ".join(by_id) if by_id else "(none found in /dev/serial/by-id/)"))
    mode = f"{stat.filemode(st.st_mode)} {user_name(st.st_uid)}:{group_name(st.st_gid)}"
    if user is not None and not user.can_open(st):
        return fail("source", f"{port} ({mode}) cannot be opened by user {user.name}",
                    _group_fix(group_name(st.st_gid), user.name))
    held = holders(port, outside="telegraf")  # the service's own taptap may hold it
    try:
        os.close(os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK))
    except OSError as exc:
        busy = exc.errno == errno.EBUSY
        if not busy and exc.errno not in (errno.EACCES, errno.EPERM):  # the caller's rights
            return fail("source", f"{port} cannot be opened: {exc.strerror}",  # are not the service's
                        "re-plug the adapter; check dmesg for USB errors")
        held = held or (["another process"] if busy else [])
    if held:
        return fail("source", f"{port} is busy: open in {', '.join(held)}",
                    f"stop it (sudo fuser -v {port}; the old ingest: sudo systemctl disable --now "
                    "tigo-ingest.service)")
    return ok("source", f"{port} ({mode}) can be opened by {user.name if user else 'the service'}")


def influx_url_problem(url: str) -> Finding | None:
    """What makes a URL no InfluxDB HTTP URL, said before any connection is tried."""
    try:
        urlsplit(url).port  # noqa: B018 -- raises for a port that is no number, an unclosed [IPv6
        check_url(url)
    except InfluxBadUrl:
        if "://" in url:
            return fail("influxdb", f"URL {_without_credentials(url)!r}: {urlsplit(url).scheme}:// "
                        "is not InfluxDB's HTTP API", "INFLUX_URL=http://HOST:8086 (or https://) in "
                        "/etc/default/telegraf")
        try:
            bare = _without_credentials("http://" + url).removeprefix("http://")
        except ValueError:
            bare = "HOST:8086"
        return fail("influxdb", f"URL {bare!r} has no scheme: add http://",
                    f"INFLUX_URL=http://{bare} in /etc/default/telegraf")
    except ValueError as exc:
        return fail("influxdb", f"URL {url.rsplit('@', 1)[-1]!r} is not a URL: {exc}",
                    "INFLUX_URL=http://HOST:8086 in /etc/default/telegraf")
    return None


def check_influx(conf: Mapping[str, Any], timeout: float) -> list[Finding]:
    """An HTTP URL, reachable, credentials accepted, database present."""
    urls = conf.get("urls")
    url = str(urls[0]) if isinstance(urls, list) and urls else "http://localhost:8086"  # Telegraf's
    db = str(conf.get("database") or "telegraf")  # defaults
    not_checked = [skip("influxdb auth", "not checked"), skip("influxdb database", "not checked")]
    if problem := influx_url_problem(url):
        return [problem] + not_checked
    client = Influx(url, db, conf.get("username") or None, conf.get("password") or None, timeout)
    try:
        client.ping()
    except InfluxError as exc:
        return [fail("influxdb", str(exc), "start it (sudo systemctl start influxdb) or set "
                     "INFLUX_URL in /etc/default/telegraf")] + not_checked
    out = [ok("influxdb", f"{client.url} answers")]  # the URL without any user:password@
    try:
        series = client.query("SHOW DATABASES")
    except InfluxAuthFailed as exc:
        return out + [fail("influxdb auth", str(exc), "set INFLUX_USER and INFLUX_PASS in "
                           "/etc/default/telegraf"), skip("influxdb database", "not checked")]
    except (InfluxUnreachable, InfluxError) as exc:
        return out + [fail("influxdb auth", str(exc), "check InfluxDB's log"),
                      skip("influxdb database", "not checked")]
    user = conf.get("username")
    out.append(ok("influxdb auth", f"accepted as {user}" if user else "no credentials needed"))
    names = {v[0] for s in series for v in s.get("values", [])}
    if db not in names:
        out.append(fail("influxdb database", f"{db!r} does not exist (or {user or 'this user'} "
                        "may not see it)", f"influx -execute 'CREATE DATABASE {db}'"
                        + (f" and GRANT ALL ON {db} TO {user}" if user else "")))
    else:
        out.append(ok("influxdb database", f"{db!r} exists"))
    return out


def _without_credentials(url: str) -> str:
    """The URL without any user:password@ (a message never quotes a password)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))


def check_mqtt(conf: Mapping[str, Any], timeout: float) -> Finding:
    server = conf.get("server")
    if not server:
        return skip("mqtt", "no broker configured (the health instance is not set up)")
    try:
        parts = urlsplit(server if "://" in server else "tcp://" + server)
        host, port = parts.hostname or "127.0.0.1", parts.port or 1883
    except ValueError as exc:  # a port that is no number, an unclosed [IPv6
        return fail("mqtt", f"{server.rsplit('@', 1)[-1]!r} is not a broker address: {exc}",
                    "set MQTT_SERVER=tcp://HOST:1883 in /etc/default/telegraf")
    if parts.scheme not in ("tcp", "mqtt"):
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError as exc:
            return fail("mqtt", f"{host}:{port} not reachable: {exc}", "start the broker or set "
                        "MQTT_SERVER in /etc/default/telegraf")
        return ok("mqtt", f"{host}:{port} accepts connections ({parts.scheme}: handshake not checked)")
    try:
        rc = mqtt_handshake(host, port, conf.get("username") or "", conf.get("password") or "",
                            timeout)
    except OSError as exc:
        return fail("mqtt", f"{host}:{port}: {exc}", "start the broker (sudo systemctl start "
                    "mosquitto) or set MQTT_SERVER in /etc/default/telegraf")
    if rc:
        return fail("mqtt", f"{host}:{port} refused the connection: {CONNACK.get(rc, rc)}",
                    "set MQTT_USER and MQTT_PASS in /etc/default/telegraf")
    return ok("mqtt", f"{host}:{port} accepts an MQTT connection")


def check_confs(setup: Setup, config_directory: str) -> list[Finding]:
    """Each installed conf parses, uses only known options, and its execd programs exist."""
    known = known_options()
    out = []
    tigo = False
    for path, doc, error in setup.confs:
        if doc is None:
            out.append(fail(path.name, error, f"fix the TOML in {path}"))
            continue
        problems = []
        for kind, table in plugins(doc):
            if kind in known and (bad := unknown_options(kind, table, known)):
                problems.append(f"{kind}: unknown option(s) {', '.join(bad)}")
            if kind == "inputs.execd" and "command" in table and not command_of(table):
                problems.append("inputs.execd: command is not a list [program, arguments...]")
            if kind == "inputs.execd" and (command := command_of(table)):
                program = command[0]
                tigo = tigo or command[1:2] == ["run"]  # the data input, not the watchdog
                if resolve(program, SERVICE_PATH, cargo=False) is None:
                    problems.append(f"inputs.execd program {program} does not exist, so Telegraf "
                                    "will not start")
        if problems:
            out.append(fail(path.name, "; ".join(problems), f"edit {path} (compare with the "
                            "shipped telegraf/ files) or set TIGO_EXECD in /etc/default/telegraf"))
        else:
            out.append(ok(path.name, f"{path}: options known to Telegraf, programs exist"))
    if not tigo:
        out.append(fail("telegraf.d", f"no `tigo-execd run` input in {config_directory}",
                        f"sudo cp telegraf/tigo.conf {config_directory}/"))
    return out


def check_outputs(setup: Setup, config: str) -> list[Finding]:
    """No other output of the main Telegraf also writes the Tigo metrics (a stock telegraf.conf's
    [[outputs.influxdb]] would put them into its `telegraf` database too)."""
    out, leaks, fixes, outputs = [], [], [], 0
    for path, doc, error in setup.main:
        if doc is None:
            if path == Path(config):  # telegraf.d's files have their own line (check_confs)
                out.append(fail(path.name, error, f"fix the TOML in {path}"))
            continue
        seen: dict[str, int] = {}
        for kind, table in plugins(doc):
            if not kind.startswith("outputs.") or kind == "outputs.discard":
                continue
            outputs += 1
            seen[kind] = n = seen.get(kind, 0) + 1
            if not (metrics := tigo_metrics_sent(table)):
                continue
            lines = header_lines(path, kind)
            where = f"[[{kind}]] #{n}" + (f" (line {lines[n - 1]})" if len(lines) >= n else "")
            into = f", database {table.get('database') or 'telegraf'!r}" \
                if kind == "outputs.influxdb" else ""
            leaks.append(f"{', '.join(metrics)} also go to {where} of {path}{into}")
            fixes.append(f'add "tigo_*" to the namedrop list of {where} of {path}'
                         if table.get("namedrop") else
                         f'add namedrop = ["tigo_*"] to {where} of {path} (below its header line)')
    if leaks:
        out.append(fail("outputs", "; ".join(leaks), "; ".join(fixes)))
    elif not Path(config).exists():
        out.append(skip("outputs", f"{config} not found: the main Telegraf config's outputs are "
                        "not checked"))
    else:
        out.append(ok("outputs", f"no output gets the Tigo metrics without asking for them "
                      f"({outputs} checked)"))
    return out


def check_groups(user: ServiceUser | None, wanted: str, port: str | None) -> Finding:
    if user is None:
        return fail("groups", f"no user {wanted!r}", "install Telegraf from InfluxData's "
                    "repository (it creates the telegraf user)")
    if port is None:
        return skip("groups", "no serial port in use: no group needed")
    try:
        gid = os.stat(port).st_gid
    except OSError:
        try:
            gid = grp.getgrnam("dialout").gr_gid
        except KeyError:
            return skip("groups", f"{port} does not exist and there is no group dialout")
    name = group_name(gid)
    if user.uid == 0 or gid in user.gids:
        how = "root" if user.uid == 0 else user.gids[gid]
        return ok("groups", f"{user.name} has group {name} ({how})")
    return fail("groups", f"{user.name} is not in group {name}", _group_fix(name, user.name))


def run_checks(args: argparse.Namespace) -> Iterator[Finding]:
    setup = Setup.read(args)
    if setup.env_problem:
        yield setup.env_problem
    user = ServiceUser.lookup(args.user, Path(args.unit_dir))
    yield check_taptap(args.taptap, setup.source, args.timeout)
    yield check_source(setup.source, user, args.timeout)
    yield from check_influx(setup.influx, args.timeout)
    if args.mqtt_server or Path(args.health_config).exists():
        yield check_mqtt(setup.mqtt, args.timeout)
    else:
        yield skip("mqtt", f"the health instance is not installed ({args.health_config} not "
                   "found): no broker needed")
    yield from check_confs(setup, args.config_directory)
    yield from check_outputs(setup, args.config)
    yield check_groups(user, args.user, serial_port(setup.source))


def register(sub: Subparsers) -> None:
    p = sub.add_parser("doctor", help="check taptap, the source, InfluxDB, MQTT, the Telegraf "
                       "files and the telegraf user; print a fix for each problem",
                       description=__doc__.splitlines()[0])
    p.add_argument("--env-file", default="/etc/default/telegraf",
                   help="the services' environment (default: /etc/default/telegraf)")
    p.add_argument("--config", default="/etc/telegraf/telegraf.conf",
                   help="Telegraf's main config (default: /etc/telegraf/telegraf.conf)")
    p.add_argument("--config-directory", default="/etc/telegraf/telegraf.d",
                   help="Telegraf's drop-in directory (default: /etc/telegraf/telegraf.d)")
    p.add_argument("--health-config", default="/etc/telegraf/tigo-health.conf",
                   help="the health instance's config (default: /etc/telegraf/tigo-health.conf)")
    p.add_argument("--source", help="source to check (default: the one tigo.conf runs)")
    p.add_argument("--taptap", default="taptap", help="taptap program (default: taptap on PATH)")
    p.add_argument("--influx-url", help="InfluxDB URL (default: from the confs / INFLUX_URL)")
    p.add_argument("--db", dest="influx_db", help="database (default: from the confs / INFLUX_DB)")
    p.add_argument("--influx-db", dest="influx_db", help=argparse.SUPPRESS)  # its name before 0.2.0
    p.add_argument("--mqtt-server", help="broker, tcp://HOST:PORT (default: from tigo-health.conf "
                   "/ MQTT_SERVER)")
    p.add_argument("--user", default="telegraf", help="the service user (default: telegraf)")
    p.add_argument("--unit-dir", default="/etc/systemd/system/telegraf.service.d",
                   help="telegraf.service's drop-in directory, for SupplementaryGroups= "
                        "(default: /etc/systemd/system/telegraf.service.d)")
    p.add_argument("--timeout", type=argtypes.number(0, above=True, unit="seconds"), default=3.0,
                   help="seconds per network check (default: 3)")
    add_log_level(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    failed = False
    for finding in run_checks(args):
        print(finding.line(), flush=True)
        failed = failed or finding.status == "FAIL"
    return exitcodes.WARN if failed else exitcodes.OK
