"""Telegraf's `outputs.mqtt` with `data_format = "json"`, emulated for tests (Telegraf cannot be installed).

Follows Telegraf's plugins/serializers/json and plugins/outputs/mqtt
(https://github.com/influxdata/telegraf): one compact JSON object per metric (`fields`, `name`,
`tags`, `timestamp`), written by Go's encoding/json (keys sorted, `<>&` as \\u003c-style escapes,
230.0 printed as `230`, NaN/Inf fields left out), the timestamp divided by `json_timestamp_units`
(default 1s, rounded down to a power of ten like Telegraf does), `json_transformation` applied with
a real JSONata (jsonata-python), a trailing newline, and the topic rendered from the `topic`
template.
Layouts `non-batch` (Telegraf's default: one message per metric) and `field` (Telegraf 1.26+: one
message per field, to `<topic>/<field name>`, the raw value as Go's internal.ToString writes it:
a string as it is, numbers in Go's shortest 'f' form, `true`/`false`; `data_format` is not used).

Simplifications, said plainly: `json_timestamp_format` is not supported (raises); the topic template
knows `{{ .Name }}`, `{{ .PluginName }}`, `{{ .Tag "k" }}` and `{{ .Field "k" }}` only; strings in
the `conf` mappings must already have their `${VAR}` references expanded (that is config loading,
done by the caller).

API (`conf` is one `[[outputs.mqtt]]` table as tomllib returns it):
    Metric(name, tags, fields, ts_ns)                  one metric as Telegraf holds it
    go_json(value) -> str                              Go encoding/json text of a decoded JSON value
    serialize_json(name, tags, fields, ts_ns, conf)    -> bytes, what the serializer returns
    transform(doc, expression)                         -> the JSONata result
    topic(conf, metric) -> str                         the rendered topic
    passes(conf, name) -> bool                         the namepass / namedrop filter
    messages(metrics, conf) -> [(topic, payload)]      what the output publishes, in order
    publish(msgs, conf, host, port, timeout=10)        publish with the conf's qos / retain / credentials
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, NamedTuple

import jsonata

_DURATION = re.compile(r"^(\d+)(ns|us|µs|ms|s|m|h)$")
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
            "m": 60_000_000_000, "h": 3_600_000_000_000}
_TEMPLATE_ACTION = re.compile(r"{{-?\s*(.*?)\s*-?}}")
_TEMPLATE_CALL = re.compile(r'^\.(Tag|Field)\s+"([^"]*)"$')
_GO_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t",
                     "\b": "\\b", "\f": "\\f"}
_GO_HTML_ESCAPES = {"<", ">", "&", "\u2028", "\u2029"}


class Metric(NamedTuple):
    name: str
    tags: dict[str, str]
    fields: dict[str, Any]
    ts_ns: int


def _go_float(value: float) -> str:
    """strconv.AppendFloat as encoding/json calls it: shortest digits, 'e' only outside [1e-6, 1e21)."""
    if not math.isfinite(value):
        raise ValueError(f"json: unsupported value: {value!r}")  # Go's error for NaN/Inf
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21):
        text = repr(value)  # Python's shortest repr uses the same 'e' form: 1e+21, 1.5e-07
        return re.sub(r"e-0(\d)$", r"e-\1", text)  # Go trims e-07 to e-7
    return format(Decimal(repr(value)).normalize(), "f")


def _go_string(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch in _GO_SHORT_ESCAPES:
            out.append(_GO_SHORT_ESCAPES[ch])
        elif ord(ch) < 0x20 or ch in _GO_HTML_ESCAPES:
            out.append(f"\\u{ord(ch):04x}")
        elif 0xD800 <= ord(ch) <= 0xDFFF:  # a lone surrogate is invalid UTF-8 for Go
            out.append("\\ufffd")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def go_json(value: Any) -> str:
    """json.Marshal of a decoded value: compact, object keys sorted, Go number and string forms."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, str):
        return _go_string(value)
    if isinstance(value, Mapping):
        items = sorted(value.items(), key=lambda kv: kv[0].encode())
        return "{" + ",".join(f"{_go_string(k)}:{go_json(v)}" for k, v in items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(go_json(v) for v in value) + "]"
    raise TypeError(f"json: unsupported type {type(value).__name__}")


def _timestamp_divisor(units: str | None) -> int:
    """Telegraf rounds json_timestamp_units down to a power of ten (e.g. 5ms -> 1ms)."""
    if not units:
        return _UNIT_NS["s"]
    match = _DURATION.match(units)
    if not match:
        raise ValueError(f"unsupported json_timestamp_units {units!r}")
    wanted = int(match[1]) * _UNIT_NS[match[2]]
    divisor = 1
    while divisor * 10 <= wanted:
        divisor *= 10
    return divisor


def _go_div(a: int, b: int) -> int:
    """Go's integer division truncates toward zero (Python's // floors)."""
    q = abs(a) // b
    return q if a >= 0 else -q


def transform(doc: Any, expression: str) -> Any:
    """Evaluate a JSONata expression; undefined is an error, as in Telegraf's serializer."""
    result = jsonata.Jsonata(expression).evaluate(doc)
    if result is None:
        raise ValueError("jsonata: no results found (maybe configured for batch mode?)")
    return result


def serialize_json(name: str, tags: Mapping[str, str], fields: Mapping[str, Any], ts_ns: int,
                   conf: Mapping[str, Any]) -> bytes:
    """What Telegraf's JSON serializer returns for one metric (with its trailing newline)."""
    if conf.get("json_timestamp_format"):
        raise NotImplementedError("json_timestamp_format is not emulated")
    doc: Any = {
        "fields": {k: v for k, v in fields.items() if not (isinstance(v, float) and not math.isfinite(v))},
        "name": name,
        "tags": dict(tags),
        "timestamp": _go_div(ts_ns, _timestamp_divisor(conf.get("json_timestamp_units"))),
    }
    if conf.get("json_transformation"):
        doc = transform(doc, conf["json_transformation"])
    return (go_json(doc) + "\n").encode()


def topic(conf: Mapping[str, Any], metric: Metric) -> str:
    """Render the `topic` template; empty segments vanish; an empty topic becomes the metric name."""

    def action(match: re.Match[str]) -> str:
        expr = match[1]
        if expr in (".Name", ".PluginName"):
            return metric.name
        call = _TEMPLATE_CALL.match(expr)
        if call and call[1] == "Tag":
            return metric.tags.get(call[2], "")
        if call and call[1] == "Field":
            value = metric.fields.get(call[2])
            return "" if value is None else str(value)
        raise NotImplementedError(f"topic template action {{{{ {expr} }}}} is not emulated")

    rendered = _TEMPLATE_ACTION.sub(action, conf.get("topic") or "{{ .Name }}")
    return "/".join(p for p in rendered.split("/") if p) or metric.name


def passes(conf: Mapping[str, Any], name: str) -> bool:
    """namepass / namedrop: glob patterns (`*`, `?`) on the metric name."""
    if "namepass" in conf and not any(fnmatch.fnmatchcase(name, p) for p in conf["namepass"]):
        return False
    return not any(fnmatch.fnmatchcase(name, p) for p in conf.get("namedrop", []))


def go_to_string(value: Any) -> str:
    """Telegraf's internal.ToString for a field value (the `field` layout's payload)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format(Decimal(repr(value)).normalize(), "f")  # FormatFloat(v, 'f', -1, 64)
    return str(value)


def messages(metrics: Iterable[Metric], conf: Mapping[str, Any]) -> list[tuple[str, bytes]]:
    """(topic, payload) per metric (layout non-batch) or per field (layout field) that passes
    the filters."""
    layout = conf.get("layout", "non-batch")
    chosen = [m for m in metrics if passes(conf, m.name)]
    if layout == "field":
        return [(f"{topic(conf, m)}/{name}", go_to_string(value).encode())
                for m in chosen for name, value in m.fields.items()]
    if layout != "non-batch":
        raise NotImplementedError(f"layout {layout!r} is not emulated")
    return [(topic(conf, m), serialize_json(m.name, m.tags, m.fields, m.ts_ns, conf)) for m in chosen]


def publish(msgs: Iterable[tuple[str, bytes]], conf: Mapping[str, Any], host: str, port: int,
            timeout: float = 10.0) -> None:
    """Connect, publish each message with the conf's qos and retain, wait for the acks, disconnect."""
    import paho.mqtt.client as mqtt

    protocol = mqtt.MQTTv5 if str(conf.get("protocol", "3.1.1")) == "5" else mqtt.MQTTv311
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=conf.get("client_id", ""),
                         protocol=protocol)
    if conf.get("username"):
        client.username_pw_set(conf["username"], conf.get("password") or None)
    client.connect(host, port, keepalive=int(conf.get("keep_alive", 30)))
    client.loop_start()  # paho's network thread: the library needs one to complete the handshakes
    try:
        for topic_name, payload in msgs:
            info = client.publish(topic_name, payload, qos=int(conf.get("qos", 0)),
                                  retain=bool(conf.get("retain", False)))
            info.wait_for_publish(timeout)
            if not info.is_published():
                raise TimeoutError(f"MQTT publish to {topic_name!r} not acknowledged in {timeout} s")
    finally:
        client.disconnect()
        client.loop_stop()
