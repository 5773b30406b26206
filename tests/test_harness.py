"""The Telegraf harness itself, checked against Telegraf's behaviour as its source shows it
(https://github.com/influxdata/telegraf: config/config.go and config/envvar.go for the
configuration, plugins/inputs/execd and plugins/common/process for the process lifecycle,
plugins/parsers/influx for line protocol, plugins/outputs/influxdb and plugins/outputs/mqtt).

The execd commands are tiny inline Python programs, so each test controls exactly what the
"plugin" does with stdin, stdout, stderr and signals. The config and line-protocol tests are unit
tests; the ones that run the harness are marked `integration`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import telegraf_harness as th
from support.servers import free_port
from support.telegraf_envvar import MissingVariable, substitute
from support.wait import wait_until_async

PY = sys.executable


def execd(code: str, **options: object) -> str:
    """One [[inputs.execd]] table running `code` with this Python (JSON strings are TOML strings)."""
    lines = ["[[inputs.execd]]", f"  command = {json.dumps([PY, '-u', '-c', code])}"]
    lines += [f"  {k} = {json.dumps(v)}" for k, v in options.items()]
    return "\n".join(lines) + "\n"


def write_conf(tmp_path: Path, text: str, name: str = "telegraf.conf") -> Path:
    path = tmp_path / name
    path.write_text('[agent]\n  hostname = "testhost"\n  flush_interval = "200ms"\n' + text)
    return path


def harness(path: Path, **kw) -> th.Harness:
    return th.Harness(th.load_config(path, env={"PATH": "/usr/bin:/bin"}), th.Log(None), **kw)


# ---------------------------------------------------------------- config

def test_unknown_option_is_refused(tmp_path):
    path = write_conf(tmp_path, execd("pass", restart_dealy="1s"))
    with pytest.raises(th.ConfigError, match=r'fields \["restart_dealy"\], but they were not used'):
        th.load_config(path, env={})


def test_unknown_option_in_subtable_and_agent_is_refused(tmp_path):
    bad_v5 = ('[[outputs.mqtt]]\n  servers = ["tcp://127.0.0.1:1"]\n  data_format = "json"\n'
              '  [outputs.mqtt.v5]\n    message_expiry = "1m"\n    bogus = 1\n')
    with pytest.raises(th.ConfigError, match=r"v5\.bogus"):
        th.load_config(write_conf(tmp_path, execd("pass") + bad_v5), env={})
    (tmp_path / "a.conf").write_text("[agent]\n  intervall = '10s'\n" + execd("pass"))
    with pytest.raises(th.ConfigError, match="intervall"):
        th.load_config(config_directory=tmp_path, env={})


def test_env_substituted_in_strings_only(tmp_path):
    env = {"PATH": "/usr/bin", "PYBIN": PY, "EMPTY": "", "DELAY": "3s"}
    text = ('[[inputs.execd]]\n'
            '  command = ["${PYBIN}", "${UNSET}", "${UNSET:-dflt}", "${EMPTY:-dflt}", "${EMPTY-dflt}",'
            ' "x${DELAY}y"]\n'
            '  restart_delay = "${DELAY}"\n')
    (tmp_path / "a.conf").write_text(text)
    plugin = th.load_config(config_directory=tmp_path, env=env).inputs[0]
    assert plugin.options["command"] == [PY, "${UNSET}", "dflt", "dflt", "", "x3sy"]
    assert plugin.duration("restart_delay", 0) == 3.0
    # Outside a string (1.38+) a reference is not substituted: the file is not valid TOML.
    (tmp_path / "a.conf").write_text(text.replace('"${DELAY}"', "${DELAY}"))
    with pytest.raises(th.ConfigError, match="error loading config file"):
        th.load_config(config_directory=tmp_path, env=env)


def test_required_variable_missing_is_an_error(tmp_path):
    (tmp_path / "a.conf").write_text('[[inputs.execd]]\n  command = ["${NEEDED:?set NEEDED}"]\n')
    with pytest.raises(th.ConfigError, match="set NEEDED"):
        th.load_config(config_directory=tmp_path, env={})


ENV = {"SET": "v", "EMPTY": "", "lower": "l"}


@pytest.mark.parametrize("text, expected", [
    ("${SET}", "v"), ("$SET", "v"), ("$SET/x", "v/x"), ("${SET}${SET}", "vv"), ("${EMPTY}", ""),
    ("${lower}", "l"), ("${LOWER}", "${LOWER}"),                          # names are case-sensitive
    ("${UNSET}", "${UNSET}"), ("$UNSET", "$UNSET"), ("$SETx", "$SETx"),  # unset: left as written
    ("${UNSET:-d}", "d"), ("${EMPTY:-d}", "d"), ("${SET:-d}", "v"),
    ("${UNSET-d}", "d"), ("${EMPTY-d}", ""), ("${SET-d}", "v"),
    ("${SET:+a}", "a"), ("${EMPTY:+a}", ""), ("${UNSET:+a}", ""),
    ("${SET+a}", "a"), ("${EMPTY+a}", "a"), ("${UNSET+a}", ""),
    ("${EMPTY?}", ""), ("${SET:?why}", "v"),
    ("$$", "$"), ("a$$b", "a$b"), ("$${SET}", "${SET}"),                 # `$$` is a `$`
    ("$1", "$1"), ("${1}", "${1}"), ("cost 5 $", "cost 5 $"), ("^a.*$", "^a.*$"),  # no references
    ("${UNSET:-${SET}}", "v"), ("${UNSET:-<$SET>}", "<v>"),      # the word is substituted too,
    ("${UNSET:-$NOPE}x", "x"), ("${UNSET:-$1}", "$1"),           # an unset variable there is "",
    ("${UNSET:-${1}}", "${UNSET:-${1}}"),                        # a malformed `${`: kept whole
    ("${UNSET:-x}/${NOPE}", "x/"),                               # the greedy pattern's quirk
])
def test_env_substitution_follows_telegraf(text, expected):
    """Telegraf's rules for one string value: substituteEnvironmentStrict in
    https://github.com/influxdata/telegraf/blob/master/config/envvar.go and the template package
    it calls, https://github.com/compose-spec/compose-go/blob/v1.20.2/template/template.go."""
    assert substitute(text, ENV) == expected


@pytest.mark.parametrize("text, message", [
    ("${UNSET:?set UNSET}", "required variable UNSET is missing a value: set UNSET"),
    ("${EMPTY:?}", "required variable EMPTY is missing a value"),
    ("${UNSET?}", "required variable UNSET is missing a value"),
    ("x ${UNSET:-${NOPE:?inner}}", "required variable NOPE is missing a value: inner"),
])
def test_env_required_variable_missing_stops_loading(text, message):
    """The `?` forms (withRequired in
    https://github.com/compose-spec/compose-go/blob/v1.20.2/template/template.go) give an error
    that Telegraf's replacement in config/envvar.go does not swallow: Telegraf does not start."""
    with pytest.raises(MissingVariable) as err:
        substitute(text, ENV)
    assert str(err.value) == message


def test_env_substituted_in_string_values_only_never_keys_or_comments(tmp_path):
    """parseConfig in https://github.com/influxdata/telegraf/blob/master/config/config.go: BOM
    trimmed, comments removed, TOML parsed, then only the string values substituted."""
    (tmp_path / "a.conf").write_text(
        "\ufeff# ${UNSET:?} in a comment is never read\n"
        "[[inputs.execd]]\n"
        """  command = ["${SET}", '${SET}', \"\"\"${SET}\"\"\", '''${SET}''']  # ${UNSET:?}\n"""
        '  environment = ["K=${SET}"]\n'
        '  tags = { "${SET}" = "${SET}" }\n', encoding="utf-8")
    plugin = th.load_config(config_directory=tmp_path, env=ENV).inputs[0]
    assert plugin.options == {"command": ["v"] * 4, "environment": ["K=v"], "tags": {"${SET}": "v"}}


def test_directory_files_read_in_lexical_order(tmp_path):
    (tmp_path / "b.conf").write_text(execd("pass", name_override="b"))
    (tmp_path / "a.conf").write_text(execd("pass", name_override="a"))
    (tmp_path / "c.txt").write_text("not toml at all [[[")
    config = th.load_config(config_directory=tmp_path, env={})
    assert [p.options["name_override"] for p in config.inputs] == ["a", "b"]


# ---------------------------------------------------------------- line protocol

@pytest.mark.parametrize("line, expected", [
    ('m,a=1 f=1.5 123', "> m,a=1 f=1.5 123"),
    ('m f=1i,g=2u,h=t,s="q\\"b\\\\" 5', '> m f=1i,g=2u,h=true,s="q\\"b\\\\" 5'),
    ('m\\ x,t\\=k=v\\,w f=-0.5e1 -5', "> m\\ x,t\\=k=v\\,w f=-5 -5"),
    ('m,b=2,a=1 z=1,y=230.0 9', "> m,a=1,b=2 y=230,z=1 9"),
])
def test_valid_lines(line, expected):
    assert th.test_line(th.parse_line(line)) == expected


@pytest.mark.parametrize("line", [
    "m f=NaN", "m f=inf", "m f=1e999", "m f=012i", "m,a= f=1", "m,a=b=c f=1", 'm f="a\\nb"',
    "m", "m f=1 x", "m f=1 12345678901234567890", "m f=", ",a=1 f=1", 'm f="open',
])
def test_invalid_lines(line):
    with pytest.raises(th.ParseError):
        th.parse_line(line)


# ---------------------------------------------------------------- execd lifecycle

@pytest.mark.integration
def test_malformed_line_dropped_alone(tmp_path):
    code = "print('ok,n=1 v=1i'); print('bad,n=2 v=NaN'); print('ok,n=3 v=3i')"
    h = harness(write_conf(tmp_path, execd(code)))
    metrics = asyncio.run(h.test(wait=1.0))
    assert [(m.name, m.tags, m.fields) for m in metrics] == [
        ("ok", {"n": "1", "host": "testhost"}, {"v": 1}),
        ("ok", {"n": "3", "host": "testhost"}, {"v": 3})]
    errors = h.log.find("E", "inputs.execd", "metric parse error")
    assert len(errors) == 1 and "bad,n=2 v=NaN" in errors[0].message


@pytest.mark.integration
def test_stderr_prefixes_mapped_to_levels(tmp_path):
    code = ("import sys\nfor l in ['E! e1', 'W! w1', 'I! i1', 'D! d1', 'T! t1', 'plain', 'E!x']:\n"
            "    print(l, file=sys.stderr)\nsys.stdin.read()")
    h = harness(write_conf(tmp_path, execd(code)))
    asyncio.run(h.test(wait=1.0))
    got = [(r.level, r.message) for r in h.log.records if r.plugin == "inputs.execd"
           and "Process" not in r.message]
    assert got == [("E", "e1"), ("W", "w1"), ("I", "i1"), ("D", "d1"), ("T", "t1"),
                   ("E", 'stderr: "plain"'), ("E", 'stderr: "E!x"')]


@pytest.mark.integration
def test_restart_after_restart_delay_and_stop_on_error(tmp_path):
    code = "import sys; print('run v=1i'); sys.exit(3)"
    h = harness(write_conf(tmp_path, execd(code, restart_delay="1s")))

    async def scenario():
        await h.start(use_outputs=False)
        execd_ = h.inputs[0]
        await wait_until_async(lambda: len(execd_.pids) >= 3, 10, "two restarts")
        await h.stop()
        return execd_

    e = asyncio.run(scenario())
    exits = h.log.find("E", "inputs.execd", "exited: exit status 3")
    assert exits and exits[0].message == f"Process {PY} exited: exit status 3"
    runs = [m.ts_ns for m in h.collected]
    gaps = [(b - a) / 1e9 for a, b in itertools.pairwise(runs)]
    assert len(runs) >= 3 and all(0.95 <= g < 2.0 for g in gaps), gaps
    assert e.returncodes[:2] == [3, 3]

    h = harness(write_conf(tmp_path, execd(code, restart_delay="100ms", stop_on_error=True)))
    asyncio.run(h.test(wait=1.0))
    assert len(h.inputs[0].pids) == 1


@pytest.mark.integration
def test_first_spawn_failure_stops_startup(tmp_path):
    conf = write_conf(tmp_path, '[[inputs.execd]]\n  command = ["/nonexistent/tigo-execd", "run"]\n')
    with pytest.raises(th.StartupError, match="failed to start process"):
        asyncio.run(harness(conf).test(wait=0.1))
    result = subprocess.run([PY, th.__file__, "--config", str(conf), "--test"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "Error running agent" in result.stderr


@pytest.mark.integration
def test_stdin_signal_one_newline_per_gather(tmp_path):
    # One metric per byte received, carrying the byte's value: shows exactly what Telegraf wrote.
    code = ("import sys\nwhile (b := sys.stdin.buffer.read(1)):\n"
            "    print(f'got b={b[0]}i', flush=True)")
    h = harness(write_conf(tmp_path, execd(code, signal="STDIN", interval="500ms")))

    async def scenario():
        t0 = time.time_ns()
        await h.start(use_outputs=False)
        await wait_until_async(lambda: len(h.collected) >= 2, 5, "two gathers")
        await h.stop()
        return t0

    t0 = asyncio.run(scenario())
    first = (h.collected[0].ts_ns - t0) / 1e9
    assert 0.4 <= first < 1.0, first  # about one interval after start, not at once
    assert all(m.fields == {"b": 10} for m in h.collected)

    h = harness(write_conf(tmp_path, execd(code, signal="STDIN", interval="1h")))
    assert [m.fields for m in asyncio.run(h.test(wait=0.5))] == [{"b": 10}]  # --test: at once


@pytest.mark.integration
def test_stop_schedule_close_stdin_then_term_then_kill(tmp_path):
    """EOF at once; SIGTERM a grace time later to who ignores EOF; SIGKILL another grace time later
    to who ignores TERM. Telegraf's grace is 5 s (the harness's default); 1 s here spares the wait."""
    grace = 1.0
    common = ("import signal, sys, time\n"
              "def say(what): print(f'ev,p={P} what=\"{what}\"', flush=True)\n")
    polite = "P = 'a'\n" + common + "say('ready'); sys.stdin.read(); say('eof')\n"
    deaf = ("P = 'b'\n" + common + "signal.signal(signal.SIGTERM, lambda *_: (say('term'), sys.exit(0)))\n"
            "say('ready'); sys.stdin.read(); say('eof')\nwhile True: time.sleep(1)\n")
    stubborn = ("P = 'c'\n" + common + "signal.signal(signal.SIGTERM, lambda *_: say('term'))\n"
                "say('ready'); sys.stdin.read(); say('eof')\nwhile True: time.sleep(1)\n")
    conf = write_conf(tmp_path, execd(polite) + execd(deaf) + execd(stubborn))
    assert {e.stop_grace for e in harness(conf).inputs} == {5.0}  # the default: Telegraf's
    h = harness(conf, stop_grace=grace)

    async def scenario():
        await h.start(use_outputs=False)
        await wait_until_async(lambda: len(h.collected) >= 3, 10, "three programs ready")
        t0 = time.time_ns()
        await h.stop()
        return t0, time.time_ns()

    t0, t_end = asyncio.run(scenario())
    ev = {(m.tags["p"], m.fields["what"]): (m.ts_ns - t0) / 1e9 for m in h.collected}
    assert ev[("a", "eof")] < grace / 2 and ("a", "term") not in ev
    assert ev[("b", "eof")] < grace / 2 and 0.8 * grace <= ev[("b", "term")] - ev[("b", "eof")] <= 1.6 * grace
    assert ev[("c", "eof")] < grace / 2 and 0.8 * grace <= ev[("c", "term")] - ev[("c", "eof")] <= 1.6 * grace
    assert 1.9 * grace <= (t_end - t0) / 1e9 <= 3.5 * grace
    assert [e.returncodes[-1] for e in h.inputs] == [0, 0, -signal.SIGKILL]


# ---------------------------------------------------------------- outputs

class Gate:
    """A TCP port that refuses connections until opened, then forwards to InfluxDB."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target = target_port
        self.server: asyncio.Server | None = None

    async def open(self) -> None:
        self.server = await asyncio.start_server(self._pipe, "127.0.0.1", self.port)

    async def _pipe(self, reader, writer) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)

        async def copy(r, w):
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
            w.close()

        await asyncio.gather(copy(reader, up_w), copy(up_r, writer), return_exceptions=True)

    async def close(self) -> None:
        if self.server:
            self.server.close()


def test_influxdb_output_buffers_while_unreachable_and_routes_by_namepass(tmp_path, influxd,
                                                                           influx_db):
    gate = Gate(influxd.port)
    code = ("import sys\nfor i in range(8):\n    print(f'keep,i={i} v={i}i {i}000000000')\n"
            "print('other v=1i 1000000000')\nsys.stdin.read()")
    text = ('[global_tags]\n  site = "roof"\n' + execd(code) +
            f'[[outputs.influxdb]]\n  urls = ["http://127.0.0.1:{gate.port}"]\n'
            f'  database = "{influx_db.db}"\n  namepass = ["ke*"]\n  metric_buffer_limit = 5\n')
    h = harness(write_conf(tmp_path, text))

    def stored():
        series = influx_db.query('SELECT * FROM "keep"')
        return series[0]["values"] if series else []

    async def scenario():
        await h.start()
        await wait_until_async(lambda: h.log.find("E", "agent", "could not write any address"), 5,
                    "a failed flush while InfluxDB is unreachable")
        assert h.outputs[0].written == 0 and not stored()
        await gate.open()
        await wait_until_async(lambda: h.outputs[0].written == 5, 5, "the buffer written")
        await h.stop()
        await gate.close()

    asyncio.run(scenario())
    rows = stored()
    columns = influx_db.query('SELECT * FROM "keep"')[0]["columns"]
    got = [dict(zip(columns, r)) for r in rows]
    assert [r["i"] for r in got] == ["3", "4", "5", "6", "7"]  # oldest three dropped (limit 5)
    assert all(r["host"] == "testhost" and r["site"] == "roof" for r in got)
    assert influx_db.query('SELECT * FROM "other"') == []  # namepass kept it out


def test_mqtt_output_publishes_retained_json(tmp_path, mosquitto):
    import paho.mqtt.subscribe as subscribe

    code = "import sys; print('tigo_health,x=1 status=\"OK\",code=0i 1767225612000000000'); sys.stdin.read()"
    text = (execd(code) + f'[[outputs.mqtt]]\n  servers = ["tcp://127.0.0.1:{mosquitto.port}"]\n'
            '  topic = "tigo/{{ .Name }}"\n  retain = true\n  qos = 1\n  data_format = "json"\n'
            '  json_transformation = "$merge([fields, {\\"host\\": tags.host}])"\n')
    h = harness(write_conf(tmp_path, text))
    asyncio.run(h.test(wait=0.5, use_outputs=True))  # --once
    msg = subscribe.simple("tigo/tigo_health", hostname="127.0.0.1", port=mosquitto.port,
                           retained=True)  # a retained message arrives to a late subscriber
    assert msg.retain and msg.payload == b'{"code":0,"host":"testhost","status":"OK"}\n'


@pytest.mark.integration
def test_cli_test_mode_prints_sorted_lines(tmp_path):
    code = "print('m,z=1,a=2 y=2i,b=1.5 42', flush=True); import sys; sys.stdin.read()"
    conf = write_conf(tmp_path, execd(code))
    result = subprocess.run([PY, th.__file__, "--config", str(conf), "--test", "--test-wait", "0.5"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "> m,a=2,host=testhost,z=1 b=1.5,y=2i 42\n"
