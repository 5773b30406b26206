"""Barcode <-> address conversion, checked against what taptap prints, and the `barcode` command.

tests/data/barcode-samples.jsonl: lines copied from tests/data/taptap-fork.jsonl (the
infrastructure report) and tests/data/taptap-upstream.jsonl (the two reports that carry addresses).
"""

from __future__ import annotations

import subprocess

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from support.paths import DATA
from support.proc import tigo_execd_argv
from tigo_execd import cli, exitcodes
from tigo_execd.identity import barcode
from tigo_execd.identity.barcode import (
    CHECK_LETTERS,
    address_colon,
    address_hex,
    address_to_barcode,
    barcode_to_address,
    is_valid_barcode,
    parse_address,
)

SAMPLES = DATA / "barcode-samples.jsonl"

# TAPTAP.md; the last three are from taptap's own unit tests (src/barcode.rs)
KNOWN = [
    ("04:C0:5B:40:00:A2:34:6F", "4-A2346FZ"),
    ("04:C0:5B:40:00:A2:34:71", "4-A23471V"),
    ("04:C0:5B:30:00:02:BE:16", "3-2BE16Y"),
    ("04:C0:5B:40:00:9A:57:A2", "4-9A57A2L"),
    ("04:C0:5B:40:00:79:AC:16", "4-79AC16V"),
    ("04:C0:5B:40:00:79:AB:99", "4-79AB99W"),
]


def sample_pairs() -> list[tuple[object, str]]:
    """(address as the sample writes it, barcode) for every node in the samples that has both."""
    pairs = []
    for line in SAMPLES.read_text().splitlines():
        doc = orjson.loads(line)
        if doc.get("event_type") == "infrastructure_report":
            for nodes in doc["nodes"].values():
                pairs += [(n["address"], n["barcode"]) for n in nodes.values() if "barcode" in n]
        elif "barcode" in doc["node"]:
            pairs.append((doc["node"]["address"], doc["node"]["barcode"]))
    return pairs


@pytest.mark.parametrize("addr,code", KNOWN)
def test_known_pairs_both_ways(addr: str, code: str) -> None:
    assert address_to_barcode(addr) == code
    assert address_colon(barcode_to_address(code)) == addr
    assert is_valid_barcode(code)


def test_sample_pairs() -> None:
    pairs = sample_pairs()
    assert len(pairs) == 3  # two from the fork's infrastructure report, one upstream (int list)
    assert any(isinstance(addr, list) for addr, _ in pairs)
    for addr, code in pairs:
        assert address_to_barcode(addr) == code
        assert barcode_to_address(code) == bytes.fromhex(address_hex(addr))


def test_upstream_address_without_barcode_gets_one() -> None:
    """Upstream node 3 comes with an address but no barcode yet; we can compute it."""
    doc = orjson.loads(SAMPLES.read_text().splitlines()[-1])
    assert "barcode" not in doc["node"]
    assert address_to_barcode(doc["node"]["address"]) == "4-A23471V"
    assert address_to_barcode(doc["gateway"]["address"]) == "3-2BE16Y"


def test_address_forms() -> None:
    forms = ["04:C0:5B:40:00:A2:34:6F", "04:c0:5b:40:00:a2:34:6f", "04c05b4000a2346f",
             "04C05B4000A2346F", [4, 192, 91, 64, 0, 162, 52, 111], bytes.fromhex("04c05b4000a2346f")]
    assert {address_hex(f) for f in forms} == {"04c05b4000a2346f"}
    assert {address_to_barcode(f) for f in forms} == {"4-A2346FZ"}


@pytest.mark.parametrize("bad", ["04:C0:5B:40:00:A2:34", "04c05b4000a2346", "04c05b4000a2346f00",
                                 "04-C0-5B-40-00-A2-34-6F", "", [4, 192, 91, 64, 0, 162, 52],
                                 [4, 192, 91, 64, 0, 162, 52, 256], [4, 192, 91, 64, 0, 162, 52, -1],
                                 [4, 192, 91, 64, 0, 162, 52, True], b"\x04\xc0"])
def test_malformed_address(bad: object) -> None:
    with pytest.raises(ValueError, match="address"):
        address_hex(bad)


def test_non_tigo_prefix_has_no_barcode() -> None:
    assert address_to_barcode("00:11:22:33:44:55:66:77") is None
    assert address_to_barcode("04:C0:5C:40:00:A2:34:6F") is None


def test_wrong_check_letter() -> None:
    for letter in CHECK_LETTERS.replace("Z", ""):
        with pytest.raises(ValueError, match=r"wrong check letter.*expected 'Z'"):
            barcode_to_address("4-A2346F" + letter)
        assert not is_valid_barcode("4-A2346F" + letter)


@pytest.mark.parametrize("bad", ["", "4A2346FZ", "4-A2346F", "4-A2346FI", "G-A2346FZ", "4-A2346FZZ",
                                 "4-1234567890Z", "44-A2346FZ", "4-A2 346FZ", "4--A2346FZ", "+-A2346FZ",
                                 "4-+A2346FZ"])
def test_malformed_barcode(bad: str) -> None:
    with pytest.raises(ValueError, match="barcode"):
        barcode_to_address(bad)
    assert not is_valid_barcode(bad)


def test_lenient_parse_strict_validity() -> None:
    """A user may type lower case or a leading zero; a tag value must be exactly taptap's form."""
    assert barcode_to_address(" 4-a2346fz ") == barcode_to_address("4-0A2346FZ") \
        == bytes.fromhex("04c05b4000a2346f")
    for variant in ["4-a2346fz", "4-0A2346FZ", " 4-A2346FZ", "4-A2346FZ\n"]:
        assert not is_valid_barcode(variant)
    for hostile in [None, 42, ["4-A2346FZ"], b"4-A2346FZ", "4-A2346FZ" * 100, "४-A2346FZ"]:
        assert not is_valid_barcode(hostile)


@given(st.binary(min_size=5, max_size=5))
def test_round_trip(tail: bytes) -> None:
    raw = b"\x04\xc0\x5b" + tail
    code = address_to_barcode(raw)
    assert is_valid_barcode(code)
    assert barcode_to_address(code) == raw


@given(st.binary(min_size=5, max_size=5), st.sampled_from(CHECK_LETTERS))
def test_only_one_check_letter_fits(tail: bytes, letter: str) -> None:
    code = address_to_barcode(b"\x04\xc0\x5b" + tail)
    assert is_valid_barcode(code[:-1] + letter) == (letter == code[-1])


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(tigo_execd_argv("barcode", *args), capture_output=True, text=True,
                          timeout=30)


def test_cli_both_ways() -> None:
    r = run("04:C0:5B:40:00:A2:34:6F")
    assert (r.returncode, r.stdout, r.stderr) == (0, "4-A2346FZ\n", "")
    r = run("3-2BE16Y")
    assert (r.returncode, r.stdout) == (0, "04:C0:5B:30:00:02:BE:16\n")
    r = run("--hex", "4-a23471v")
    assert (r.returncode, r.stdout) == (0, "04c05b4000a23471\n")


@pytest.mark.parametrize("value,says", [("4-A2346FG", "wrong check letter"),
                                        ("4-A2346F", "not a barcode"),
                                        ("04:C0:5B:40", "not a node address"),
                                        ("00:11:22:33:44:55:66:77", "has no barcode")])
def test_cli_data_errors_exit_65(value: str, says: str) -> None:
    r = run(value)
    assert r.returncode == 65
    assert r.stdout == ""
    assert r.stderr.startswith("E! ") and says in r.stderr


def test_cli_usage_error_exits_64() -> None:
    r = run()
    assert r.returncode == 64
    assert "E! " in r.stderr


def test_the_crc_table_is_the_polynomial_remainder_of_each_byte() -> None:
    """Each entry is (byte * x^4) mod (x^4 + x + 1), by long division here (barcode.py shifts)."""
    def remainder(value: int) -> int:
        for bit in range(11, 3, -1):  # value * x^4 has degree <= 11
            if value & (1 << bit):
                value ^= 0b10011 << (bit - 4)
        return value
    assert barcode._crc_table() == tuple(remainder(b << 4) for b in range(256))


def test_address_errors_say_what_an_address_is() -> None:
    with pytest.raises(ValueError) as bad:
        parse_address("04:C0:5B")
    assert str(bad.value) == "not a node address: '04:C0:5B' (want 8 bytes as 04:C0:5B:40:00:A2:34:6F " \
                             "or 04c05b4000a2346f)"
    assert parse_address([4, 0xC0, 0x5B, 0x40, 0, 0xA2, 0x34, 255]) == bytes.fromhex("04c05b4000a234ff")
    with pytest.raises(ValueError, match=r"^not a barcode: 42$"):
        barcode_to_address(42)  # type: ignore[arg-type]


@pytest.mark.parametrize("argv, out, err", [
    (["04:C0:5B:40:00:A2:34:6F"], "4-A2346FZ\n", ""),
    (["4-A2346FZ"], "04:C0:5B:40:00:A2:34:6F\n", ""),
    (["--hex", " 4-a2346fz "], "04c05b4000a2346f\n", ""),
    (["00:11:22:33:44:55:66:77"], "", "E! tigo-execd barcode: 00:11:22:33:44:55:66:77 has no barcode: "
                                     "only addresses starting 04:C0:5B (Tigo) have one\n"),
    (["4-A2346FG"], "", "E! tigo-execd barcode: wrong check letter in barcode '4-A2346FG': 'G', "
                        "expected 'Z' for 4-A2346F: a digit may be misread\n"),
])
def test_the_command_in_process(argv, out, err, capsys, logged) -> None:
    """The same command through cli.main in this process, so that mutation testing reaches it."""
    assert cli.main(["barcode", *argv]) == (exitcodes.DATAERR if err else exitcodes.OK)
    assert capsys.readouterr().out == out
    assert logged.getvalue() == err
