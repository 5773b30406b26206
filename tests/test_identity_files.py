"""The names file and the state file at their edges, each case one a changed token gets wrong
(found by scripts/mutation.sh): every problem said with its line, the header row only first,
separators a spreadsheet writes, quoted newlines, the longest name; the state file's exact bytes,
modes and atomic replacement."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import orjson
import pytest

from tigo_execd.identity import store
from tigo_execd.identity.registry import Registry
from tigo_execd.identity.store import MAX_NAME, default_state_file, parse_names, save_state

LONGEST = "x" * MAX_NAME


def test_every_row_kind_and_every_problem_with_its_line():
    text = "\n".join([
        "gateway_id,node,panel",                   # 1 header (first row only)
        "4-a2346fz,east-1,east",                   # 2 a barcode as a person types it
        "4609,7,west-3",                           # 3 gateway, node, panel
        "4609,8,\"two\nlines\",s",                 # 4-5 a quoted newline stays in its value: unprintable
        "gateway,node,panel",                      # 6 a header row later is a row: not an id
        "4-A2346FZ,again",                         # 7 named before
        "4-A2346FZ",                               # 8 one field
        "4609,70000,big",                          # 9 id out of range
        "4609,9",                                  # 10 too few fields
        "4-A2346FG,x",                             # 11 wrong check letter
        f"4609,10,{LONGEST}",                      # 12 the longest name
        f"4609,11,{LONGEST}y",                     # 13 one character more
        "4609,12,,",                               # 14 no name at all
        "4-A23471V;a;b", "4-A23471V;c;d",          # 15, 16 semicolons
        "4609\t13\ttab",                           # 17 tabs
    ])
    names, lines, problems = parse_names(text, "n.csv")
    assert names == {"4-A2346FZ": {"panel": "east-1", "string": "east"}, (4609, 7): {"panel": "west-3"},
                     (4609, 10): {"panel": LONGEST}}
    assert lines == [2, 3, 12]
    assert problems == [
        "n.csv line 5: names must be printable and at most 64 characters",
        "n.csv line 6: 'gateway' is neither a barcode nor a gateway id",
        "n.csv line 7: 4-A2346FZ is already named on line 2; this row is ignored",
        "n.csv line 8: want barcode,panel[,string], got 1 fields",
        "n.csv line 9: want gateway,node,panel[,string] with ids 0-65535, got '4609,70000,big'",
        "n.csv line 10: want gateway,node,panel[,string] with ids 0-65535, got '4609,9'",
        "n.csv line 11: wrong check letter in barcode '4-A2346FG': 'G', expected 'Z' for 4-A2346F: a digit "
        "may be misread",
        "n.csv line 13: names must be printable and at most 64 characters",
        "n.csv line 14: neither a panel nor a string name",
        "n.csv lines 15, 16: fields separated by ';'; the names file is comma-separated (save it as CSV "
        "with commas), e.g. 4-A2346FZ,east-1,east",
        "n.csv line 17: fields separated by tabs; the names file is comma-separated (save it as CSV with "
        "commas), e.g. 4-A2346FZ,east-1,east",
    ]


def test_a_header_of_each_kind_and_a_long_id_cell():
    for header in ("barcode,panel", "Gateway,node,panel", "GATEWAY_ID,node,panel"):
        assert parse_names(f"{header}\n4609,1,a\n", "f")[2] == []
    long_cell = "4609," + "9" * 100 + ",p"
    assert parse_names(long_cell, "f")[2] == [
        f"f line 1: want gateway,node,panel[,string] with ids 0-65535, got {long_cell[:80]!r}"]
    cell = "é" * 50
    assert parse_names(f"{cell},x", "f")[2] == [
        f"f line 1: {cell[:40]!r} is neither a barcode nor a gateway id"]
    many = "\n".join(f"4609;{i};p" for i in range(25))
    [problem] = parse_names(many, "f")[2]
    assert problem.startswith("f lines 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, "
                              "20, ...: fields separated by ';'")


def test_the_state_file_is_indented_json_readable_by_all_in_a_new_directory(tmp_path):
    reg = Registry()
    reg.learn_node(4609, 2, "04c05b4000a2346f", None)
    path = tmp_path / "a" / "b" / "registry.json"
    old = os.umask(0)
    try:
        assert save_state(reg, path)
    finally:
        os.umask(old)
    assert path.read_bytes() == orjson.dumps(reg.to_json(), option=orjson.OPT_INDENT_2) + b"\n"
    assert b'\n  "version": 1,' in path.read_bytes()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o755
    assert os.listdir(path.parent) == ["registry.json"]
    assert default_state_file().name == "registry.json"


def test_the_state_file_is_written_beside_itself_then_renamed(tmp_path, monkeypatch, logged):
    """The temporary file is made in the state file's directory: a rename across filesystems
    (/dev/shm here) would fail, and a crash leaves only a dot file beside it."""
    monkeypatch.setattr(tempfile, "tempdir", "/dev/shm")
    names: list[str] = []
    real = os.replace
    monkeypatch.setattr(store.os, "replace",
                        lambda src, dst: names.append(os.path.basename(src)) or real(src, dst))
    assert save_state(Registry(), tmp_path / "registry.json") and logged.getvalue() == ""
    assert names[0].startswith(".registry.json.")


def test_a_state_file_that_cannot_be_written_is_one_warning(tmp_path, logged):
    (tmp_path / "file").write_text("")
    for _ in range(2):
        assert not save_state(Registry(), tmp_path / "file" / "registry.json")
    [line] = logged.getvalue().splitlines()
    assert line.startswith(f"W! cannot save the node registry to {tmp_path / 'file' / 'registry.json'}: ")


@pytest.mark.parametrize("name, ok", [(LONGEST, True), (LONGEST + "x", False), ("a\tb", False)])
def test_names_are_printable_and_at_most_64_characters(name, ok):
    assert (parse_names(f"4609,1,{name}", "f")[2] == []) == ok


@pytest.mark.parametrize("text, problem", [
    ("gateway_id,node,panel\nbarcode,panel\n", "f line 2: 'barcode' is neither a barcode nor a gateway id"),
    ("4609\n", "f line 1: want gateway,node,panel[,string] with ids 0-65535, got '4609'"),
    ("4609,x,p\n", "f line 1: want gateway,node,panel[,string] with ids 0-65535, got '4609,x,p'"),
])
def test_only_the_first_row_may_be_a_header_and_an_id_row_needs_ids(text, problem):
    assert parse_names(text, "f")[2] == [problem]


@pytest.mark.parametrize("rows, listed", [(20, ", ".join(str(n) for n in range(1, 21))),
                                          (21, ", ".join(str(n) for n in range(1, 21)) + ", ...")])
def test_up_to_twenty_line_numbers_are_listed(rows, listed):
    [problem] = parse_names("\n".join(f"4609;{i};p" for i in range(rows)), "f")[2]
    assert problem.startswith(f"f lines {listed}: fields")


def test_the_state_file_read_back_and_what_is_said(tmp_path, logged):
    path = tmp_path / "registry.json"
    reg = Registry()
    reg.learn_node(4609, 2, "04c05b4000a2346f", None)
    reg.learn_node(4609, 4, "04c05b4000a23471", None)
    reg.learn_node(4609, 3, "0011223344556677", None)
    save_state(reg, path)
    again = Registry()
    store.load_state(again, path, " (the service's)")
    assert again.nodes == reg.nodes
    store.load_state(Registry(), path)
    assert logged.getvalue().splitlines() == [
        f"I! node registry {path} (the service's): 3 nodes, 2 with a barcode",
        f"I! node registry {path}: 3 nodes, 2 with a barcode"]
    path.write_text('{"version": 1, "nodes": {"x": {"1": {}}}}')
    store.load_state(Registry(), path)
    assert f"W! node registry {path}: skipped 1 malformed entries\n" in logged.getvalue()
    path.write_text('{"version": 2}')
    store.load_state(Registry(), path)
    assert logged.getvalue().splitlines()[-1] == (
        f"W! node registry {path} is unusable (not a version 1 tigo-execd registry): starting empty; it is "
        "rewritten when the next identity is learnt")
    store.load_state(Registry(), tmp_path / "none.json")
    assert f"D! no node registry at {tmp_path / 'none.json'} yet: starting empty" in logged.getvalue()


def test_the_state_file_option(tmp_path, monkeypatch):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    assert store.state_path(None) == tmp_path / "registry.json"
    assert store.state_path(Path("")) is None and store.state_path(Path(".")) is None
    assert store.state_path(tmp_path / "r.json") == tmp_path / "r.json"
