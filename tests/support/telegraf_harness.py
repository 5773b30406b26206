"""Run telegraf.d files the way Telegraf would, for tests (Telegraf itself cannot be installed here).

Emulates the behaviours of Telegraf (https://github.com/influxdata/telegraf, read from its source:
config/config.go, plugins/inputs/execd, plugins/common/process, plugins/parsers/influx,
plugins/outputs/influxdb and plugins/outputs/mqtt) that tigo-execd depends on:

- Config: `--config FILE` then every `*.conf` of `--config-directory` in lexical order (tomllib).
  Option names are checked per plugin against tests/data/telegraf-options-from-source.json (the
  stand-in's own list, derived from Telegraf's source apart from the one doctor ships); an unknown
  one stops start-up, as Telegraf does, and one Telegraf ignores in every plugin table is accepted.
  Environment variables are substituted in TOML string values only, as support/telegraf_envvar.py
  describes (its own code, not tigo_execd's: the stand-in must not share the rules it checks).
  Durations: Go forms ("10s", "1m30s") or integer seconds.
- inputs.execd: plain exec of `command` (PATH lookup, Telegraf's environment plus `environment`,
  same cwd, no new process group); a failing first spawn is a start-up error. stdin stays open;
  `signal = "STDIN"` writes one `\\n` per gather (first one about one interval after start),
  SIGHUP/SIGUSR1/SIGUSR2 are sent instead, `none` sends nothing. stderr is read line by line
  (64 KiB max, a longer line ends stderr reading): `E! `/`W! `/`I! `/`D! `/`T! ` map to levels, any
  other line is an error `stderr: "<line>"`. On exit: `Process <path> exited: exit status N`, wait
  `restart_delay`, spawn again (not after a non-zero exit with `stop_on_error`; a failed re-spawn
  ends the plugin). Shutdown: close stdin, SIGTERM after 5 s, SIGKILL 5 s later; output written
  before exit is still collected.
- stdout is parsed strictly as line protocol, like Telegraf's influx parser: escapes per element,
  float / `i` integer (no leading zeros) / `u` unsigned / boolean / string fields, NaN and inf
  rejected, timestamps of at most 19 digits (ns); a malformed line is dropped alone and logged
  `Error in plugin: metric parse error: ...`; a line without timestamp gets the time of parsing.
- Metrics: input `namepass`/`namedrop` first, then `name_override`/`name_prefix`/`name_suffix`,
  the plugin's `tags`, `[global_tags]` and `host` (agent `hostname` or the machine's, unless
  `omit_hostname`); tags a metric already has win.
- outputs.influxdb: `urls` (tried in order), `database` (created when missing unless
  `skip_database_creation`), `retention_policy`, `username`/`password`, `timeout`; a buffer of
  `metric_buffer_limit` (oldest dropped when full) flushed every `flush_interval` or as soon as
  `metric_batch_size` metrics wait; unreachable = keep and retry, a rejected batch is dropped.
  A last flush on shutdown.
- outputs.mqtt through support/telegraf_mqtt.py (JSON serializer, JSONata, layouts non-batch and
  field, topic, qos, retain); a broker unreachable at start is retried once after 15 s, then
  start-up fails.
- `--test` / `--test-wait N` (one immediate gather, wait, stop, print `> line` with tags and fields
  sorted, outputs unused), `--once` (the same but written to the outputs), `--input-filter`.

Simplified: only inputs.execd, outputs.influxdb and outputs.mqtt exist (any other plugin is
rejected as not emulated), and of their options only those named above
act; any other known option is refused as "not emulated" rather than silently ignored (except a few
without effect here: alias, log_level, buffer_size, user_agent, content_encoding). Agent options
other than interval, flush_interval, metric_batch_size, metric_buffer_limit, hostname and
omit_hostname are accepted and ignored. No processors, aggregators, secret stores, jitter or
interval rounding. Globs use fnmatch (`*`, `?`, `[]`, no `{a,b}`). A metric's timestamp precision
is always ns. Log lines carry the wall-clock time and are also kept in `Harness.log.records`.

Use: `python tests/support/telegraf_harness.py --config F --config-directory D [--test --test-wait N]`,
or from Python `load_config(...)` + `Harness(config)` (`await h.start()`, `await h.stop()`,
`await h.test(wait)`).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import fnmatch
import json
import math
import os
import re
import shutil
import signal
import socket
import sys
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

if __name__ == "__main__":  # run as a script: tests/ (support) and the checkout (tigo_execd)
    sys.path[:0] = [str(Path(__file__).resolve().parents[i]) for i in (1, 2)]

from support import telegraf_envvar, telegraf_mqtt
from support.paths import DATA
from support.telegraf_mqtt import Metric, passes

OPTIONS_FILE = DATA / "telegraf-options-from-source.json"
STOP_GRACE = 5.0  # Telegraf's fixed wait before SIGTERM and again before SIGKILL
STDERR_MAX_LINE = 64 * 1024
STDOUT_MAX_LINE = 16 * 1024 * 1024
MQTT_START_RETRY = 15.0
PIPE_DRAIN = 1.0  # seconds to read what an exited process left in its pipes
LEVEL_PREFIXES = ("E! ", "W! ", "I! ", "D! ", "T! ")
AGENT_DEFAULTS = {"interval": 10.0, "flush_interval": 10.0, "metric_batch_size": 1000,
                  "metric_buffer_limit": 10000}
NO_EFFECT_HERE = {"alias", "log_level", "buffer_size", "user_agent", "content_encoding"}
EMULATED = {
    "inputs.execd": {"command", "environment", "signal", "restart_delay", "stop_on_error",
                     "data_format", "interval", "name_override", "name_prefix", "name_suffix",
                     "tags", "namepass", "namedrop"},
    "outputs.influxdb": {"urls", "database", "retention_policy", "username", "password", "timeout",
                         "skip_database_creation", "namepass", "namedrop", "tagexclude",
                         "flush_interval",
                         "metric_batch_size", "metric_buffer_limit"},
    "outputs.mqtt": {"servers", "topic", "qos", "retain", "username", "password", "client_id",
                     "keep_alive", "protocol", "data_format", "json_timestamp_units",
                     "json_transformation", "layout", "namepass", "namedrop", "flush_interval",
                     "metric_batch_size", "metric_buffer_limit"},
}


class ConfigError(Exception):
    """Telegraf would refuse to start with this configuration."""


class StartupError(Exception):
    """A plugin failed to start: Telegraf exits."""


class ParseError(ValueError):
    """A line Telegraf's influx parser rejects."""


# ---------------------------------------------------------------- logging

@dataclass
class Record:
    t: float  # time.monotonic()
    level: str  # E W I D T
    plugin: str
    message: str


class Log:
    """Telegraf-style log lines on a stream, kept in memory for the tests to inspect."""

    def __init__(self, stream: Any = sys.stderr) -> None:
        self.stream = stream
        self.records: list[Record] = []

    def __call__(self, level: str, plugin: str, message: str) -> None:
        self.records.append(Record(time.monotonic(), level, plugin, message))
        if self.stream is not None:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            print(f"{stamp} {level}! [{plugin}] {message}", file=self.stream, flush=True)

    def find(self, level: str | None = None, plugin: str | None = None,
             contains: str = "") -> list[Record]:
        return [r for r in self.records if (level is None or r.level == level)
                and (plugin is None or r.plugin == plugin) and contains in r.message]


# ---------------------------------------------------------------- configuration

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any, what: str) -> float:
    """A Telegraf duration in seconds: a Go duration string or an integer number of seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"{what}: invalid duration {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m[1]) * _DURATION_UNIT[m[2]]
        pos = m.end()
    if not text or pos != len(text):
        raise ConfigError(f"{what}: invalid duration {value!r}")
    return total


@dataclass
class Plugin:
    kind: str  # "inputs.execd", "outputs.influxdb", ...
    options: dict[str, Any]
    source: str  # the file it came from

    def duration(self, key: str, default: float) -> float:
        return parse_duration(self.options[key], f"{self.kind} {key}") if key in self.options else default


@dataclass
class Config:
    agent: dict[str, Any] = field(default_factory=dict)
    global_tags: dict[str, str] = field(default_factory=dict)
    inputs: list[Plugin] = field(default_factory=list)
    outputs: list[Plugin] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def agent_value(self, key: str) -> Any:
        if key in ("interval", "flush_interval"):
            value = self.agent.get(key, AGENT_DEFAULTS[key])
            return parse_duration(value, f"agent {key}")
        return self.agent.get(key, AGENT_DEFAULTS.get(key))

    @property
    def default_tags(self) -> dict[str, str]:
        tags = dict(self.global_tags)
        if not self.agent.get("omit_hostname", False):
            tags.setdefault("host", self.agent.get("hostname") or socket.gethostname())
        return tags


def options_read() -> dict[str, set[str]]:
    """Per table (agent, inputs.execd, outputs.mqtt.v5, ...): the names Telegraf's code reads."""
    doc = json.loads(OPTIONS_FILE.read_text())
    return {kind: set().union(*(doc["sources"][piece] for piece in pieces))
            for kind, pieces in doc["plugins"].items()}


def known_options() -> dict[str, list[str]]:
    """Per table, every name Telegraf accepts: what it reads, and in a plugin's own table also what
    config.go's missingTomlField ignores everywhere (an output's `buffer_strategy`, ...)."""
    doc = json.loads(OPTIONS_FILE.read_text())
    ignored = set(doc["sources"][doc["ignored_in_every_plugin"]])
    return {kind: sorted(names | ignored if kind.count(".") == 1 else names)
            for kind, names in options_read().items()}


def unknown_options(kind: str, table: Mapping[str, Any], known: Mapping[str, list[str]]) -> list[str]:
    """The keys of a plugin's (or the agent's) table that Telegraf would refuse. A sub-table is
    checked when `<kind>.<key>` has a list of its own (outputs.mqtt.v5); the keys of the others
    (tags, tagpass, tagdrop, v5.user_properties) are the user's."""
    bad = []
    for key, value in table.items():
        if key not in known.get(kind, ()):
            bad.append(key)
        elif isinstance(value, dict) and f"{kind}.{key}" in known:
            bad += [f"{key}.{sub}" for sub in unknown_options(f"{kind}.{key}", value, known)]
    return sorted(bad)


def _load_file(path: Path, env: Mapping[str, str], known: Mapping[str, list[str]],
               config: Config) -> None:
    try:
        doc = telegraf_envvar.load(path.read_text(encoding="utf-8"), env)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, telegraf_envvar.MissingVariable) as exc:
        raise ConfigError(f"error loading config file {path}: error parsing data: {exc}") from None
    for top, body in doc.items():
        if top == "agent":
            bad = unknown_options("agent", body, known)
            if bad:
                raise ConfigError(f"error loading config file {path}: agent: configuration specified "
                                  f"the fields {json.dumps(bad)} but they were not used")
            config.agent.update(body)
        elif top == "global_tags":
            config.global_tags.update({k: str(v) for k, v in body.items()})
        elif top in ("inputs", "outputs"):
            for name, tables in body.items():
                kind = f"{top}.{name}"
                for table in tables if isinstance(tables, list) else [tables]:
                    config_plugin(kind, table, str(path), known, config)
        else:
            raise ConfigError(f"error loading config file {path}: unsupported config format: {top}")


def config_plugin(kind: str, table: dict[str, Any], source: str, known: Mapping[str, list[str]],
                  config: Config) -> None:
    bad = unknown_options(kind, table, known) if kind in known else []
    if kind not in EMULATED:
        raise ConfigError(f"{source}: plugin {kind} is not emulated by the harness")
    if bad:
        raise ConfigError(f"error loading config file {source}: plugin {kind}: configuration specified "
                          f"the fields {json.dumps(bad)}, but they were not used. This is either a "
                          "typo or this config option does not exist in this version.")
    not_emulated = set(table) - EMULATED[kind] - NO_EFFECT_HERE
    if not_emulated:
        raise ConfigError(f"{source}: {kind} options {sorted(not_emulated)} are valid for Telegraf "
                          "but not emulated by the harness")
    plugin = Plugin(kind, table, source)
    (config.inputs if kind.startswith("inputs.") else config.outputs).append(plugin)


def load_config(config: str | Path | None = None, config_directory: str | Path | None = None,
                env: Mapping[str, str] | None = None) -> Config:
    """Read the files Telegraf would read, in its order, with `env` as Telegraf's environment."""
    env = dict(os.environ if env is None else env)
    files = [Path(config)] if config else []
    if config_directory:
        files += sorted(Path(config_directory).glob("*.conf"))
    if not files:
        raise ConfigError("no configuration files given")
    known = known_options()
    result = Config(env=env)
    for path in files:
        _load_file(path, env, known, result)
    if not result.inputs:
        raise ConfigError("no inputs found, probably invalid config file provided")
    return result


# ---------------------------------------------------------------- line protocol

class UInt(int):
    """An unsigned integer field (`12u`), distinct from a signed one."""


_INT = re.compile(r"-?(?:0|[1-9]\d*)i")
_UINT = re.compile(r"(?:0|[1-9]\d*)u")
_FLOAT = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_TIMESTAMP = re.compile(r"-?\d{1,19}")
_BOOLS = {"t": True, "T": True, "true": True, "True": True, "TRUE": True,
          "f": False, "F": False, "false": False, "False": False, "FALSE": False}
_WS = " \t"


def _scan(line: str, i: int, stops: str, escapable: str) -> tuple[str, int]:
    """Read up to the first unescaped stop character; `\\x` for x in escapable is x."""
    out = []
    while i < len(line):
        c = line[i]
        if c == "\\" and i + 1 < len(line) and line[i + 1] in escapable:
            out.append(line[i + 1])
            i += 2
            continue
        if c in stops:
            break
        out.append(c)
        i += 1
    return "".join(out), i


def _field_value(token: str) -> Any:
    if token in _BOOLS:
        return _BOOLS[token]
    if _INT.fullmatch(token):
        value = int(token[:-1])
        if not -(2 ** 63) <= value < 2 ** 63:
            raise ParseError(f"integer out of range: {token}")
        return value
    if _UINT.fullmatch(token):
        value = int(token[:-1])
        if value >= 2 ** 64:
            raise ParseError(f"unsigned out of range: {token}")
        return UInt(value)
    if _FLOAT.fullmatch(token):
        value = float(token)
        if not math.isfinite(value):
            raise ParseError(f"float out of range: {token}")
        return value
    raise ParseError(f"invalid field value {token!r}")


def _string_value(line: str, i: int) -> tuple[str, int]:
    """A quoted string starting after its opening quote; only \\" and \\\\ are escapes."""
    out = []
    while i < len(line):
        c = line[i]
        if c == "\\":
            if i + 1 < len(line) and line[i + 1] in '"\\':
                out.append(line[i + 1])
                i += 2
                continue
            raise ParseError(f"invalid escape in string field at 1:{i + 1}")
        if c == '"':
            return "".join(out), i + 1
        out.append(c)
        i += 1
    raise ParseError("unterminated string field")


def parse_line(line: str, now_ns: int | None = None) -> Metric:
    """One line of line protocol as Telegraf's influx parser takes it, or ParseError."""
    n = len(line)
    name, i = _scan(line, 0, ", ", ", ")
    if not name:
        raise ParseError("expected measurement name at 1:1")
    tags: dict[str, str] = {}
    while i < n and line[i] == ",":
        key, i = _scan(line, i + 1, ",= ", ",= ")
        if not key or i >= n or line[i] != "=":
            raise ParseError(f"expected tag key=value at 1:{i + 1}")
        value, i = _scan(line, i + 1, ",= ", ",= ")
        if not value:
            raise ParseError(f"empty tag value for {key!r} at 1:{i + 1}")
        if i < n and line[i] == "=":
            raise ParseError(f"unescaped '=' in tag value at 1:{i + 1}")
        tags[key] = value
    start = i
    while i < n and line[i] in _WS:
        i += 1
    if i == start or i >= n:
        raise ParseError(f"expected field at 1:{i + 1}")
    fields: dict[str, Any] = {}
    while True:
        key, i = _scan(line, i, ",= \t", ",= ")
        if not key or i >= n or line[i] != "=":
            raise ParseError(f"expected field key=value at 1:{i + 1}")
        i += 1
        if i < n and line[i] == '"':
            fields[key], i = _string_value(line, i + 1)
        else:
            token, i = _scan(line, i, ", \t", "")
            fields[key] = _field_value(token)
        if i < n and line[i] == ",":
            i += 1
            continue
        break
    if i < n and line[i] not in _WS:
        raise ParseError(f"unexpected character {line[i]!r} at 1:{i + 1}")
    rest = line[i:].strip(_WS)
    if not rest:
        ts = time.time_ns() if now_ns is None else now_ns
    elif _TIMESTAMP.fullmatch(rest) and -(2 ** 63) <= int(rest) < 2 ** 63:
        ts = int(rest)
    else:
        raise ParseError(f"invalid timestamp {rest!r}")
    return Metric(name, tags, fields, ts)


def _escape(text: str, chars: str) -> str:
    for c in chars:
        text = text.replace(c, "\\" + c)
    return text


def _format_float(value: float) -> str:
    """Go's strconv.FormatFloat(v, 'f', -1, 64): shortest digits, never an exponent."""
    text = format(Decimal(repr(value)), "f")
    return text[:-2] if text.endswith(".0") else text


def _format_field(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, UInt):
        return f"{int(value)}u"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return _format_float(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def serialize(m: Metric, sort_fields: bool = False) -> str:
    """Telegraf's influx serializer for one metric (tags sorted), without the newline."""
    head = ",".join([_escape(m.name, ", ")] + [f"{_escape(k, ',= ')}={_escape(v, ',= ')}"
                                               for k, v in sorted(m.tags.items())])
    items = sorted(m.fields.items()) if sort_fields else m.fields.items()
    body = ",".join(f"{_escape(k, ',= ')}={_format_field(v)}" for k, v in items
                    if not (isinstance(v, float) and not math.isfinite(v)))
    return f"{head} {body} {m.ts_ns}"


def test_line(m: Metric) -> str:
    """What `telegraf --test` prints for a metric."""
    return "> " + serialize(m, sort_fields=True)


# ---------------------------------------------------------------- inputs.execd

def _exit_text(rc: int) -> str:
    if rc >= 0:
        return f"exit status {rc}"
    return f"signal: {signal.strsignal(-rc).lower()}"  # Go's ExitError text, e.g. "signal: killed"


class Execd:
    """One [[inputs.execd]]: spawn, feed, read, restart and stop the program as Telegraf does."""

    name = "inputs.execd"
    SIGNALS: ClassVar[dict[str, str | signal.Signals | None]] = {
        "none": None, "STDIN": "STDIN", "SIGHUP": signal.SIGHUP, "SIGUSR1": signal.SIGUSR1,
        "SIGUSR2": signal.SIGUSR2}

    def __init__(self, plugin: Plugin, config: Config, log: Log,
                 emit: Callable[[Metric], None], stop_grace: float = STOP_GRACE) -> None:
        opts = plugin.options
        self.command = list(opts.get("command") or [])
        if not self.command:
            raise ConfigError(f"{plugin.source}: inputs.execd: command is empty")
        if opts.get("data_format", "influx") != "influx":
            raise ConfigError(f"{plugin.source}: data_format {opts['data_format']!r} is not emulated")
        sig = opts.get("signal", "none")
        if sig not in self.SIGNALS:
            raise ConfigError(f"{plugin.source}: inputs.execd: unknown signal {sig!r}")
        self.signal = self.SIGNALS[sig]
        self.restart_delay = plugin.duration("restart_delay", 10.0)
        self.interval = plugin.duration("interval", config.agent_value("interval"))
        self.stop_on_error = bool(opts.get("stop_on_error", False))
        self.env = dict(config.env)
        for item in opts.get("environment", []):
            key, _, value = item.partition("=")
            self.env[key] = value
        self.opts = opts
        self.default_tags = config.default_tags
        self.log = log
        self.emit = emit
        self.stop_grace = stop_grace
        self.path = shutil.which(self.command[0], path=config.env.get("PATH", os.defpath)) \
            if "/" not in self.command[0] else self.command[0]
        self.proc: asyncio.subprocess.Process | None = None
        self.returncodes: list[int] = []
        self.pids: list[int] = []
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []

    def _log(self, level: str, message: str) -> None:
        self.log(level, self.name, message)

    async def _spawn(self) -> None:
        if self.path is None:
            raise OSError(f'exec: "{self.command[0]}": executable file not found in $PATH')
        self.proc = await asyncio.create_subprocess_exec(
            self.command[0], *self.command[1:], executable=self.path, env=self.env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, limit=STDOUT_MAX_LINE)
        self.pids.append(self.proc.pid)

    async def start(self) -> None:
        """The first spawn; its failure stops Telegraf from starting."""
        try:
            await self._spawn()
        except OSError as exc:
            raise StartupError(f"starting input {self.name}: failed to start process "
                               f"{self.command}: {exc}") from None
        self._tasks.append(asyncio.create_task(self._life()))

    async def _life(self) -> None:
        """Read the running process to its end, then restart it after restart_delay, until stopped."""
        while True:
            proc = self.proc
            assert proc is not None
            readers = [asyncio.create_task(self._read_stdout(proc)),
                       asyncio.create_task(self._read_stderr(proc))]
            rc = await proc.wait()
            # Go's cmd.Wait closes the pipes once the process is gone (a grandchild holding them
            # does not keep Telegraf waiting); what was written before the exit is drained first.
            _, pending = await asyncio.wait(readers, timeout=PIPE_DRAIN)
            for task in pending:
                task.cancel()
            self.returncodes.append(rc)
            if self._stopping.is_set():
                self._log("I", f"Process {self.path} shut down")
                return
            self._log("E", f"Process {self.path} exited: {_exit_text(rc)}")
            if self.stop_on_error and rc != 0:
                return
            self._log("I", f"Restarting in {self.restart_delay:g}s...")
            try:
                await asyncio.wait_for(self._stopping.wait(), self.restart_delay)
                return
            except TimeoutError:
                pass
            try:
                await self._spawn()
            except OSError as exc:
                self._log("E", f"Process quit with message: error restarting command: {exc}")
                return

    async def _read_stdout(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while True:
            try:
                raw = await proc.stdout.readline()
            except ValueError:  # a line longer than the reader's limit
                self._log("E", "Error in plugin: metric parse error: line too long")
                continue
            if not raw:
                return
            text = raw.decode("utf-8", "replace").rstrip("\n")
            if not text.strip(_WS + "\r") or text.lstrip(_WS).startswith("#"):
                continue
            try:
                metric = parse_line(text)
            except ParseError as exc:
                self._log("E", f'Error in plugin: metric parse error: {exc}: "{text}"')
                continue
            self._accept(metric)

    async def _read_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        while True:
            try:
                raw = await proc.stderr.readline()
            except ValueError:
                raw = b"x" * (STDERR_MAX_LINE + 1)
            if not raw:
                return
            if len(raw.rstrip(b"\n")) > STDERR_MAX_LINE:
                self._log("E", "Error reading stderr: bufio.Scanner: token too long")
                return  # Telegraf stops reading stderr for good
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if line.startswith(LEVEL_PREFIXES):
                self._log(line[0], line[3:])
            else:
                self._log("E", f'stderr: "{line}"')

    def _accept(self, metric: Metric) -> None:
        """Input filters, then name and tag changes (makemetric)."""
        if not passes(self.opts, metric.name):
            return
        name = self.opts.get("name_override") or metric.name
        name = self.opts.get("name_prefix", "") + name + self.opts.get("name_suffix", "")
        tags = dict(metric.tags)
        for extra in (self.opts.get("tags", {}), self.default_tags):
            for k, v in extra.items():
                tags.setdefault(k, str(v))
        self.emit(Metric(name, tags, metric.fields, metric.ts_ns))

    def gather(self) -> None:
        """One collection: what execd's Gather does for the configured signal."""
        proc = self.proc
        if self.signal is None or proc is None or proc.returncode is not None:
            return
        if self.signal == "STDIN":
            assert proc.stdin is not None
            try:
                proc.stdin.write(b"\n")
            except (BrokenPipeError, ConnectionResetError, RuntimeError) as exc:
                self._log("E", f"Error in plugin: error writing to stdin: {exc}")
        else:
            proc.send_signal(self.signal)

    async def run_gathers(self) -> None:
        """Gather every interval, the first one an interval after start."""
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), self.interval)
            except TimeoutError:
                self.gather()

    async def stop(self) -> None:
        """Close stdin, SIGTERM after the grace time, SIGKILL after another; collect what was written."""
        self._stopping.set()
        proc = self.proc
        if proc is not None and proc.returncode is None:
            assert proc.stdin is not None
            proc.stdin.close()
            for action in (proc.terminate, proc.kill):
                try:
                    await asyncio.wait_for(asyncio.shield(proc.wait()), self.stop_grace)
                    break
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        action()
        await asyncio.gather(*self._tasks)


# ---------------------------------------------------------------- outputs

class Output:
    """The buffer and flush loop every Telegraf output has; subclasses write one batch."""

    def __init__(self, plugin: Plugin, config: Config, log: Log) -> None:
        self.plugin = plugin
        self.opts = plugin.options
        self.name = plugin.kind
        self.log = log
        self.flush_interval = plugin.duration("flush_interval", config.agent_value("flush_interval"))
        self.batch_size = int(self.opts.get("metric_batch_size", config.agent_value("metric_batch_size")))
        limit = int(self.opts.get("metric_buffer_limit", config.agent_value("metric_buffer_limit")))
        self.buffer: collections.deque[Metric] = collections.deque(maxlen=limit)
        self.dropped = 0
        self.written = 0
        self._batch_ready = asyncio.Event()

    def add(self, metric: Metric) -> None:
        if not passes(self.opts, metric.name):
            return
        if "tagexclude" in self.opts:  # Filter.Modify: drop tags whose key matches a glob
            tags = {k: v for k, v in metric.tags.items()
                    if not any(fnmatch.fnmatchcase(k, p) for p in self.opts["tagexclude"])}
            metric = Metric(metric.name, tags, metric.fields, metric.ts_ns)
        if len(self.buffer) == self.buffer.maxlen:
            self.dropped += 1
        self.buffer.append(metric)
        if len(self.buffer) >= self.batch_size:
            self._batch_ready.set()

    async def connect(self) -> None:
        """Called once at start-up; raising StartupError stops Telegraf."""

    async def write(self, batch: list[Metric]) -> bool:
        """Deliver one batch; True when it is done with (written or rejected), False to retry."""
        raise NotImplementedError

    async def flush(self) -> None:
        if self.dropped:
            self.log("W", self.name, f"Metric buffer overflow; {self.dropped} metrics have been dropped")
            self.dropped = 0
        while self.buffer:
            batch = [self.buffer.popleft() for _ in range(min(self.batch_size, len(self.buffer)))]
            if not await self.write(batch):
                # Back to the front; what arrived meanwhile may have filled the buffer: then the
                # oldest are the ones dropped, as always.
                keep = batch[max(0, len(batch) - (self.buffer.maxlen - len(self.buffer))):]
                self.dropped += len(batch) - len(keep)
                self.buffer.extendleft(reversed(keep))
                return
            self.written += len(batch)

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            waiters = [asyncio.create_task(e.wait()) for e in (stopping, self._batch_ready)]
            await asyncio.wait(waiters, timeout=self.flush_interval,
                               return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
            self._batch_ready.clear()
            if not stopping.is_set():
                await self.flush()


class InfluxDBOutput(Output):
    """outputs.influxdb (v1, HTTP) through tigo_execd.influx."""

    def __init__(self, plugin: Plugin, config: Config, log: Log) -> None:
        super().__init__(plugin, config, log)
        self.urls = self.opts.get("urls") or ["http://localhost:8086"]
        self.database = self.opts.get("database") or "telegraf"
        self.rp = self.opts.get("retention_policy") or None
        self.timeout = plugin.duration("timeout", 5.0)
        self.create_db = not self.opts.get("skip_database_creation", False)

    def _client(self, url: str) -> Any:
        from tigo_execd.influx import Influx
        return Influx(url, self.database, self.opts.get("username") or None,
                      self.opts.get("password") or None, timeout=self.timeout)

    async def _create_database(self, client: Any) -> None:
        from tigo_execd.influx import InfluxError
        try:
            await asyncio.to_thread(client.query, f'CREATE DATABASE "{self.database}"')
            self.create_db = False
        except InfluxError as exc:
            self.log("W", self.name, f"When writing to [{client.url}]: database {self.database!r} "
                     f"creation failed: {exc}")

    async def write(self, batch: list[Metric]) -> bool:
        from tigo_execd.influx import InfluxAuthFailed, InfluxError, InfluxNoDatabase, InfluxUnreachable
        body = "".join(serialize(m) + "\n" for m in batch).encode()
        for url in self.urls:
            client = self._client(url)
            try:
                if self.create_db:
                    await self._create_database(client)
                await asyncio.to_thread(client.write, body, self.rp)
                return True
            except (InfluxUnreachable, InfluxAuthFailed) as exc:
                self.log("E", self.name, f"When writing to [{url}]: {exc}")
            except InfluxError as exc:
                if isinstance(exc, InfluxNoDatabase) and not self.opts.get("skip_database_creation"):
                    self.create_db = True
                    continue
                self.log("E", self.name, f"When writing to [{url}]: {exc}; discarding points")
                return True
        self.log("E", "agent", f"Error writing to {self.name}: could not write any address")
        return False


class MQTTOutput(Output):
    """outputs.mqtt through support/telegraf_mqtt.py (JSON serializer, topic, qos, retain)."""

    def __init__(self, plugin: Plugin, config: Config, log: Log) -> None:
        super().__init__(plugin, config, log)
        if self.opts.get("layout") != "field" and self.opts.get("data_format", "influx") != "json":
            raise ConfigError(f"{plugin.source}: outputs.mqtt data_format other than json is not emulated "
                              "(layout field uses none)")
        servers = self.opts.get("servers") or []
        m = re.fullmatch(r"(?:tcp|mqtt)://([^:/]+)(?::(\d+))?", servers[0] if servers else "")
        if not m:
            raise ConfigError(f"{plugin.source}: outputs.mqtt servers {servers!r} not emulated "
                              "(one tcp://host:port expected)")
        self.host, self.port = m[1], int(m[2] or 1883)

    def _reachable(self) -> bool:
        try:
            socket.create_connection((self.host, self.port), timeout=5).close()
            return True
        except OSError:
            return False

    async def connect(self) -> None:
        """An unreachable broker at start: one retry after 15 s, then Telegraf gives up."""
        if await asyncio.to_thread(self._reachable):
            return
        self.log("E", self.name, f"connecting to {self.host}:{self.port} failed; retrying in "
                 f"{MQTT_START_RETRY:g}s")
        await asyncio.sleep(MQTT_START_RETRY)
        if not await asyncio.to_thread(self._reachable):
            raise StartupError(f"connecting output {self.name}: network Error: "
                               f"dial tcp {self.host}:{self.port}: connection refused")

    async def write(self, batch: list[Metric]) -> bool:
        msgs = telegraf_mqtt.messages(batch, self.opts)
        try:
            await asyncio.to_thread(telegraf_mqtt.publish, msgs, self.opts, self.host, self.port)
            return True
        except (OSError, TimeoutError) as exc:
            self.log("E", "agent", f"Error writing to {self.name}: {exc}")
            return False


OUTPUTS: dict[str, type[Output]] = {"outputs.influxdb": InfluxDBOutput, "outputs.mqtt": MQTTOutput}


# ---------------------------------------------------------------- the agent

class Harness:
    """The agent: inputs feed every output's buffer; `test()` is `telegraf --test`."""

    def __init__(self, config: Config, log: Log | None = None, input_filter: list[str] | None = None,
                 stop_grace: float = STOP_GRACE,
                 on_metric: Callable[[Metric], None] | None = None) -> None:
        self.config = config
        self.log = log or Log()
        self.on_metric = on_metric
        self.collected: list[Metric] = []
        self.outputs = [OUTPUTS[p.kind](p, config, self.log) for p in config.outputs]
        plugins = [p for p in config.inputs
                   if not input_filter or p.kind.split(".", 1)[1] in input_filter]
        for p in plugins:
            if p.kind != "inputs.execd":
                raise ConfigError(f"{p.kind} is not emulated")
        self.inputs = [Execd(p, config, self.log, self._emit, stop_grace) for p in plugins]
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._use_outputs = True

    def _emit(self, metric: Metric) -> None:
        self.collected.append(metric)
        if self.on_metric is not None:
            self.on_metric(metric)
        if self._use_outputs:
            for out in self.outputs:
                out.add(metric)

    async def start(self, use_outputs: bool = True, gather_loop: bool = True) -> None:
        self._use_outputs = use_outputs
        if use_outputs:
            for out in self.outputs:
                await out.connect()
                self._tasks.append(asyncio.create_task(out.run(self._stopping)))
        started = []
        try:
            for execd in self.inputs:
                await execd.start()
                started.append(execd)
        except StartupError:
            await asyncio.gather(*(e.stop() for e in started))
            raise
        if gather_loop:
            self._tasks += [asyncio.create_task(e.run_gathers()) for e in self.inputs]

    async def stop(self) -> None:
        """Inputs first (close stdin, TERM, KILL), then one last flush of every output."""
        await asyncio.gather(*(e.stop() for e in self.inputs))
        self._stopping.set()
        await asyncio.gather(*self._tasks)
        if self._use_outputs:
            for out in self.outputs:
                await out.flush()

    async def test(self, wait: float, use_outputs: bool = False) -> list[Metric]:
        """`--test --test-wait N` (or `--once` with use_outputs): one gather now, wait, stop."""
        await self.start(use_outputs=use_outputs, gather_loop=False)
        for execd in self.inputs:
            execd.gather()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), wait)
        await self.stop()
        return self.collected

    async def run_until(self, done: asyncio.Event) -> None:
        await self.start()
        await done.wait()
        await self.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run telegraf.d files the way Telegraf would.")
    ap.add_argument("--config")
    ap.add_argument("--config-directory")
    ap.add_argument("--test", action="store_true")
    ap.add_argument("--once", action="store_true")
    ap.add_argument("--test-wait", type=float, default=0.0)
    ap.add_argument("--input-filter", help="colon-separated input plugin names")
    args = ap.parse_args(argv)

    async def run() -> int:
        try:
            config = load_config(args.config, args.config_directory)
            harness = Harness(config, input_filter=args.input_filter.split(":")
                              if args.input_filter else None,
                              on_metric=(lambda m: print(test_line(m), flush=True))
                              if args.test else None)
            if args.test or args.once:
                await harness.test(args.test_wait, use_outputs=args.once)
                return 0
            done = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, done.set)
            await harness.run_until(done)
            return 0
        except (ConfigError, StartupError) as exc:
            print(f"E! [telegraf] Error running agent: {exc}", file=sys.stderr, flush=True)
            return 1

    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
