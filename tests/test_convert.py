"""Conversion rules of the ingest core: both formats, the schema to the letter, timestamps, hostile input."""

from __future__ import annotations

import ast
import inspect
import math

import orjson
import pytest

from support.paths import DATA
from support.taptap_lines import infrastructure_report, power_report
from tigo_execd import lineproto
from tigo_execd.clock import parse_timestamp
from tigo_execd.ingest import convert
from tigo_execd.ingest.convert import Converter

WORKED = (b'{"gateway":{"id":4609},"node":{"id":116},"timestamp":"2024-08-24T09:16:41.686961-05:00",'
          b'"voltage_in":30.6,"voltage_out":30.2,"current":6.94,"dc_dc_duty_cycle":1.0,'
          b'"temperature":26.8,"rssi":132}')


def convert_all(lines, conv=None):
    conv = conv or Converter()
    return conv, [out for line in lines if (out := conv.convert(line))]


def test_worked_example_of_the_old_ingest_without_its_float_noise():
    # SEED-INVENTORY.md: same tags and fields, exact timestamp, computed values rounded.
    out = Converter().convert(WORKED)
    assert out == ("tigo_power_report,gateway_id=4609,node_id=116,src=tigo current_in_a=6.94,"
                   "current_out_a=7.0319,duty_cycle=1.0,power_w=212.364,rssi=132i,temperature_c=26.8,"
                   "voltage_in_v=30.6,voltage_out_v=30.2 1724509001686961000\n")


def test_upstream_identity_tags_and_missing_current_out():
    _, out = convert_all((DATA / "taptap-upstream.jsonl").read_bytes().splitlines())
    assert len(out) == 10
    assert out[8].startswith("tigo_power_report,barcode=4-A2346FZ,gateway_addr=04c05b300002be16,"
                             "gateway_id=4609,node_addr=04c05b4000a2346f,node_id=2,src=tigo ")
    # node 3: no barcode in the report, but its address gives it; voltage_out 0 -> no current_out_a
    assert out[9].startswith("tigo_power_report,barcode=4-A23471V,gateway_addr=04c05b300002be16,"
                             "gateway_id=4609,node_addr=04c05b4000a23471,node_id=3,src=tigo ")
    assert "current_out_a" not in out[9]
    assert "temperature_c=-2.5" in out[9]


def test_fork_joins_identities_from_infrastructure_report_and_counts_noise():
    conv, out = convert_all((DATA / "taptap-fork.jsonl").read_bytes().splitlines())
    c = conv.counters
    assert (c.lines_read, c.reports, c.lines_skipped, c.lines_invalid, c.infrastructure_reports) == \
        (10, 7, 1, 0, 2)
    assert out[0].startswith("tigo_power_report,barcode=4-A2346FZ,gateway_addr=04c05b300002be16,"
                             "gateway_id=4609,node_addr=04c05b4000a2346f,node_id=2,src=tigo ")
    assert out[0].endswith(" 1743700782862954593\n")  # nine fractional digits kept exactly
    # gateway 4610 is in no infrastructure report: ids only
    assert out[5].startswith("tigo_power_report,gateway_id=4610,node_id=2,src=tigo ")
    assert out[6].endswith(" 1743700803000000000\n")  # no fractional digits, Z
    assert ",node_id=40001," in out[6]


def test_barcode_that_arrives_late_tags_later_reports():
    power = power_report(5, 1, "2025-01-01T12:00:00Z")
    infra = infrastructure_report({1: {5: {"address": "04:C0:5B:40:00:A2:34:6F", "barcode": "4-A2346FZ"}}})
    conv = Converter()
    assert "barcode" not in conv.convert(power)
    assert conv.convert(infra) is None
    assert "barcode=4-A2346FZ" in conv.convert(power)


@pytest.mark.parametrize("text, ns", [
    ("2024-08-24T09:16:41-05:00", 1724509001_000000000),
    ("2024-08-24T14:16:41Z", 1724509001_000000000),
    ("2024-08-24T14:16:41.6Z", 1724509001_600000000),
    ("2024-08-24T14:16:41.686Z", 1724509001_686000000),
    ("2024-08-24T14:16:41.686961+00:00", 1724509001_686961000),
    ("2024-08-24T16:16:41.686961123+02:00", 1724509001_686961123),
    ("2024-08-24t14:16:41.000000001z", 1724509001_000000001),
    ("2024-08-24T19:46:41.5+05:30", 1724509001_500000000),
    ("2024-08-24 14:16:41Z", 1724509001_000000000),
    ("1970-01-01T00:00:00Z", 0),
    ("1969-12-31T23:59:59.999999999Z", -1),
])
def test_timestamps_of_every_precision_and_offset(text, ns):
    assert parse_timestamp(text) == ns


@pytest.mark.parametrize("text", ["", "2024-08-24", "2024-08-24T14:16:41", "2024-02-30T00:00:00Z",
                                  "2024-08-24T24:00:00Z", "2024-08-24T14:16:41.1234567890Z",
                                  "2024-08-24T14:16:41+24:00", "9999-01-01T00:00:00Z",
                                  "2024-08-24T14:16:41Z junk", "२०२४-08-24T14:16:41Z"])
def test_bad_timestamps_are_refused(text):
    with pytest.raises(ValueError):
        parse_timestamp(text)


def report(**over) -> bytes:
    """A fork power report of round values; `name=...` leaves a member out."""
    return power_report(**{"node": 3, "gateway": 7, "timestamp": "2025-04-03T17:20:03Z",
                           "voltage_in": 30.0, "voltage_out": 30.0, "current": 1.0,
                           "temperature": 20.0, "rssi": 100, **over})


@pytest.mark.parametrize("line, why", [
    (b"{not json", "invalid"), (b"[1,2,3]", "invalid"), (b'{"a":1e999}', "invalid"),
    (b"{\"gateway\":\xff\xfe}", "invalid"), (report(timestamp=...), "invalid"),
    (report(timestamp=12345), "invalid"), (report(node=...), "invalid"), (report(gateway="7"), "invalid"),
    (report(node=True), "invalid"), (report(node=-1), "invalid"), (report(gateway=2**40), "invalid"),
    (report(voltage_in=..., voltage_out=..., current=..., dc_dc_duty_cycle=..., temperature=...,
            rssi=...), "invalid"),
    (b"bad tx request: Frame { address: From(GatewayID(0x1201)) }", "skipped"),
    (b"wrong addr: Frame { ... }", "skipped"),
    (orjson.dumps({"event_type": "topology_report", "x": 1}), "skipped"),
])
def test_unusable_lines_are_counted_never_written(line, why):
    conv = Converter()
    assert conv.convert(line) is None
    c = conv.counters
    assert (c.lines_invalid, c.lines_skipped) == ((1, 0) if why == "invalid" else (0, 1))


def test_a_missing_value_keeps_the_other_fields():
    out = Converter().convert(report(current=..., rssi="strong", temperature=None))
    assert out is not None
    fields = out.split(" ")[1]
    assert fields == "duty_cycle=1.0,voltage_in_v=30.0,voltage_out_v=30.0"


def test_integers_stay_floats_and_rssi_stays_integer():
    out = Converter().convert(report(voltage_in=30, current=2, rssi=101.0, dc_dc_duty_cycle=1))
    fields = dict(kv.split("=") for kv in out.split(" ")[1].split(","))
    assert fields["voltage_in_v"] == "30.0" and fields["current_in_a"] == "2.0"
    assert fields["rssi"] == "101i" and fields["duty_cycle"] == "1.0"
    assert fields["power_w"] == "60.000" and fields["current_out_a"] == "2.0000"  # fixed decimals


class Counting(Converter):
    """Counts the lines parsed: the others were made of known pieces."""

    parsed = 0

    def _parse(self, *args) -> None:  # type: ignore[no-untyped-def]
        self.parsed += 1
        super()._parse(*args)


def test_extreme_numbers_never_make_inf_or_nan():
    conv = Counting()
    line = report(voltage_in=1e300, current=1e300, voltage_out=1e-320)
    tiny = report(voltage_in=1e6, current=1e6, voltage_out=5e-324)  # power finite, current_out not
    out = conv.convert_lines([line, tiny, line, tiny])  # the second time made of known pieces
    assert conv.parsed == 2
    assert "inf" not in out.lower() and "nan" not in out.lower()
    first, second, *again = out.splitlines()
    assert again == [first, second]
    assert "power_w" not in first and "current_out_a" not in first
    assert "voltage_in_v=1e+300" in first
    assert "power_w=1000000000000.000" in second and "current_out_a" not in second


def test_lines_made_of_known_pieces_skip_parsing_and_write_the_same():
    conv = Counting()
    a, b = report(voltage_in=30.55, current=4.955), report(node=4, voltage_out=0.0, rssi=99)
    mixed = b",".join(a.rsplit(b",", 7)[:3] + b.rsplit(b",", 7)[3:])  # a's head, b's current..rssi
    first = conv.convert_lines([a, b])
    again = conv.convert_lines([a, b, mixed])
    assert conv.parsed == 2  # taught by the first two; the rest made of their pieces
    assert again.startswith(first)
    assert again == first + Converter().convert_lines([a, b, mixed]).split("\n", 2)[2]
    assert "node_id=3," in again.split("\n")[2] and "current_out_a" not in again.split("\n")[2]


def test_a_line_of_known_pieces_has_the_field_texts_the_parsing_path_decided(monkeypatch):
    """Structural: no field text is formatted anew for a line of known pieces. Changing how
    `measured` and `rssi_field` write a value changes both paths' lines alike."""
    real_measured, real_rssi = convert.measured, convert.rssi_field

    def measured(value: object, prefix: str) -> tuple[float, str]:
        number, text = real_measured(value, prefix)
        return number, text and text + "01"  # 30.6 -> 30.601: the same value, written otherwise

    def rssi_field(value: object) -> str:
        text = real_rssi(value)
        return text and text[:-1] + "0i"  # 132i -> 1320i

    monkeypatch.setattr(convert, "measured", measured)
    monkeypatch.setattr(convert, "rssi_field", rssi_field)
    conv = Counting()
    first, second = conv.convert(WORKED), conv.convert(WORKED)
    assert conv.parsed == 1  # the second made of the first's pieces
    assert first == second == (
        "tigo_power_report,gateway_id=4609,node_id=116,src=tigo current_in_a=6.9401,"
        "current_out_a=7.0319,duty_cycle=1.001,power_w=212.364,rssi=1320i,temperature_c=26.801,"
        "voltage_in_v=30.601,voltage_out_v=30.201 1724509001686961000\n")


FIELDS = ("current_in_a", "current_out_a", "duty_cycle", "power_w", "rssi", "temperature_c",
          "voltage_in_v", "voltage_out_v")


def test_each_field_is_written_in_one_place_for_both_paths():
    """Structural: each field of the schema is spelled `name=` in exactly one string of
    convert.py (docstrings aside), and the computed ones in convert_lines, where the parsing
    path hands its values: there is one writer to change, never one per path."""
    tree = ast.parse(inspect.getsource(convert))
    docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}

    def strings(node: ast.AST) -> list[str]:
        return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant)
                and isinstance(n.value, str) and id(n) not in docstrings]

    everywhere = strings(tree)
    for name in FIELDS:
        assert sum(text.count(f"{name}=") for text in everywhere) == 1, name
    writer = next(node for node in ast.walk(tree)
                  if isinstance(node, ast.FunctionDef) and node.name == "convert_lines")
    assert all(any(f"{name}=" in text for text in strings(writer))
               for name in ("power_w", "current_out_a"))


def test_pieces_are_learnt_from_compact_taptap_json_only():
    # a duplicated member shifts the pieces: "voltage_in":1.0 would pass for a timestamp
    dup = (b'{"event_type":"power_report","gateway":1,"node":2,"timestamp":"2026-11-27T00:00:0%dZ",'
           b'"voltage_in":1.0,"voltage_in":2.0,"voltage_out":2.0,"current":1.0,'
           b'"dc_dc_duty_cycle":1.0,"temperature":20.0,"rssi":100}')
    spaced = report().replace(b",", b", ")
    # extra members are allowed in upstream's objects, but a long head would cost memory
    long = orjson.dumps({"gateway": {"id": 1, "x": "y" * 50_000}, "node": {"id": 2},
                         **orjson.loads(report(event_type=..., gateway=..., node=...))})
    lines = [dup % 1, dup % 2, dup % 1, spaced, spaced, long, long]
    conv = Converter()
    out = conv.convert_lines(lines).split("\n")
    assert [line.rsplit(" ", 1)[1] for line in out[:3]] == \
        ["1795737601000000000", "1795737602000000000", "1795737601000000000"]
    assert out[3] == out[4] and out[5] == out[6] and len(out) == 8
    assert not conv._heads


def test_hostile_barcode_never_becomes_a_tag():
    hostile = 'x y,z=1\n"\\'
    upstream = orjson.dumps({"gateway": {"id": 1}, "node": {"id": 2, "barcode": hostile},
                             "timestamp": "2025-01-01T00:00:00Z", "rssi": 5})
    out = Converter().convert(upstream)
    assert out == "tigo_power_report,gateway_id=1,node_id=2,src=tigo rssi=5i 1735689600000000000\n"


def test_measurement_override_is_escaped_and_bad_ones_refused():
    out = Converter("solar panels,roof").convert(report())
    assert out.startswith("solar\\ panels\\,roof,gateway_id=7,")
    for bad in ("", "#comment", "a\nb", "back\\slash"):
        with pytest.raises(ValueError):
            Converter(bad)


@pytest.mark.parametrize("value, expected", [
    ("plain", "plain"), ("a b", "a\\ b"), ("a,b", "a\\,b"), ("a=b", "a\\=b"),
    ("new\nline\r", "newline"), ("trailing\\", "trailing/"), ("\\,", "/\\,"), ("\x00\x1f", None),
    ("", None), ("Süd-Dach ☀", "Süd-Dach\\ ☀"),
])
def test_tag_values_are_escaped_for_telegraf_and_influx(value, expected):
    assert lineproto.tag_value(value) == expected


def test_generic_line_formatting():
    text = lineproto.line("m", {"b": "2", "a": "x y", "empty": ""},
                          {"s": 'say "hi"\\\n', "i": 3, "f": 1.5, "nan": math.nan, "t": True,
                           "none": None}, 17)
    assert text == 'm,a=x\\ y,b=2 s="say \\"hi\\"\\\\ ",i=3i,f=1.5,t=true 17\n'
    assert lineproto.line("m", {}, {"nan": math.inf}) is None


def test_a_bus_cycling_through_ids_cannot_grow_memory_without_bound():
    from tigo_execd.identity.registry import MAX_NODES
    conv = Converter()
    lines = [report(gateway=g, node=n) for g in range(3) for n in range(1, 2 * MAX_NODES // 3 + 2)]
    infra = infrastructure_report({9: {n: {"address": "04:C0:5B:40:00:A2:34:6F"}
                                       for n in range(1, MAX_NODES + 10)}})
    out = conv.convert_lines([infra, *lines])
    assert out.count("\n") == len(lines)  # every report is still written
    assert len(conv._tags) == len(conv.counters.nodes) == MAX_NODES
    assert len(conv._heads) <= MAX_NODES
    assert len(conv.registry.nodes) <= MAX_NODES
