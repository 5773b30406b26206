"""Where a taptap line is parsed and becomes a line of line protocol: one code path for every source.

Every shape taptap prints is understood: upstream (nested `gateway`/`node` objects, optional
`address` and `barcode`), the fork (`event_type`, integer ids, identities in `infrastructure_report`
events) and the fork's development branch (integer ids without `event_type`, converted exactly as
the fork's power reports). Lines that are not JSON objects (taptap's `bad tx request: Frame {...}`
debug output) are noise: skipped and counted. Lines that look like JSON but cannot be used are
invalid: counted and logged (rate-limited). The schema is the old ingest's, kept to the letter
(README, Metrics).

Two paths, one writer. `_parse` parses a line and decides the text of each measured value
(`measured`, `rssi_field`). A plain line it converted teaches its pieces, each mapped to those
texts, and a later line made only of known pieces gets its values and texts by lookups, which is
how a day of reports is converted at a fraction of the cost of parsing each. Either way the
values and texts go to the same few lines of `convert_lines`, the only code that computes and
lays out a report's fields, so the two paths cannot write a report differently.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from tigo_execd import lineproto, measurements
from tigo_execd.clock import ImplausibleTime, TimeCheck, parse_timestamp
from tigo_execd.identity.registry import (
    MAX_ID,
    MAX_NODES,
    Registry,
    address_hex_from_json,
    parse_id,
    valid_barcode,
)
from tigo_execd.log import log

MAX_SNIPPET = 160


_NAN = math.nan
# A report as convert_lines writes it: tags, timestamp (ns text), voltage_in, voltage_out and
# current (NaN when missing), then the fields current_in_a, duty_cycle, rssi, temperature_c,
# voltage_in_v and voltage_out_v as written ("" when missing).
Report = tuple[str, str, float, float, float, str, str, str, str, str, str]


def measured(value: object, prefix: str) -> tuple[float, str]:
    """A measured value and its field as written (prefix, then the value); NaN and "" when it is
    unusable. JSON integers become floats, so a field never changes type; a float is written as
    taptap printed it (repr: the shortest text that reads back as the same float).
    """
    if type(value) is float:  # orjson never yields NaN or inf
        number = value
    elif type(value) is int:  # orjson's integers fit in 64 bits: never an OverflowError
        number = float(value)
    else:
        return _NAN, ""
    return number, f"{prefix}{number!r}"


def rssi_field(value: object) -> str:
    """rssi as an integer field (`,rssi=132i`), "" unless integral and within int64 (InfluxDB
    rejects the whole line beyond)."""
    if type(value) is float and value.is_integer():
        value = int(value)
    if type(value) is int and -2 ** 63 <= value < 2 ** 63:
        return f",rssi={value}i"
    return ""


# taptap (serde) prints compact JSON with its keys in a fixed order: a power report is a head (ids,
# and upstream's identities), the timestamp, the measured members and rssi, none of which can
# hold a comma. The measured members in that order, each with what precedes its value in a line:
# the field's name after a comma, or for current_in_a (the first field) after the tags' space.
_MEASURED = (("voltage_in", ",voltage_in_v="), ("voltage_out", ",voltage_out_v="),
             ("current", " current_in_a="), ("dc_dc_duty_cycle", ",duty_cycle="),
             ("temperature", ",temperature_c="))
_TAIL = ("timestamp", *(key for key, _ in _MEASURED), "rssi")
_PLAIN_KEYS = (("event_type", "gateway", "node", *_TAIL), ("gateway", "node", *_TAIL))
PIECES_MAX = 4096  # distinct pieces remembered per member: measured values are 12-bit readings
HEAD_MAX = 256     # bytes of a head remembered (upstream's with addresses and barcode: ~130)


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
    lines_too_long: int = 0  # over linesplit.MAX_LINE, dropped unread (also in lines_invalid)
    objects: int = 0  # lines that were JSON objects, of any kind (not a tigo_ingest field)
    last_report_monotonic: float | None = None
    nodes: set[tuple[int, int]] = field(default_factory=set)


class Converter:
    """Turns taptap stdout lines into line protocol, keeping identity tags from the registry."""

    def __init__(self, measurement: str = measurements.POWER_REPORT, registry: Registry | None = None,
                 time_shift_ns: int = 0) -> None:
        self.measurement = lineproto.measurement(measurement)
        self.registry = registry or Registry()
        self.time_shift_ns = time_shift_ns
        self.counters = Counters()
        self._tags: dict[tuple[int, int], str] = {}
        self._tags_generation = -1
        self._times: dict[str | bytes, str] = {}  # timestamp text, and its piece -> ns text
        # Pieces of lines converted before (see convert_lines): heads -> tags; the pieces of
        # voltage_in, voltage_out and current -> (value, field as written), those of duty cycle,
        # temperature and rssi -> field as written (nothing is computed from them)
        self._heads: dict[bytes, str] = {}
        self._numbers: tuple[dict[bytes, tuple[float, str]], ...] = ({}, {}, {})
        self._texts: tuple[dict[bytes, str], ...] = ({}, {}, {})
        self._blank = 0

    def convert(self, raw: bytes) -> str | None:
        """One taptap stdout line (without its newline) -> one line of line protocol, or None."""
        return self.convert_lines([raw]) or None

    def convert_lines(self, lines: list[bytes]) -> str:
        """taptap stdout lines -> their line protocol, concatenated.

        The hot path. A day of taptap output is made of few distinct pieces: a head per optimizer,
        a timestamp per 20 s cycle, a few thousand measured values. A line whose head and tail
        members all come from lines that `_parse` converted and found plain gets its values and
        texts by dictionary lookups alone, without parsing it again; any other line is parsed.
        """
        out: list[str] = []
        append, heads, times = out.append, self._heads, self._times
        vins, vouts, curs = self._numbers
        duties, temps, rssis = self._texts
        parsed: list[Report] = []
        self._check_registry()
        for raw in lines:
            try:
                head, ts, vin_p, vout_p, cur_p, duty_p, temp_p, rssi_p = raw.rsplit(b",", 7)
                tags, ns = heads[head], times[ts]
                vin, vin_t = vins[vin_p]
                vout, vout_t = vouts[vout_p]
                cur, cur_t = curs[cur_p]
                duty_t, temp_t, rssi_t = duties[duty_p], temps[temp_p], rssis[rssi_p]
            except (ValueError, KeyError):  # not made of known pieces: parsed
                self._parse(raw, parsed.append)
                if not parsed:  # nothing to write
                    continue
                tags, ns, vin, vout, cur, cur_t, duty_t, rssi_t, temp_t, vin_t, vout_t = \
                    parsed.pop()
            # The one writer of both paths: measured fields as `measured` and `rssi_field` wrote
            # them, in name order with power_w (to 0.001 W) and current_out_a (to 0.0001 A), fixed
            # decimals, each only when finite; current_out_a not when voltage_out is 0 (TS4-A-S)
            power = vin * cur
            if power - power == 0.0:  # finite (inf - inf and NaN - NaN are NaN)
                power_t = f",power_w={power:.3f}"
                try:
                    amps = power / vout
                    amps_t = f",current_out_a={amps:.4f}" if amps - amps == 0.0 else ""
                except ZeroDivisionError:
                    amps_t = ""
            else:
                power_t = amps_t = ""
            line = f"{tags}{cur_t}{amps_t}{duty_t}{power_t}{rssi_t}{temp_t}{vin_t}{vout_t} {ns}\n"
            if not cur_t:  # another field comes first: its comma becomes the space after the tags
                line = f"{tags} {line[len(tags) + 1:]}"
            append(line)
        c = self.counters
        c.lines_read += len(lines) - lines.count(b"") - self._blank
        self._blank = 0
        if out:
            c.reports += len(out)
            c.last_report_monotonic = time.monotonic()
        return "".join(out)

    def _parse(self, raw: bytes, report: Callable[[Report], None]) -> None:
        """The careful path: one line parsed, classified, and a report's values and their texts
        decided one by one, then handed to `report` (convert_lines writes them)."""
        try:
            obj = orjson.loads(raw)
            event = obj.get("event_type")
        except (orjson.JSONDecodeError, AttributeError) as exc:  # not a JSON object
            self._not_an_object(raw, exc)
            return
        self.counters.objects += 1
        try:
            gw, nd = obj["gateway"], obj["node"]
            if event == "power_report" or (event is None and type(gw) is int):
                gateway, node = gw, nd  # the fork's, with or without event_type
            elif event is None:  # upstream: nested objects, identities inline when known
                gateway, node = gw["id"], nd["id"]
                if len(gw) > 1 or len(nd) > 1:
                    self._learn_upstream(gw, nd, gateway, node)
            else:
                raise LookupError
        except LookupError:  # no ids: an event of another kind, or a report without them
            if event == "infrastructure_report":
                self._infrastructure(obj)
            elif event not in (None, "power_report"):
                self._skipped(f"skipped taptap event of unknown type {str(event)[:40]!r}", "event")
            else:
                self._invalid("a report without valid gateway/node ids", raw)
            return
        except TypeError:  # ids not where they belong
            gateway = node = None
        if type(gateway) is not int or type(node) is not int:
            self._invalid("a report without valid gateway/node ids", raw)
            return
        contested = (gateway, node) in self.registry.contested
        if contested:  # it reports: the address it claims is its own (registry.py)
            self.registry.heard(gateway, node)
            self._check_registry()
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
        values = [measured(get(key), prefix) for key, prefix in _MEASURED]
        (vin, vin_t), (vout, vout_t), (cur, cur_t), (_, duty_t), (_, temp_t) = values
        rssi_t = rssi_field(get("rssi"))
        if not (vin_t or vout_t or cur_t or duty_t or temp_t or rssi_t):
            self._invalid("a report without any usable value", raw)
            return
        report((tags, ns, vin, vout, cur, cur_t, duty_t, rssi_t, temp_t, vin_t, vout_t))
        if not contested:
            self._remember(raw, obj, tags, ns, values, rssi_t)

    def _remember(self, raw: bytes, obj: dict[str, Any], tags: str, ns: str,
                  values: list[tuple[float, str]], rssi_t: str) -> None:
        """Keep the pieces of a plain report, so that lines made of them need no parsing.

        Plain: every member present, in taptap's order, as compact JSON (so each piece means the
        same wherever it appears), every value usable (so a line of pieces has all its fields).
        Each piece maps to the value and text `_parse` decided for it, so that a line of pieces
        reaches the writer in convert_lines exactly as if it had been parsed.
        """
        if tuple(obj) not in _PLAIN_KEYS or not rssi_t or not all(text for _, text in values) \
                or orjson.dumps(obj) != raw:
            return
        head, ts, *pieces = raw.rsplit(b",", 7)
        self._times[ts] = ns
        if len(self._heads) < MAX_NODES and len(head) <= HEAD_MAX:
            self._heads[head] = tags
        for numbers, piece, value in zip(self._numbers, pieces, values):
            if len(numbers) < PIECES_MAX:
                numbers[piece] = value
        (_, duty_t), (_, temp_t) = values[3:]
        for texts, piece, text in zip(self._texts, pieces[3:], (duty_t, temp_t, rssi_t)):
            if len(texts) < PIECES_MAX:
                texts[piece] = text

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
        if not (0 <= gateway <= MAX_ID and 0 <= node <= MAX_ID):
            return None
        tags = self._tag_string(gateway, node)
        if len(self._tags) < MAX_NODES:  # beyond: still written, just not remembered
            self._tags[(gateway, node)] = tags
        if len(self.counters.nodes) < MAX_NODES:
            self.counters.nodes.add((gateway, node))
        return tags

    def _learn_upstream(self, gw: dict[str, Any], node: dict[str, Any], gateway: object,
                        node_id: object) -> None:
        """The addresses and barcode an upstream report carries go to the registry."""
        if type(gateway) is not int or type(node_id) is not int \
                or not (0 <= gateway <= MAX_ID and 0 <= node_id <= MAX_ID):
            return  # a report rejected for its ids teaches nothing (nor the state file)
        if "address" in gw:
            self.registry.learn_gateway(gateway, address_hex_from_json(gw["address"]))
        if "address" in node or "barcode" in node:
            self.registry.learn_node(gateway, node_id, address_hex_from_json(node.get("address")),
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

    def _tag_string(self, gateway: int, node: int) -> str:
        tags = {"gateway_id": str(gateway), "node_id": str(node), "src": "tigo",
                **self.registry.tags(gateway, node)}
        escaped = ((k, lineproto.tag_value(v)) for k, v in sorted(tags.items()))
        return self.measurement + "".join(f",{k}={v}" for k, v in escaped if v)

    def _infrastructure(self, obj: dict[str, Any]) -> None:
        """Fork identities: gateway addresses, and each gateway's whole node table with addresses
        and barcodes (map keys are int strings; `version`, the gateway's firmware, is not kept)."""
        self.counters.infrastructure_reports += 1
        gateways, nodes = obj.get("gateways"), obj.get("nodes")
        for gw_key, info in (gateways.items() if type(gateways) is dict else ()):
            gw = parse_id(gw_key)
            if gw is not None and type(info) is dict:
                self.registry.learn_gateway(gw, address_hex_from_json(info.get("address")))
        for gw_key, table in (nodes.items() if type(nodes) is dict else ()):
            gw = parse_id(gw_key)
            if gw is None or type(table) is not dict:
                continue
            self.registry.learn_table(gw, {
                node: (address_hex_from_json(info.get("address")), valid_barcode(info.get("barcode")))
                for node_key, info in table.items()
                if (node := parse_id(node_key)) is not None and type(info) is dict})
        self._check_registry()

    def _invalid(self, why: str, raw: bytes) -> None:
        self.counters.lines_invalid += 1
        # the kind without the quoted input: hostile text must not make every line a new kind
        log.warn(f"rejected a taptap line: {why}: {_snippet(raw)}",
                 key="invalid:" + why.split("'", 1)[0][:24])

    def _skipped(self, why: str, kind: str) -> None:
        self.counters.lines_skipped += 1
        log.debug(why, key=kind)

