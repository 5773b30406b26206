"""Hypothesis strategies for fuzzing the converter: hostile bytes, JSON and taptap-shaped lines.

Valid reports come with what the converter must make of them (tags, exact timestamp, values),
derived here without the converter's code: the timestamp text is printed from an instant (the
converter parses text back to an instant), the barcode check letter is a bitwise CRC (the project
uses a table), so a property compares two independent derivations.
"""

from __future__ import annotations

import datetime as dt
import json
import operator
from dataclasses import dataclass, field
from typing import Any

import orjson
from hypothesis import strategies as st

from tigo_execd.clock import FLOOR_NS

NS = 1_000_000_000
MISSING = object()  # a key left out of a generated object
VALUE_KEYS = ("voltage_in", "voltage_out", "current", "dc_dc_duty_cycle", "temperature", "rssi")
TAPTAP_KEYS = ("gateway", "node", "id", "address", "barcode", "event_type", "timestamp", "gateways",
               "nodes", "version", "power_report", "infrastructure_report", *VALUE_KEYS)
NOISE = (b"bad tx request: Frame { address: From(GatewayID(0x1201)), frame_type: "
         b"Type::RECEIVE_RESPONSE, payload: [65, 255, 24, 64, 135] }",
         b"wrong addr: Frame { ... }", b"bad tx response: Frame { ... }")


@dataclass(frozen=True)
class Raw:
    """Number text written into JSON as it is (1E5, -0, 1e400, 18446744073709551616, NaN)."""

    text: str


def dumps(obj: Any, ascii_only: bool = False, spaced: bool = False) -> bytes:
    """JSON text of obj; MISSING values drop their key, Raw is copied, strings optionally \\u-escaped
    (astral characters then become surrogate pairs, which the parser must join)."""
    if isinstance(obj, dict):
        sep, colon = (b", ", b": ") if spaced else (b",", b":")
        items = (dumps(k, ascii_only) + colon + dumps(v, ascii_only, spaced)
                 for k, v in obj.items() if v is not MISSING)
        return b"{" + sep.join(items) + b"}"
    if isinstance(obj, list):
        return b"[" + b",".join(dumps(v, ascii_only, spaced) for v in obj if v is not MISSING) + b"]"
    if isinstance(obj, Raw):
        return obj.text.encode()
    if isinstance(obj, str) and ascii_only:
        return json.dumps(obj).encode()
    if type(obj) is int:
        return str(obj).encode()  # beyond 64 bits too (orjson.dumps refuses those)
    return orjson.dumps(obj)


# ---------------------------------------------------------------- hostile building blocks

@st.composite
def rarely(draw: st.DrawFn, common: st.SearchStrategy, rare: st.SearchStrategy,
           odds: int = 9) -> Any:
    """common, or about once in odds + 1 draws rare (one_of would pick either half the time)."""
    return draw(rare if draw(st.integers(0, odds)) == odds else common)


HOSTILE_CHARS = ("\x00\x01\x08\t\n\x0b\x0c\r\x1b\x1f\x7f\x85\"\\,= '{}[]:#\xa0\u2028\u2029\ufeff"
                 "\u200b\u00b2\u0661\u00e9\U0001F600\U00010000\U0010FFFD")
hostile_text = rarely(
    st.one_of(st.text(st.sampled_from(HOSTILE_CHARS), max_size=24),
              st.text(st.characters(exclude_categories=("Cs",)), max_size=24)),  # no surrogates
    st.builds(operator.mul, st.sampled_from(["x", "\\", '"', ",= ", "\n", "\x00", "\U0001F600"]),
              st.integers(1_000, 100_000)))  # huge
EXTREMES = (0, 0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1e-300, 1e308, -1e308,
            1.7976931348623157e308, -1.7976931348623157e308, 1e15, -1e15, 1e16, 2 ** 53 + 1,
            2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1, -2 ** 63, 255, 256, -1, 0.5, 132.5, 1e-7)
# Number text JSON parsers disagree on or refuse (the last two are beyond 64 bits: floats).
RAW_NUMBERS = tuple(Raw(t) for t in ("1E5", "-0", "1e400", "-1e400", "1e-400", "0.1e1", "01", "1.",
                                     ".5", "+1", "NaN", "Infinity", "-Infinity", "0x10",
                                     "1" * 400, "0." + "0" * 400 + "1",
                                     "18446744073709551616", "-9223372036854775809"))
numbers = rarely(st.sampled_from(EXTREMES), st.one_of(st.integers(-2 ** 63, 2 ** 64 - 1),
                                                     st.floats(allow_nan=False, allow_infinity=False)),
                 1)  # the extremes half the time
any_numbers = rarely(numbers | st.integers(-10 ** 30, 10 ** 30), st.sampled_from(RAW_NUMBERS), 4)
scalars = st.one_of(st.none(), st.booleans(), any_numbers, hostile_text)
keys = st.one_of(st.sampled_from(TAPTAP_KEYS), hostile_text)
any_json = st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                        st.dictionaries(keys, kids, max_size=4)),
                        max_leaves=12)
wrong = st.one_of(st.just(MISSING), any_numbers, hostile_text, st.none(), st.booleans(), any_json)


# ---------------------------------------------------------------- taptap's own values

ids = st.integers(0, 65535)
gateway_ids = st.integers(0, 32767)
node_ids = st.integers(1, 65535)
voltage_in = st.integers(0, 4095).map(lambda r: r / 20)
voltage_out = st.one_of(st.just(0.0), st.integers(0, 4095).map(lambda r: r / 10))
current = st.integers(0, 4095).map(lambda r: r / 200)
duty = st.integers(0, 255).map(lambda r: r / 255)
temperature = st.integers(-2048, 2047).map(lambda r: r / 10)
rssi = st.integers(0, 255)
VALUES = dict(zip(VALUE_KEYS, (voltage_in, voltage_out, current, duty, temperature, rssi)))
TIGO_PREFIX = b"\x04\xc0\x5b"
tigo_addresses = st.binary(min_size=5, max_size=5).map(lambda b: TIGO_PREFIX + b)
addresses = st.one_of(tigo_addresses, st.binary(min_size=8, max_size=8))


def check_letter(addr: bytes) -> str:
    """CRC-4 (x^4 + x + 1, initial 2, MSB first) over the address, bit by bit, as a letter."""
    crc = 2
    for byte in addr:
        for bit in range(7, -1, -1):
            feedback = (crc >> 3) ^ (byte >> bit) & 1
            crc = (crc << 1) & 0xF
            if feedback:
                crc ^= 0x3
    return "GHJKLMNPRSTVWXYZ"[crc]


def barcode(addr: bytes) -> str | None:
    """The label barcode of a Tigo address (None for other prefixes)."""
    if not addr.startswith(TIGO_PREFIX):
        return None
    digits = addr[3:].hex().upper()
    return f"{digits[0]}-{digits[1:].lstrip('0')}{check_letter(addr)}"


def colon(addr: bytes) -> str:
    return addr.hex(":").upper()


# ---------------------------------------------------------------- timestamps

_EPOCH = dt.datetime(1970, 1, 1)


def rfc3339(ns: int, offset_min: int, digits: int, sep: str = "T", zulu: bool = True) -> str:
    """The instant ns as local time at offset_min with `digits` fractional digits (truncated)."""
    secs, frac = divmod(ns, NS)
    t = _EPOCH + dt.timedelta(seconds=secs + offset_min * 60)
    text = f"{t.year:04d}-{t.month:02d}-{t.day:02d}{sep}{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
    if digits:
        text += "." + f"{frac:09d}"[:digits]
    if offset_min == 0 and zulu:
        return text + "Z"
    sign = "-" if offset_min < 0 else "+"
    return text + f"{sign}{abs(offset_min) // 60:02d}:{abs(offset_min) % 60:02d}"


def truncated(ns: int, digits: int) -> int:
    """ns with only `digits` fractional digits kept: what a timestamp text of that precision holds."""
    step = 10 ** (9 - digits)
    return ns - ns % step


# Reports are dated by the host clock: a plausible time is one the clock check (clock.py) lets
# through, from the release to the host's now. The host clock is faked (FAKE_NOW) so that the
# examples do not depend on the day the tests run.
FAKE_NOW = FLOOR_NS + 400 * 86400 * NS
plausible_ns = st.integers(FLOOR_NS, FAKE_NOW)
# Every instant InfluxDB can store whose local time has a four-digit year at any offset.
any_ns = st.integers(-9_223_372_036_854_775_806 + 86400 * NS, 9_223_372_036_854_775_806 - 86400 * NS)
offsets = st.one_of(st.sampled_from([0, 60, -300, 330, 345, -570, 840, -720]),
                    st.integers(-23 * 60 - 59, 23 * 60 + 59))
precisions = st.one_of(st.sampled_from([0, 3, 6, 9]), st.integers(0, 9))


@dataclass
class Stamp:
    text: str
    ns: int  # the exact instant the text names


@st.composite
def stamps(draw: st.DrawFn, instants: st.SearchStrategy = plausible_ns) -> Stamp:
    """A valid RFC 3339 timestamp of any precision and offset, with the instant it names."""
    ns, offset, digits = draw(instants), draw(offsets), draw(precisions)
    style = draw(st.integers(0, 11))  # one draw for three choices: fewer draws, faster examples
    text = rfc3339(ns, offset, digits, "TTt "[style % 4], zulu=style % 3 > 0)
    if style == 11:
        text = text.lower()  # `t` and `z` are RFC 3339 too
    return Stamp(text, truncated(ns, digits))


@st.composite
def hostile_timestamps(draw: st.DrawFn) -> object:
    """Timestamps of every shape: valid, out-of-range fields, malformed text, other JSON types."""
    kind = draw(st.integers(0, 7))
    if kind >= 3:
        return draw(stamps(rarely(plausible_ns, any_ns, 2))).text
    if kind == 1:  # right shape, fields anywhere (month 13, hour 24, offset +25:61, year 0 ...)
        y, mo, d, h, mi, s = (draw(st.integers(0, top)) for top in (9999, 13, 32, 25, 61, 61))
        text = f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}"
        text += draw(st.sampled_from(["", "."])) + draw(st.text("0123456789", max_size=12))
        return text + draw(st.one_of(st.sampled_from(["Z", "z", "", "+00:00", "-00:00", "+0530",
                                                      "+25:00", "-12:61", "+05", " Z", "Z "]),
                                     st.text("+-:0123456789", max_size=7)))
    if kind == 2:
        text = draw(stamps(any_ns)).text
        i = draw(st.integers(0, len(text)))
        return text[:i] + draw(hostile_text) + text[i + draw(st.integers(0, 3)):]
    return draw(wrong)


# ---------------------------------------------------------------- hostile taptap-shaped lines

id_values = rarely(ids, st.one_of(st.integers(-2 ** 63, 2 ** 64 - 1),
                                  st.sampled_from([-1, 65536, 1.0, "1", True, None])))
address_arrays = rarely(addresses.map(list),
                        st.one_of(st.lists(st.integers(-1, 300), max_size=9), addresses.map(colon),
                                  st.lists(any_json, max_size=8), wrong), 2)
colon_addresses = rarely(addresses.map(colon),
                         st.one_of(addresses.map(lambda a: a.hex(":")), addresses.map(list),
                                   addresses.map(lambda a: colon(a) + " "), wrong), 2)
valid_barcodes = tigo_addresses.map(barcode)
barcodes = rarely(valid_barcodes, st.one_of(
    valid_barcodes.map(lambda b: b[:-1] + ("G" if b[-1] == "H" else "H")),  # wrong check letter
    valid_barcodes.map(str.lower), valid_barcodes.map(lambda b: b.replace("-", "-0")),
    valid_barcodes.map(lambda b: f" {b}"), valid_barcodes.map(lambda b: b + ",x=y"), wrong), 2)
map_keys = rarely(ids.map(str), st.one_of(
    st.sampled_from(["\u00b2", "\u0661", "00001", "65536", "-1", " 1", "1 ", "", "1e3",
                     "99999999999999999999"]), hostile_text), 3)
taptap_values = st.tuples(*VALUES.values())
_extreme_keys = rarely(st.just(()), st.lists(st.sampled_from(VALUE_KEYS), min_size=1, max_size=3), 2)


extra_keys = rarely(st.just({}), st.dictionaries(keys, any_json, min_size=1, max_size=2), 4)


VALUE_PATHS = tuple((k,) for k in (*VALUE_KEYS, "timestamp"))
UPSTREAM_PATHS = st.sampled_from(VALUE_PATHS + (
    ("gateway",), ("node",), ("gateway", "id"), ("node", "id"), ("gateway", "address"),
    ("node", "address"), ("node", "barcode")))
FORK_PATHS = st.sampled_from(VALUE_PATHS + (("event_type",), ("gateway",), ("node",)))
INFRASTRUCTURE_PATHS = st.sampled_from((("event_type",), ("gateways",), ("nodes",)))


# Helpers that take an object are plain functions given `draw`, not strategies: a strategy built
# per call is validated per call, which made examples noticeably slower.
def broken(draw: st.DrawFn, obj: dict, paths: st.SearchStrategy) -> dict:
    """obj with up to three of its slots (paths of keys) missing or replaced by anything."""
    for _ in range(draw(st.sampled_from([0, 0, 0, 0, 1, 1, 2, 3]))):
        *parents, key = draw(paths)
        target = obj
        for p in parents:
            target = target.get(p) if isinstance(target, dict) else None
        if isinstance(target, dict):
            target[key] = draw(wrong)
    return obj | draw(extra_keys)


@st.composite
def hostile_report(draw: st.DrawFn, shared_stamps: tuple[str, ...] = ()) -> dict:
    """A power report in either format, values in taptap's ranges or extreme, identities hostile,
    a few slots broken, keys in any order. Reports of one cycle share a timestamp (shared_stamps):
    the converter's fast path needs a timestamp it has seen."""
    body: dict[str, Any] = dict(zip(VALUE_KEYS, draw(taptap_values)))
    for key in draw(_extreme_keys):
        body[key] = draw(numbers)  # extreme, but a JSON number
    shape = draw(st.integers(0, 31))  # format, identities present, shared timestamp
    body["timestamp"] = draw(st.sampled_from(shared_stamps) if shared_stamps and shape & 8
                             else hostile_timestamps())
    if shape & 1:  # upstream
        gw, nd = {"id": draw(id_values)}, {"id": draw(id_values)}
        if shape & 2:
            gw["address"] = draw(address_arrays)
        if shape & 4:
            nd["address"] = draw(address_arrays)
        if shape & 16:
            nd["barcode"] = draw(barcodes)
        obj = {"gateway": gw, "node": nd} | body
        paths = UPSTREAM_PATHS
    else:
        obj = {"event_type": "power_report", "gateway": draw(id_values),
               "node": draw(id_values)} | body
        paths = FORK_PATHS
    obj = broken(draw, obj, paths)
    if draw(st.integers(0, 4)) == 0:  # any key order
        obj = dict(draw(st.permutations(list(obj.items()))))
    return obj


_gateway_info = st.fixed_dictionaries({"address": colon_addresses, "version": hostile_text})
_node_info = st.fixed_dictionaries({"address": colon_addresses, "barcode": barcodes})
_gateways = st.dictionaries(map_keys, rarely(_gateway_info, wrong, 4), max_size=3)
_nodes = st.dictionaries(map_keys, rarely(st.dictionaries(map_keys, rarely(_node_info, wrong, 4),
                                                          max_size=4), wrong, 4), max_size=3)


@st.composite
def hostile_infrastructure(draw: st.DrawFn) -> dict:
    """A fork infrastructure report with hostile keys, addresses, barcodes and versions."""
    obj = {"event_type": "infrastructure_report", "gateways": draw(_gateways), "nodes": draw(_nodes)}
    return broken(draw, obj, INFRASTRUCTURE_PATHS)


def mangled(draw: st.DrawFn, line: bytes) -> bytes:
    """The line as it is, or cut short, with bytes inserted or with surrounding whitespace."""
    kind = draw(st.integers(0, 15))
    if kind == 0:
        return line[:draw(st.integers(0, len(line)))]
    if kind == 1:
        i = draw(st.integers(0, len(line)))
        return line[:i] + draw(st.binary(min_size=1, max_size=4)) + line[i:]
    if kind == 2:
        return draw(st.sampled_from([b" ", b"\t", b"\r", b"\x0c"])) + line + \
            draw(st.sampled_from([b"", b" ", b"\r"]))
    return line


@st.composite
def taptap_lines(draw: st.DrawFn, shared_stamps: tuple[str, ...] = ()) -> bytes:
    """One line of hostile taptap-shaped output (reports, identities, other events, noise)."""
    kind = draw(st.integers(0, 9))
    if kind == 9:
        return draw(st.sampled_from(NOISE + (b"", b"   ")))
    if kind == 8:
        obj: Any = {"event_type": draw(hostile_text | any_json)} | draw(extra_keys)
    elif kind == 7:
        obj = draw(hostile_infrastructure())
    else:
        obj = draw(hostile_report(shared_stamps))
    style = draw(st.integers(0, 7))
    line = dumps(obj, ascii_only=style & 1 == 1, spaced=style == 6)
    return mangled(draw, line)


@st.composite
def taptap_chunks(draw: st.DrawFn, max_size: int = 6) -> list[bytes]:
    """A chunk of hostile taptap output lines, many of them sharing one or two timestamps (split
    again where inserted bytes put a newline, as the pipeline would)."""
    shared = tuple(draw(st.lists(stamps().map(lambda s: s.text), min_size=1, max_size=2)))
    return split_lines(draw(st.lists(taptap_lines(shared), min_size=1, max_size=max_size)))


def nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth if depth % 2 else b"[" * depth + b"]" * depth


def splice(line: bytes, insert: bytes, at: int, cut: int) -> bytes:
    at %= len(line) + 1
    return line[:at] + insert + line[at + cut:]


arbitrary_bytes = rarely(st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=300).map(lambda b: b"{" + b),
    st.binary(max_size=60).map(lambda b: b'{"event_type":"power_report","gateway":1,"node":2,'
                               b'"timestamp":"' + b + b'","rssi":1}'),
    st.builds(splice, st.deferred(lambda: valid_reports(noise=False).map(lambda v: v.lines[-1])),
              st.binary(max_size=4), st.integers(0, 400), st.integers(0, 4)),  # a report, bytes changed
    st.integers(1, 5000).map(nested)),
    st.integers(1_000, 200_000).map(lambda n: b"{" + b"\xff" * n), 4)


def split_lines(chunks: list[bytes]) -> list[bytes]:
    """Lines as the pipeline hands them to the converter: split at newlines, no newline inside."""
    return b"\n".join(chunks).split(b"\n")


# ---------------------------------------------------------------- valid reports

@dataclass
class Valid:
    """A valid taptap report (one or two lines with noise) and what the converter must write."""

    lines: list[bytes]
    values: dict[str, float | int]   # the report's six values
    ns: int
    tags: dict[str, str]
    infrastructure: int = 0          # infrastructure report lines among `lines`
    obj: dict = field(default_factory=dict)  # the power report itself


@st.composite
def identities(draw: st.DrawFn) -> tuple[bytes | None, bytes | None, bool]:
    """(gateway address, node address, barcode printed?) as taptap may know them."""
    gw_addr = draw(st.none() | addresses)
    node_addr = draw(st.none() | addresses)
    with_barcode = node_addr is not None and barcode(node_addr) is not None and draw(st.booleans())
    return gw_addr, node_addr, with_barcode


@st.composite
def valid_reports(draw: st.DrawFn, noise: bool = True) -> Valid:
    gw, node = draw(gateway_ids), draw(node_ids)
    stamp = draw(stamps())
    values = {k: draw(v) for k, v in VALUES.items()}
    gw_addr, node_addr, with_barcode = draw(identities())
    lines: list[bytes] = []
    infra = 0
    if draw(st.booleans()):  # upstream: identities inline, address omitted when unknown
        g: dict[str, Any] = {"id": gw}
        n: dict[str, Any] = {"id": node}
        if gw_addr:
            g["address"] = list(gw_addr)
        if node_addr and (not with_barcode or draw(st.booleans())):
            n["address"] = list(node_addr)
        if with_barcode:
            n["barcode"] = barcode(node_addr)  # type: ignore[arg-type]
        head: dict[str, Any] = {"gateway": g, "node": n}
    else:  # fork: identities from an infrastructure report printed earlier
        head = {"event_type": "power_report", "gateway": gw, "node": node}
        if gw_addr or node_addr:
            infra_obj: dict[str, Any] = {"event_type": "infrastructure_report", "gateways": {},
                                         "nodes": {}}
            if gw_addr:
                infra_obj["gateways"][str(gw)] = {"address": colon(gw_addr),
                                                  "version": "Mgate Version G8.59\rJul  6 2020\r"}
            if node_addr:
                info = {"address": colon(node_addr)}
                if with_barcode:
                    info["barcode"] = barcode(node_addr)  # type: ignore[assignment]
                infra_obj["nodes"][str(gw)] = {str(node): info}
            lines += [dumps(infra_obj)] * draw(st.integers(1, 2))  # twice with a state file
            infra = len(lines)
    obj = head | {"timestamp": stamp.text} | values
    lines.append(dumps(obj))
    if noise:
        for _ in range(draw(st.integers(0, 3))):
            lines.insert(draw(st.integers(0, len(lines))),
                         draw(st.sampled_from(NOISE + (b"", b" \t", b'{"event_type":"x"}',
                                                       b'{"gateway":'))))
    tags = {"src": "tigo", "gateway_id": str(gw), "node_id": str(node)}
    if gw_addr:
        tags["gateway_addr"] = gw_addr.hex()
    if node_addr:
        tags["node_addr"] = node_addr.hex()
        if barcode(node_addr):
            tags["barcode"] = barcode(node_addr)  # type: ignore[assignment]
    return Valid(lines, values, stamp.ns, tags, infra, obj)
