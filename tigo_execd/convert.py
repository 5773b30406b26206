"""Where a taptap line is parsed and becomes a line of line protocol: one code path for every source.

Both taptap formats are understood: upstream (nested `gateway`/`node` objects, optional `address`
and `barcode`) and the fork (`event_type`, integer ids, identities in `infrastructure_report`
events). Lines that are not JSON objects (taptap's `bad tx request: Frame {...}` debug output) are
noise: skipped and counted. Lines that look like JSON but cannot be used are invalid: counted and
logged (rate-limited). The schema is the old ingest's, kept to the letter (README, Metrics).

Two paths, one text: `_parse` (with `_fields`) parses a line and converts it value by value; it is
where the text of every field is decided. A plain line it converted teaches its pieces, and a later
line made only of known pieces is written from them by lookups (`convert_lines`), which is how a
day of reports is converted at a fraction of the cost of parsing each.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import time
from dataclasses import dataclass, field

import orjson

from tigo_execd import lineproto
from tigo_execd.clock import ImplausibleTime, TimeCheck
from tigo_execd.log import log
from tigo_execd.registry import MAX_NODES, Registry, address_hex, valid_barcode

NS = 1_000_000_000
_TS = re.compile(rb"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?"
                 rb"(?:[Zz]|([+-])(\d\d):?(\d\d))")
_EPOCH = dt.date(1970, 1, 1).toordinal()
# InfluxDB stores int64 nanoseconds; it rejects the extremes of the range.
_TS_MIN, _TS_MAX = -9_223_372_036_854_775_806, 9_223_372_036_854_775_806
MAX_SNIPPET = 160


def parse_timestamp(text: str) -> int:
    """RFC 3339 text with 0-9 fractional digits and `Z` or any offset -> exact epoch nanoseconds.

    Python's datetime keeps microseconds only, so the fraction is carried as an integer.
    Raises ValueError for anything else, including impossible dates and out-of-range instants.
    """
    m = _TS.fullmatch(text.encode("ascii", "replace"))
    if not m:
        raise ValueError(f"timestamp {text[:40]!r} is not RFC 3339")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    frac, sign, off_h, off_m = m.group(7), m.group(8), m.group(9), m.group(10)
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError(f"timestamp {text!r} has an impossible time of day")
    try:
        days = dt.date(year, month, day).toordinal() - _EPOCH
    except ValueError:
        raise ValueError(f"timestamp {text!r} has an impossible date") from None
    seconds = days * 86400 + hour * 3600 + minute * 60 + second
    if sign:
        oh, om = int(off_h), int(off_m)
        if oh > 23 or om > 59:
            raise ValueError(f"timestamp {text!r} has an impossible UTC offset")
        seconds -= (1 if sign == b"+" else -1) * (oh * 3600 + om * 60)
    ns = seconds * NS + (int(frac.ljust(9, b"0")) if frac else 0)
    if not _TS_MIN <= ns <= _TS_MAX:
        raise ValueError(f"timestamp {text!r} is outside the range InfluxDB can store")
    return ns


def _num(value: object) -> float | None:
    """A measured value as float (JSON integers too, so field types never change), else None."""
    t = type(value)
    if t is float:
        return value  # type: ignore[return-value]  # orjson never yields NaN or inf
    if t is int:
        f = float(value)  # type: ignore[arg-type]
        return f if math.isfinite(f) else None
    return None


# taptap (serde) prints compact JSON with its keys in a fixed order: a power report is a head (ids,
# and upstream's identities) followed by these seven members, none of which can hold a comma.
_TAIL = ("timestamp", "voltage_in", "voltage_out", "current", "dc_dc_duty_cycle", "temperature",
         "rssi")
_PLAIN_KEYS = (("event_type", "gateway", "node", *_TAIL), ("gateway", "node", *_TAIL))
_FIELD_OF = {"voltage_in": "voltage_in_v", "voltage_out": "voltage_out_v",
             "current": "current_in_a", "dc_dc_duty_cycle": "duty_cycle",
             "temperature": "temperature_c", "rssi": "rssi"}
PIECES_MAX = 4096  # distinct pieces remembered per member: measured values are 12-bit readings
HEAD_MAX = 256     # bytes of a head remembered (upstream's with addresses and barcode: ~130)
VALUE_MAX = 1e6    # |voltage|, |current| of a remembered piece: power and current_out stay finite


def _snippet(raw: bytes) -> str:
    text = raw[:MAX_SNIPPET].decode("utf-8", "replace")
    return text + ("..." if len(raw) > MAX_SNIPPET else "")


@dataclass
class Counters:
    """Cumulative counts, reported in the `tigo_ingest` self-metrics."""

    lines_read: int = 0
    reports: int = 0
    lines_skipped: int = 0
    lines_invalid: int = 0
    infrastructure_reports: int = 0
    reports_clock_rejected: int = 0  # reports not written: dated implausibly (clock.py)
    last_report_monotonic: float | None = None
    nodes: set[tuple[int, int]] = field(default_factory=set)


class Converter:
    """Turns taptap stdout lines into line protocol, keeping identity tags from the registry."""

    def __init__(self, measurement: str = "tigo_power_report", registry: Registry | None = None,
                 time_shift_ns: int = 0) -> None:
        self.measurement = lineproto.measurement(measurement)
        self.registry = registry or Registry()
        self.time_shift_ns = time_shift_ns
        self.counters = Counters()
        self._tags: dict[tuple[int, int], str] = {}
        self._tags_generation = -1
        self._times: dict[str | bytes, str] = {}  # timestamp text, and its piece -> ns text
        # Pieces of lines converted before (see convert_lines): heads -> tags; each value member
        # of the tail -> (value, its field as written)
        self._heads: dict[bytes, str] = {}
        self._values: tuple[dict[bytes, tuple[float, str]], ...] = tuple({} for _ in _TAIL[1:])
        self._blank = 0

    def convert(self, raw: bytes) -> str | None:
        """One taptap stdout line (without its newline) -> one line of line protocol, or None."""
        return self.convert_lines([raw]) or None

    def convert_lines(self, lines: list[bytes]) -> str:
        """taptap stdout lines -> their line protocol, concatenated.

        The hot path. A day of taptap output is made of few distinct pieces: a head per optimizer,
        a timestamp per 20 s cycle, a few thousand measured values. A line whose head and tail
        members all come from lines that `_parse` converted and found plain is converted by
        dictionary lookups alone, without parsing it again; any other line is parsed.
        """
        out: list[str] = []
        append, heads, times = out.append, self._heads, self._times
        vins, vouts, curs, duties, temps, rssis = self._values
        self._check_registry()
        for raw in lines:
            try:
                head, ts, vin, vout, cur, duty, temp, rssi = raw.rsplit(b",", 7)
                tags, ns = heads[head], times[ts]
                vin, t_vin = vins[vin]
                vout, t_vout = vouts[vout]
                cur, t_cur = curs[cur]
                t_duty, t_temp, t_rssi = duties[duty][1], temps[temp][1], rssis[rssi][1]
            except (ValueError, KeyError):  # not made of known pieces
                self._parse(raw, append)
                continue
            # computed as in _fields: power_w to 0.001 W, current_out_a to 0.0001 A, fixed decimals
            power = vin * cur
            amps = f",current_out_a={power / vout:.4f}" if vout else ""
            append(f"{tags} {t_cur}{amps},{t_duty},power_w={power:.3f},{t_rssi},{t_temp},{t_vin},"
                   f"{t_vout} {ns}\n")
        c = self.counters
        c.lines_read += len(lines) - lines.count(b"") - self._blank
        self._blank = 0
        if out:
            c.reports += len(out)
            c.last_report_monotonic = time.monotonic()
        return "".join(out)

    def _parse(self, raw: bytes, append) -> None:  # type: ignore[no-untyped-def]
        """The careful path: one line parsed, classified and converted value by value."""
        try:
            obj = orjson.loads(raw)
            event = obj.get("event_type")
        except (orjson.JSONDecodeError, AttributeError) as exc:  # not a JSON object
            self._not_an_object(raw, exc)
            return
        try:
            if event == "power_report":
                gateway, node = obj["gateway"], obj["node"]
            elif event is None:  # upstream: nested objects, identities inline when known
                gw, nd = obj["gateway"], obj["node"]
                gateway, node = gw["id"], nd["id"]
                if len(gw) > 1 or len(nd) > 1:
                    self._learn_upstream(gw, nd, gateway, node)
            elif event == "infrastructure_report":
                self._infrastructure(obj)
                return
            else:
                self._skipped(f"skipped taptap event of unknown type {str(event)[:40]!r}", "event")
                return
        except (KeyError, TypeError, IndexError):  # ids missing, or not where they belong
            gateway = node = None
        if type(gateway) is not int or type(node) is not int:
            self._invalid("a report without valid gateway/node ids", raw)
            return
        tags = self._tags.get((gateway, node)) or self._new_node(gateway, node)
        if tags is None:
            self._invalid("a report with gateway/node ids out of range", raw)
            return
        try:
            ns = self._timestamp(obj.get("timestamp"))
        except ImplausibleTime:  # counted and logged as such
            return
        except ValueError as exc:
            self._invalid(str(exc), raw)
            return
        get = obj.get
        fields = self._fields(get("voltage_in"), get("voltage_out"), get("current"),
                              get("dc_dc_duty_cycle"), get("temperature"), get("rssi"))
        if not fields:
            self._invalid("a report without any usable value", raw)
            return
        append(f"{tags} {fields} {ns}\n")
        self._remember(raw, obj, tags, ns, fields)

    def _remember(self, raw: bytes, obj: dict, tags: str, ns: str, fields: str) -> None:
        """Keep the pieces of a plain report, so that lines made of them need no parsing.

        Plain: every member present, in taptap's order, as compact JSON (so each piece means the
        same wherever it appears), values that `_fields` wrote in full and whose products stay
        finite. The pieces map to what `_fields` wrote, so both paths write the same line.
        """
        if tuple(obj) not in _PLAIN_KEYS:
            return
        values = [obj[key] for key in _TAIL[1:]]
        vin, vout, cur, *_, rssi = values
        if not (all(type(v) is float for v in values[:-1]) and type(rssi) is int
                and rssi < 2 ** 63 and abs(vin) <= VALUE_MAX and abs(cur) <= VALUE_MAX
                and (vout == 0 or 1 / VALUE_MAX <= abs(vout) <= VALUE_MAX)
                and orjson.dumps(obj) == raw):
            return
        head, ts, *pieces = raw.rsplit(b",", 7)
        written = {field.partition("=")[0]: field for field in fields.split(",")}
        self._times[ts] = ns
        if len(self._heads) < MAX_NODES and len(head) <= HEAD_MAX:
            self._heads[head] = tags
        for table, piece, key, value in zip(self._values, pieces, _TAIL[1:], values):
            if len(table) < PIECES_MAX:
                table[piece] = (value, written[_FIELD_OF[key]])

    def _check_registry(self) -> None:
        """Forget tag strings (and the heads that map to them) when the registry learnt something."""
        if self._tags_generation != self.registry.generation:
            self._tags.clear()
            self._heads.clear()
            self._tags_generation = self.registry.generation

    def _not_an_object(self, raw: bytes, exc: Exception) -> None:
        """Blank lines are no lines, text is noise (taptap's debug output), the rest is invalid."""
        text = raw.strip()
        if not text:
            self._blank += bool(raw)  # empty lines are not counted as read at all
        elif text[0] not in b"{[":
            self._skipped(f"skipped a line that is not taptap JSON: {_snippet(text)}", "noise")
        elif isinstance(exc, orjson.JSONDecodeError):
            self._invalid(f"not valid JSON ({exc})", text)
        else:
            self._invalid("JSON that is not an object", text)

    def _new_node(self, gateway: int, node: int) -> str | None:
        """Tag string of a node not in the cache (None for ids out of range), noting it as seen."""
        if not (0 <= gateway <= 65535 and 0 <= node <= 65535):
            return None
        tags = self._tag_string(gateway, node)
        if len(self._tags) < MAX_NODES:  # beyond: still written, just not remembered
            self._tags[(gateway, node)] = tags
        if len(self.counters.nodes) < MAX_NODES:
            self.counters.nodes.add((gateway, node))
        return tags

    def _learn_upstream(self, gw: dict, node: dict, gateway: object, node_id: object) -> None:
        """The addresses and barcode an upstream report carries go to the registry."""
        if type(gateway) is not int or type(node_id) is not int \
                or not (0 <= gateway <= 65535 and 0 <= node_id <= 65535):
            return  # a report rejected for its ids teaches nothing (nor the state file)
        if "address" in gw:
            self.registry.learn_gateway(gateway, address_hex(gw["address"]))
        if "address" in node or "barcode" in node:
            self.registry.learn_node(gateway, node_id, address_hex(node.get("address")),
                                     valid_barcode(node.get("barcode")))
        self._check_registry()

    time_check: TimeCheck | None = None  # set by `run` for sources dated by this host's clock

    def _timestamp(self, text: object) -> str:
        """The report's time as line protocol text (cached: a 20 s cycle shares one timestamp).

        With a time check, an implausible time raises ImplausibleTime and is never cached, so
        each report carrying it is judged again and writing resumes with the first sane one.
        A cached time was plausible when first seen; only a step of the host clock can change
        that verdict (the floor is fixed). A step is noticed at the next new time (within one
        20 s cycle) and empties the cache, so every time is judged again against the new clock;
        until then only reports of the cycle in progress, dated before the step, hit the cache.
        """
        if type(text) is not str:
            raise ValueError("a report without a timestamp")
        cached = self._times.get(text)
        if cached is not None:
            return cached
        ns = parse_timestamp(text) + self.time_shift_ns
        check = self.time_check
        if check is not None:
            if check.stepped():
                self._times.clear()
            if not check.plausible(ns):
                self.counters.reports_clock_rejected += 1
                raise ImplausibleTime(text)
        if len(self._times) > 512:
            self._times.clear()
        text_ns = self._times[text] = str(ns)
        return text_ns

    @staticmethod
    def _fields(vin: object, vout: object, cur: object, duty: object, temp: object,
                rssi: object) -> str:
        """The schema's fields from whatever values a report has; a missing one drops only itself."""
        vin, vout, cur, duty, temp = _num(vin), _num(vout), _num(cur), _num(duty), _num(temp)
        power = vin * cur if vin is not None and cur is not None else None
        if power is not None and not math.isfinite(power):
            power = None
        parts = []
        if cur is not None:
            parts.append(f"current_in_a={cur!r}")
        if power is not None and vout:
            out = power / vout
            if math.isfinite(out):
                parts.append(f"current_out_a={out:.4f}")
        if duty is not None:
            parts.append(f"duty_cycle={duty!r}")
        if power is not None:
            parts.append(f"power_w={power:.3f}")
        if (type(rssi) is int or (type(rssi) is float and rssi.is_integer())) \
                and -2 ** 63 <= rssi < 2 ** 63:  # InfluxDB rejects the whole line beyond int64
            parts.append(f"rssi={int(rssi)}i")
        if temp is not None:
            parts.append(f"temperature_c={temp!r}")
        if vin is not None:
            parts.append(f"voltage_in_v={vin!r}")
        if vout is not None:
            parts.append(f"voltage_out_v={vout!r}")
        return ",".join(parts)

    def _tag_string(self, gateway: int, node: int) -> str:
        tags = {"gateway_id": str(gateway), "node_id": str(node), "src": "tigo",
                **self.registry.tags(gateway, node)}
        escaped = ((k, lineproto.tag_value(v)) for k, v in sorted(tags.items()))
        return self.measurement + "".join(f",{k}={v}" for k, v in escaped if v)

    def _infrastructure(self, obj: dict) -> None:
        """Fork identities: gateway addresses, node addresses and barcodes (map keys are int strings)."""
        self.counters.infrastructure_reports += 1
        gateways, nodes = obj.get("gateways"), obj.get("nodes")
        for gw_key, info in (gateways.items() if type(gateways) is dict else ()):
            gw = _int_key(gw_key)
            if gw is not None and type(info) is dict:
                self.registry.learn_gateway(gw, address_hex(info.get("address")))
        for gw_key, table in (nodes.items() if type(nodes) is dict else ()):
            gw = _int_key(gw_key)
            if gw is None or type(table) is not dict:
                continue
            for node_key, info in table.items():
                node = _int_key(node_key)
                if node is not None and type(info) is dict:
                    self.registry.learn_node(gw, node, address_hex(info.get("address")),
                                             valid_barcode(info.get("barcode")))
        self._check_registry()

    def _invalid(self, why: str, raw: bytes) -> None:
        self.counters.lines_invalid += 1
        # the kind without the quoted input: hostile text must not make every line a new kind
        log.warn(f"rejected a taptap line: {why}: {_snippet(raw)}",
                 key="invalid:" + why.split("'", 1)[0][:24])

    def _skipped(self, why: str, kind: str) -> None:
        self.counters.lines_skipped += 1
        log.debug(why, key=kind)


def _int_key(key: str) -> int | None:
    ok = key.isascii() and key.isdigit() and len(key) <= 5  # int() refuses "²" (a digit too)
    return int(key) if ok and int(key) <= 65535 else None
