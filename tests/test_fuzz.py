"""Property-based fuzzing of the conversion (issue 8): whatever taptap or the bus prints, the
converter never raises, writes only lines a real InfluxDB 1.x and Telegraf's parser accept, never
drops a valid report, and counts every line it does not write.

CI runs a fixed, derandomized number of examples; TIGO_FUZZ_EXAMPLES=N runs about N examples in all
(shared out in proportion to the CI counts), randomized, without the per-test timeout; -s shows
the figures of each test (docs/reports/fuzz.md):

    TIGO_FUZZ_EXAMPLES=100000 python3 -m pytest tests/test_fuzz.py -q -s 2>/dev/null
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import time
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from support import fuzz_strategies as fs
from support.proc import tigo_execd_argv
from support.telegraf_harness import parse_line
from support.telegraf_mqtt import Metric
from tigo_execd.clock import TimeCheck
from tigo_execd.identity.registry import Registry
from tigo_execd.ingest.convert import Converter

MEASUREMENT = "tigo_power_report"
FIELDS = {"voltage_in_v", "voltage_out_v", "current_in_a", "power_w", "current_out_a", "duty_cycle",
          "temperature_c", "rssi"}
TAG_FORMS = {"src": re.compile("tigo"), "gateway_id": re.compile(r"0|[1-9]\d{0,4}"),
             "node_id": re.compile(r"0|[1-9]\d{0,4}"), "gateway_addr": re.compile("[0-9a-f]{16}"),
             "node_addr": re.compile("[0-9a-f]{16}"),
             "barcode": re.compile("[0-9A-F]-(?:[1-9A-F][0-9A-F]{0,8})?[GHJKLMNPRSTVWXYZ]")}
FIELD_OF = {"voltage_in": "voltage_in_v", "voltage_out": "voltage_out_v", "current": "current_in_a",
            "dc_dc_duty_cycle": "duty_cycle", "temperature": "temperature_c", "rssi": "rssi"}
# The fields a report value takes with it when it is missing (computed ones depend on several).
DEPENDENT = {"voltage_in": {"voltage_in_v", "power_w", "current_out_a"},
             "current": {"current_in_a", "power_w", "current_out_a"},
             "voltage_out": {"voltage_out_v", "current_out_a"},
             "dc_dc_duty_cycle": {"duty_cycle"}, "temperature": {"temperature_c"}, "rssi": {"rssi"}}
TS_MIN, TS_MAX = -9_223_372_036_854_775_806, 9_223_372_036_854_775_806
PRINTABLE = re.compile(r"[\x21-\x7e ]+")
WRITE_BYTES = 10 << 20   # per /write
CORPUS_BYTES = 16 << 20  # of hostile lines for the run of the real process (long runs make more)

# CI example counts per test; TIGO_FUZZ_EXAMPLES scales them to that total.
CI_EXAMPLES = {"bytes": 500, "json": 300, "taptap": 500, "valid": 800, "timestamps": 400,
               "paths": 300, "pieces": 400}
LONG = int(os.environ.get("TIGO_FUZZ_EXAMPLES", "0") or 0)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(0 if LONG else 120)]


def fuzz(name: str) -> settings:
    """Reproducible in CI (derandomized), random in a long run; no deadline, no example database."""
    count = CI_EXAMPLES[name]
    if LONG:
        count = max(1, LONG * count // sum(CI_EXAMPLES.values()))
    return settings(max_examples=count, derandomize=not LONG, deadline=None, database=None,
                    print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example,
                                           HealthCheck.filter_too_much])


# ---------------------------------------------------------------- checks shared by the properties

def check_line(line: str) -> Metric:
    """Property 5 on one output line (without its newline): printable ASCII only (no newline, no
    control character), parsed by Telegraf's parser into the schema, every tag intact, every float
    finite, the timestamp storable."""
    assert PRINTABLE.fullmatch(line), f"non-printable output: {line!r}"
    m = parse_line(line)
    assert m.name == MEASUREMENT, line
    assert {"src", "gateway_id", "node_id"} <= m.tags.keys() <= TAG_FORMS.keys(), line
    for key, value in m.tags.items():  # an unescaped separator would shift what the parser reads
        assert TAG_FORMS[key].fullmatch(value), f"tag {key}={value!r} in {line!r}"
    assert m.fields and m.fields.keys() <= FIELDS, line
    for key, value in m.fields.items():
        if key == "rssi":
            assert type(value) is int, line
        else:
            assert type(value) is float and math.isfinite(value), line
    assert "nan" not in line.lower() and "inf" not in line.lower(), line
    assert TS_MIN <= m.ts_ns <= TS_MAX, line
    return m


def counts(conv: Converter) -> tuple[int, ...]:
    c = conv.counters
    return (c.lines_read, c.reports, c.lines_skipped, c.lines_invalid, c.infrastructure_reports,
            c.reports_clock_rejected)


def converter(clock_check: bool, cls: type[Converter] = Converter) -> Converter:
    """A new converter, with the report-time check of `run --clock-check` on a fake host clock."""
    conv = cls()
    if clock_check:
        conv.time_check = TimeCheck(now_ns=lambda: fs.FAKE_NOW, monotonic_ns=lambda: 0)
    return conv


def convert_checked(lines: list[bytes], clock_check: bool = False) -> tuple[Converter, list[str]]:
    """Properties 1, 4, 5 (and the state file) for one chunk of lines given to a new converter;
    returns the converter and its output lines."""
    conv = converter(clock_check)
    out = conv.convert_lines(lines)  # property 1: whatever the lines, no exception
    read, reports, skipped, invalid, infra, clock_rejected = counts(conv)
    # property 4: every line is written or counted; whitespace-only lines are not lines
    assert read == sum(1 for raw in lines if raw.strip()), lines
    assert read == reports + skipped + invalid + infra + clock_rejected, (counts(conv), lines)
    assert clock_check or not clock_rejected
    assert out == "" or out.endswith("\n")
    written = out.split("\n")[:-1]
    assert len(written) == reports, (out, lines)
    for line in written:
        check_line(line)
    # chunking does not matter: one line at a time gives the same lines and counts
    single = converter(clock_check)
    assert "".join(single.convert(raw) or "" for raw in lines) == out
    assert counts(single) == counts(conv)
    # nor do the pieces remembered from plain lines: parsing every line gives the same
    assert_same_as_parsed(lines, out, conv, clock_check)
    # whatever the bus said, the state file written from the registry loads back whole
    assert Registry().load_json(orjson.loads(orjson.dumps(conv.registry.to_json()))) == 0
    return conv, written


class ParsingConverter(Converter):
    """Remembers no pieces, so it parses every line: the reference for the fast path."""

    def _remember(self, *args) -> None:  # type: ignore[no-untyped-def]
        pass


def assert_same_as_parsed(lines: list[bytes], out: str, conv: Converter,
                          clock_check: bool) -> None:
    """Property 8: remembered pieces change nothing (the fast path writes what parsing writes)."""
    parsing = converter(clock_check, ParsingConverter)
    assert parsing.convert_lines(lines) == out, lines
    assert counts(parsing) == counts(conv)


def assert_influx_stores(influx, lines: list[str]) -> None:
    """Property 2: one /write of every line is accepted (no partial write) and InfluxDB stores what
    Telegraf's parser reads from them (same series, times and field values)."""
    # one shard group per ~1900 years: timestamps from 1677 to 2262 must not create 30000 shards
    influx.query(f'CREATE RETENTION POLICY "fuzz" ON "{influx.db}" DURATION INF REPLICATION 1 '
                 f'SHARD DURATION 100000w DEFAULT')
    # one /write (a CI run's lines in one); a long run makes more than InfluxDB's max-body-size
    # (25 MB) takes, so it writes them in parts of whole lines
    body, start = "".join(line + "\n" for line in lines).encode(), 0
    while start < len(body):
        end = body.rfind(b"\n", start, start + WRITE_BYTES) + 1 or len(body)
        influx.write(body[start:end])
        start = end
    expected: dict[tuple, dict] = {}
    for line in lines:  # a later point with the same series and time updates the earlier one
        m = parse_line(line)
        expected.setdefault((tuple(sorted(m.tags.items())), m.ts_ns), {}).update(m.fields)
    stored: dict[tuple, dict] = {}
    for series in influx.query(f'SELECT * FROM "{MEASUREMENT}" GROUP BY *'):
        tags = tuple(sorted((k, v) for k, v in series["tags"].items() if v))
        columns = series["columns"][1:]
        for row in series["values"]:
            # InfluxDB's JSON writes an integral float as an integer (9223372036854776000)
            stored[(tags, row[0])] = {k: v if k == "rssi" else float(v)
                                      for k, v in zip(columns, row[1:]) if v is not None}
    assert len(stored) == len(expected)
    assert stored == expected


def assert_run_survives(lines: list[bytes], tmp_path, keep: Path) -> str:
    """Property 1 for the process: `tigo-execd run --jsonl` reads all the lines, exits 0 and writes
    what the converter does in-process, with every line counted in its final tigo_ingest line.
    On a failure the input and both outputs are kept in `keep`. Returns what went
    through, for the figures."""
    path = tmp_path / "taptap.jsonl"
    path.write_bytes(b"".join(raw + b"\n" for raw in lines))
    proc = subprocess.run(tigo_execd_argv("run", "--jsonl", str(path), "--stats-interval", "3600",
                                          "--state-file", str(tmp_path / "state.json")),
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
    out = proc.stdout.decode().split("\n")[:-1]
    stats = [parse_line(line).fields for line in out if line.startswith("tigo_ingest,")]
    written = [line for line in out if not line.startswith("tigo_ingest,")]
    conv = Converter()
    expected = conv.convert_lines(lines).split("\n")[:-1]
    names = ("lines_read", "reports", "lines_skipped", "lines_invalid", "infrastructure_reports")
    ok = (proc.returncode == 0 and b"Traceback" not in proc.stderr and len(stats) == 1
          and [stats[0][k] for k in names] == list(counts(conv)[:5]) and written == expected)
    if not ok:
        keep.mkdir(exist_ok=True)
        shutil.copy(path, keep / "input.jsonl")
        (keep / "stdout.txt").write_bytes(proc.stdout)
        (keep / "stderr.txt").write_bytes(proc.stderr)
        (keep / "expected.txt").write_text("".join(line + "\n" for line in expected))
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    assert b"Traceback" not in proc.stderr
    assert len(stats) == 1
    assert {k: stats[0][k] for k in names} == dict(zip(names, counts(conv)))
    assert written == expected, f"input and outputs kept in {keep}"
    return f"{len(lines)} lines ({path.stat().st_size / 1e6:.1f} MB)"


class Tally:
    """What one fuzz test went through: its output lines (for InfluxDB) and the figures docs/reports/fuzz.md
    quotes (printed; `pytest -s` shows them)."""

    def __init__(self, name: str) -> None:
        self.name, self.examples, self.lines = name, 0, 0
        self.written: list[str] = []
        self.started = time.monotonic()

    def add(self, lines: int, written: list[str]) -> None:
        self.examples += 1
        self.lines += lines
        self.written.extend(written)

    def show(self) -> None:
        print(f"\nfuzz {self.name}: {self.examples} examples, {self.lines} lines in, "
              f"{len(self.written)} lines out, {time.monotonic() - self.started:.1f} s")


# ---------------------------------------------------------------- properties 1, 2, 4, 5

REPORT = (b'{"event_type":"power_report","gateway":1,"node":2,"timestamp":"2026-11-27T00:00:00Z",'
          b'"voltage_in":%s,"voltage_out":%s,"current":%s,"dc_dc_duty_cycle":1.0,'
          b'"temperature":1.0,"rssi":%s}')


def test_arbitrary_bytes(influx_db):
    tally = Tally("bytes")

    @fuzz("bytes")
    @given(st.lists(fs.arbitrary_bytes, min_size=1, max_size=8), st.booleans())
    def run(chunks, clock_check):
        lines = fs.split_lines(chunks)
        tally.add(len(lines), convert_checked(lines, clock_check)[1])

    run()
    assert_influx_stores(influx_db, tally.written)
    tally.show()


def test_arbitrary_json(influx_db):
    tally = Tally("json")

    @fuzz("json")
    @given(st.lists(st.tuples(fs.any_json | fs.hostile_report(), st.booleans()), min_size=1,
                    max_size=6), st.booleans())
    def run(objs, clock_check):
        lines = [fs.dumps(obj, ascii_only) for obj, ascii_only in objs]
        tally.add(len(lines), convert_checked(lines, clock_check)[1])

    run()
    assert_influx_stores(influx_db, tally.written)
    tally.show()


def test_hostile_taptap_lines(influx_db, tmp_path, output_dir):
    tally = Tally("taptap")
    corpus: list[bytes] = []  # the examples' lines, for one run of the real process
    corpus_bytes = 0

    @fuzz("taptap")
    # regressions: an rssi beyond int64 (as a JSON integer, and as an integral float); -inf power
    # and inf current_out on the fast path; out-of-range ids that still taught the registry (and
    # so the state file) addresses; a non-ASCII digit as map key
    @example(lines=[REPORT % (b"1.0", b"1.0", b"1.0", b"18446744073709551615")] * 2,
             clock_check=False)
    @example(lines=[REPORT % (b"1.0", b"1.0", b"1.0", b"9.223372036854776e18")], clock_check=False)
    @example(lines=[REPORT % (b"-1e308", b"1.0", b"1e308", b"1")] * 2, clock_check=False)
    @example(lines=[REPORT % (b"1e10", b"1e-310", b"1.0", b"1")] * 2, clock_check=False)
    @example(lines=[b'{"gateway":{"id":-1,"address":[4,192,91,0,0,0,0,0]},"node":{"id":0},'
                    b'"rssi":0}'], clock_check=False)
    @example(lines=[b'{"gateway":{"id":0},"node":{"id":-1,"barcode":"0-L"},"rssi":0}'],
             clock_check=False)
    @example(lines=[b'{"event_type":"infrastructure_report","gateways":{"\xc2\xb2":{}}}'],
             clock_check=False)
    @given(lines=fs.taptap_chunks(), clock_check=st.booleans())
    def run(lines, clock_check):
        tally.add(len(lines), convert_checked(lines, clock_check)[1])
        nonlocal corpus_bytes
        if corpus_bytes < CORPUS_BYTES:
            # not lines near 64 KiB: the pipeline drops those whole, depending on where reads end
            kept = [raw for raw in lines if len(raw) < 60_000]
            corpus.extend(kept)
            corpus_bytes += sum(map(len, kept))

    run()
    assert_influx_stores(influx_db, tally.written)
    ran = assert_run_survives(corpus, tmp_path, output_dir / "fuzz-run")
    tally.show()
    print(f"fuzz taptap: {ran} through tigo-execd run")


# ---------------------------------------------------------------- property 3: never dropped

def assert_values(m: Metric, values: dict) -> None:
    """The measured values as taptap printed them; power and output current from their decimal
    text (not the converter's floats), to the rounding the schema gives them."""
    vin, cur, vout = (Decimal(repr(values[k])) for k in ("voltage_in", "current", "voltage_out"))
    expected = {FIELD_OF[k]: v for k, v in values.items()}
    assert {k: m.fields[k] for k in expected} == expected
    assert abs(Decimal(repr(m.fields["power_w"])) - vin * cur) <= Decimal("0.0005000001")
    if vout:
        out = Decimal(repr(m.fields["current_out_a"]))
        assert abs(out - vin * cur / vout) <= Decimal("0.0000500001")
    assert m.fields.keys() == FIELDS - ({"current_out_a"} if not vout else set())
    assert type(m.fields["rssi"]) is int


def test_valid_report_is_never_dropped(influx_db):
    tally = Tally("valid")

    @fuzz("valid")
    @given(fs.valid_reports(), st.booleans())
    def run(v, clock_check):
        conv, out = convert_checked(v.lines, clock_check)
        assert len(out) == 1, (v.lines, out)
        assert conv.counters.infrastructure_reports == v.infrastructure
        m = parse_line(out[0])
        assert m.tags == v.tags
        assert m.ts_ns == v.ns
        assert_values(m, v.values)
        tally.add(len(v.lines), out)

    run()
    assert_influx_stores(influx_db, tally.written)
    tally.show()


def test_every_timestamp_influxdb_can_store_is_kept_exactly(influx_db):
    """Any precision (0-9 digits), any offset, `T`/`t`/space, `Z`/`z`, 1677 to 2262."""
    tally = Tally("timestamps")

    @fuzz("timestamps")
    @example(stamp=fs.Stamp("1677-09-21T00:12:43.145224194Z", TS_MIN))
    @example(stamp=fs.Stamp("2262-04-11T23:47:16.854775806Z", TS_MAX))
    @example(stamp=fs.Stamp("2024-08-24T16:16:41.686961123+02:00", 1724509001_686961123))
    @given(stamp=fs.stamps(fs.any_ns))
    def run(stamp):
        line = fs.dumps({"event_type": "power_report", "gateway": 1, "node": 2,
                         "timestamp": stamp.text, "rssi": 7})
        _, out = convert_checked([line, line])  # the first sight parses, the second hits the cache
        assert [parse_line(x).ts_ns for x in out] == [stamp.ns] * 2, stamp
        tally.add(2, out)

    run()
    assert_influx_stores(influx_db, tally.written)
    tally.show()


# ---------------------------------------------------------------- property 6: fast == slow

class CountingConverter(Converter):
    """Counts the lines that were parsed, so the test knows the others took the fast path."""

    parsed = 0

    def _parse(self, *args) -> None:  # type: ignore[no-untyped-def]
        self.parsed += 1
        super()._parse(*args)


def test_fast_and_slow_paths_agree(influx_db):
    tally = Tally("paths")

    @fuzz("paths")
    @given(v=fs.valid_reports(noise=False), text=fs.hostile_text)
    def run(v, text):
        conv = CountingConverter()
        line = fs.dumps(v.obj)
        first = conv.convert(line)    # parsed, and its pieces remembered: taptap's lines are plain
        second = conv.convert(line)   # the same again: made of known pieces, not parsed
        written = [first, second]
        assert conv.parsed == 1
        assert first == second and first is not None
        whole = check_line(first[:-1])
        for key, value in v.values.items():
            # the value missing or unusable drops only itself and what is computed from it
            kept = {k: x for k, x in whole.fields.items() if k not in DEPENDENT[key]}
            variants = [(fs.MISSING, kept), (None, kept), (text, kept), ([value], kept)]
            if float(value).is_integer():  # written as a JSON integer (or float): same values
                variants.append((int(value) if type(value) is float else float(value), whole.fields))
            for variant, expected in variants:
                out = conv.convert(fs.dumps({**v.obj, key: variant}))
                assert out is not None
                written.append(out)
                m = check_line(out[:-1])
                assert (m.tags, m.ts_ns) == (whole.tags, whole.ts_ns)
                assert m.fields == expected, (key, variant)
                assert all(type(m.fields[k]) is type(x) for k, x in expected.items())
        read, reports, *others = counts(conv)
        assert read == reports and not any(others)
        tally.add(read, [line[:-1] for line in written])

    run()
    assert_influx_stores(influx_db, tally.written)
    tally.show()


# ---------------------------------------------------------------- property 8: pieces change nothing

def test_lines_made_of_known_pieces_are_written_as_if_parsed(influx_db):
    """Plain lines teach the converter their pieces (head, timestamp, each value); a line made of
    known pieces is then written without parsing. Lines recombined from the pieces of several
    reports, mangled ones and hostile ones must come out exactly as a converter that parses
    everything writes them, counters included."""
    tally = Tally("pieces")

    @fuzz("pieces")
    @given(reports=st.lists(fs.valid_reports(noise=False), min_size=1, max_size=4),
           data=st.data(), clock_check=st.booleans())
    def run(reports, data, clock_check):
        taught = [raw for v in reports for raw in v.lines]
        parts = [fs.dumps(v.obj).rsplit(b",", 7) for v in reports]
        mixed = [b",".join(data.draw(st.sampled_from(parts))[i] for i in range(8))
                 for _ in range(data.draw(st.integers(1, 8)))]
        odd = [fs.mangled(data.draw, raw) for raw in data.draw(st.lists(st.sampled_from(mixed),
                                                                        max_size=3))]
        hostile = data.draw(st.lists(fs.taptap_lines(), max_size=3))
        lines = taught + data.draw(st.permutations(mixed + odd + hostile)) + taught
        conv = converter(clock_check)
        out = conv.convert_lines(lines)
        assert_same_as_parsed(lines, out, conv, clock_check)
        written = out.split("\n")[:-1]
        for line in written:
            check_line(line)
        tally.add(len(lines), written)

    run()
    assert_influx_stores(influx_db, tally.written)
    tally.show()
