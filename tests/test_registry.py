"""Node identities: learnt from both taptap formats, kept across restarts, names from a CSV file.

Unit tests drive the Converter with its Registry; the restart, corrupt-file and live-names tests run
`tigo-execd run` as Telegraf would (a child process fed on stdin, read on stdout).
"""

from __future__ import annotations

import io
import os
import signal
from pathlib import Path

import orjson
import pytest

from support.proc import Child, tigo_execd_argv
from support.taptap_lines import infrastructure_report, power_report
from tigo_execd.identity.registry import Registry
from tigo_execd.identity.store import parse_names
from tigo_execd.ingest.convert import Converter

DATA = Path(__file__).parent / "data"
GW_ADDR = "04c05b300002be16"
pytestmark = pytest.mark.usefixtures("own_state_dir")  # conftest: a fresh default registry place


def infra(nodes: dict[int, dict[str, str]]) -> bytes:
    """The fork's infrastructure report for gateway 4609 (address GW_ADDR) and its `nodes`."""
    return infrastructure_report({4609: nodes}, {4609: {"address": "04:C0:5B:30:00:02:BE:16"}})


def fork_power(node: int, second: int = 1) -> bytes:
    """A fork power report from gateway 4609 at 19:19:`second` local time on 2025-04-03."""
    return power_report(node, timestamp=f"2025-04-03T19:19:{second:02d}+02:00")


def tags(line: str) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in line.split(" ", 1)[0].split(",")[1:])


# --- learning -------------------------------------------------------------------------------

def test_fork_infrastructure_report_tags_later_power_reports() -> None:
    conv = Converter()
    assert "barcode" not in conv.convert(fork_power(2))
    conv.convert(infra({2: {"address": "04:C0:5B:40:00:A2:34:6F", "barcode": "4-A2346FZ"}}))
    assert tags(conv.convert(fork_power(2))) == {
        "barcode": "4-A2346FZ", "gateway_addr": GW_ADDR, "gateway_id": "4609",
        "node_addr": "04c05b4000a2346f", "node_id": "2", "src": "tigo"}


def test_upstream_barcode_and_address_only_both_tag() -> None:
    conv = Converter()
    out = [conv.convert(l) for l in (DATA / "taptap-upstream.jsonl").read_bytes().splitlines()]
    out = [o for o in out if o]
    assert tags(out[-2])["barcode"] == "4-A2346FZ"
    # node 3 came with its address only: its barcode follows from it
    assert tags(out[-1])["barcode"] == "4-A23471V"
    assert conv.registry.nodes[4609, 3] == {"node_addr": "04c05b4000a23471", "barcode": "4-A23471V"}


def test_fork_barcode_without_address_gives_the_address() -> None:
    reg = Registry()
    reg.learn_node(1, 2, None, "3-2BE16Y")
    assert reg.tags(1, 2) == {"barcode": "3-2BE16Y", "node_addr": GW_ADDR}


@pytest.mark.parametrize("hostile", ["4-A2346FG", "4-a2346fz", "4-0A2346FZ", "x" * 300, 42,
                                     "4-A2346FZ\n", "4-A2346FZ,evil=1"])
def test_bus_barcode_must_be_exact(hostile: object) -> None:
    conv = Converter()
    conv.convert(infra({2: {"barcode": hostile}}))
    assert "barcode" not in tags(conv.convert(fork_power(2)))


def test_reenumeration_moves_the_barcode(logged: io.StringIO) -> None:
    conv = Converter()
    conv.convert(infra({2: {"address": "04:C0:5B:40:00:A2:34:6F", "barcode": "4-A2346FZ"},
                        3: {"address": "04:C0:5B:40:00:A2:34:71", "barcode": "4-A23471V"}}))
    assert tags(conv.convert(fork_power(2)))["barcode"] == "4-A2346FZ"
    # the CCA re-enumerated: panel 4-A2346FZ is node 5 now, node 2 is panel 4-A23471V
    conv.convert(infra({5: {"address": "04:C0:5B:40:00:A2:34:6F", "barcode": "4-A2346FZ"},
                        2: {"address": "04:C0:5B:40:00:A2:34:71", "barcode": "4-A23471V"}}))
    assert tags(conv.convert(fork_power(5)))["barcode"] == "4-A2346FZ"
    assert tags(conv.convert(fork_power(2)))["barcode"] == "4-A23471V"
    assert "barcode" not in tags(conv.convert(fork_power(3)))  # its panel is node 2 now
    text = logged.getvalue()
    assert "W! 4-A2346FZ moved from gateway 4609 node 2 to gateway 4609 node 5" in text
    assert "W! 4-A23471V moved from gateway 4609 node 3 to gateway 4609 node 2" in text


def test_new_barcode_for_a_node_id_is_logged_and_followed(logged: io.StringIO) -> None:
    conv = Converter()
    conv.convert(infra({2: {"barcode": "4-A2346FZ"}}))
    conv.convert(infra({2: {"barcode": "4-A23471V"}}))
    assert tags(conv.convert(fork_power(2)))["node_addr"] == "04c05b4000a23471"
    assert logged.getvalue() == ("W! gateway 4609 node 2: barcode changed from 4-A2346FZ to "
                                 "4-A23471V (the CCA re-enumerated its nodes); tags follow the "
                                 "new mapping\n")


def test_state_round_trip_and_hostile_entries() -> None:
    reg = Registry()
    reg.learn_gateway(4609, GW_ADDR)
    reg.learn_node(4609, 2, "04c05b4000a2346f", "4-A2346FZ")
    reg.learn_node(4610, 40001, "0011223344556677", None)  # non-Tigo address: no barcode
    doc = orjson.loads(orjson.dumps(reg.to_json()))
    again = Registry()
    assert again.load_json(doc) == 0
    assert (again.gateways, again.nodes) == (reg.gateways, reg.nodes)
    doc["nodes"]["4609"].update({"x": {"barcode": "4-A2346FZ"}, "3": {"barcode": "4-A23471G"},
                                 "4": "nope", "99999": {"node_addr": "04c05b4000a2346f"}})
    doc["gateways"]["4610"] = "04:C0"
    assert Registry().load_json(doc) == 5
    with pytest.raises(ValueError):
        Registry().load_json({"version": 2})


# --- names file ------------------------------------------------------------------------------

NAMES = """\
# panel names for the east roof
barcode,panel,string
4-A2346FZ,east-1,east
4609,3,"east 2, by the chimney",east
4-A2346FG,bad check letter,east
4609,x,y,z
4609,4
4-A23471V,,
4-A2346FZ,again,east
 4-a23471v , east-3
4609,5,""" + "p" * 65 + """,east
hello,world
"""


def test_parse_names_reports_line_numbers() -> None:
    names, lines, problems = parse_names(NAMES, "names.csv")
    assert names == {"4-A2346FZ": {"panel": "east-1", "string": "east"},
                     (4609, 3): {"panel": "east 2, by the chimney", "string": "east"},
                     "4-A23471V": {"panel": "east-3"}}
    assert lines == [3, 4, 10]
    assert [p.split(":")[0] for p in problems] == [
        "names.csv line 5", "names.csv line 6", "names.csv line 7", "names.csv line 8",
        "names.csv line 9", "names.csv line 11", "names.csv line 12"]
    assert "wrong check letter" in problems[0]
    assert "already named on line 3" in problems[4]


def test_names_tag_by_barcode_before_ids() -> None:
    reg = Registry()
    reg.learn_node(4609, 2, None, "4-A2346FZ")
    reg.set_names({"4-A2346FZ": {"panel": "p-bc"}, (4609, 2): {"panel": "p-id", "string": "s"},
                   (4609, 9): {"panel": "p9"}})
    assert reg.tags(4609, 2)["panel"] == "p-bc" and "string" not in reg.tags(4609, 2)
    assert reg.tags(4609, 9) == {"panel": "p9"}
    assert reg.tags(4610, 2) == {}


# --- the running ingest ----------------------------------------------------------------------

def run_ingest(*args: str) -> Child:
    return Child(tigo_execd_argv("run", "--jsonl", "-", "--stats-interval", "0", *args))


def feed(child: Child, *lines: bytes) -> None:
    child.proc.stdin.write(b"".join(l + b"\n" for l in lines))
    child.proc.stdin.flush()


def stop(child: Child) -> list[str]:
    child.close_stdin()
    assert child.finish(10) == 0, child.err
    return child.stdout_lines()


def test_state_file_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "sub" / "registry.json"
    first = run_ingest("--state-file", str(state))
    feed(first, infra({2: {"address": "04:C0:5B:40:00:A2:34:6F", "barcode": "4-A2346FZ"}}),
         fork_power(2))
    first.wait_for(lambda: state.exists(), 10, "state file written")
    stop(first)
    saved = orjson.loads(state.read_bytes())
    assert saved["nodes"]["4609"]["2"]["barcode"] == "4-A2346FZ"
    assert [p.name for p in state.parent.iterdir()] == ["registry.json"]  # no temporary left
    assert state.stat().st_mode & 0o777 == 0o644  # `tigo-execd nodes` run by another user reads it
    second = run_ingest("--state-file", str(state))
    feed(second, fork_power(2))  # a fork power report: no identity in it
    out = stop(second)
    assert tags(out[0])["barcode"] == "4-A2346FZ" and tags(out[0])["gateway_addr"] == GW_ADDR
    assert b"I! node registry" in second.err and b"1 nodes, 1 with a barcode" in second.err


def test_default_state_file_is_the_state_directory(tmp_path: Path) -> None:
    child = Child(tigo_execd_argv("run", "--jsonl", "-", "--stats-interval", "0"),
                  env={"STATE_DIRECTORY": str(tmp_path)})
    feed(child, infra({2: {"barcode": "4-A2346FZ"}}))
    stop(child)
    assert "4-A2346FZ" in (tmp_path / "registry.json").read_text()


@pytest.mark.parametrize("content", [b"{not json", b"", b"[1,2]", b'{"version": 1, "nodes": 5}',
                                     b"\xff\xfe garbage"])
def test_corrupt_state_file_warns_and_starts_empty(tmp_path: Path, content: bytes) -> None:
    state = tmp_path / "registry.json"
    state.write_bytes(content)
    child = run_ingest("--state-file", str(state))
    feed(child, fork_power(2), infra({2: {"barcode": "4-A2346FZ"}}), fork_power(2, second=21))
    out = stop(child)
    assert len(out) == 2 and "barcode" not in tags(out[0])
    assert tags(out[1])["barcode"] == "4-A2346FZ"
    if content != b'{"version": 1, "nodes": 5}':
        assert f"W! node registry {state} is unusable".encode() in child.err
    assert orjson.loads(state.read_bytes())["nodes"]["4609"]["2"]["barcode"] == "4-A2346FZ"


def test_unwritable_state_file_is_a_warning(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    child = run_ingest("--state-file", str(blocker / "registry.json"))
    feed(child, infra({2: {"barcode": "4-A2346FZ"}}), fork_power(2))
    out = stop(child)
    assert tags(out[0])["barcode"] == "4-A2346FZ"
    assert b"W! cannot save the node registry" in child.err


def test_names_file_edits_are_picked_up_live(tmp_path: Path) -> None:
    names = tmp_path / "names.csv"
    names.write_text("4-A2346FZ,east-1,east\n4609,3,east-2\nwrong line\n")
    child = run_ingest("--state-file", "", "--names", str(names))
    child.wait_stderr(b"2 nodes named")
    assert b"line 3: 'wrong line' is neither a barcode nor a gateway id (row skipped)" in child.err
    feed(child, infra({2: {"barcode": "4-A2346FZ"}}), fork_power(2), fork_power(3))
    child.wait_for(lambda: child.out.count(b"\n") == 2, 10, "two reports")
    first = [tags(l) for l in child.stdout_lines()]
    assert (first[0]["panel"], first[0]["string"]) == ("east-1", "east")
    assert first[1]["panel"] == "east-2" and "string" not in first[1]

    names.write_text("4-A2346FZ,west-1,west\n")  # noticed by the periodic check
    sent = 2
    while b"1 nodes named" not in child.err:
        feed(child, fork_power(2, second=sent % 60))
        sent += 1
        child.wait_for(lambda n=sent: child.out.count(b"\n") == n, 10, f"report {sent}")
    feed(child, fork_power(2), fork_power(3))
    out = stop(child)
    assert len(out) == sent + 2  # nothing lost while the file was re-read
    assert tags(out[-2])["panel"] == "west-1" and "panel" not in tags(out[-1])


def test_sighup_rereads_names_at_once(tmp_path: Path) -> None:
    """Same size and mtime, so only SIGHUP can notice the change."""
    names = tmp_path / "names.csv"
    names.write_text("4609,2,aaaa\n")
    child = run_ingest("--state-file", "", "--names", str(names))
    child.wait_stderr(b"1 nodes named")
    st = names.stat()
    with open(names, "r+") as f:
        f.write("4609,2,bbbb\n")
    os.utime(names, ns=(st.st_atime_ns, st.st_mtime_ns))
    feed(child, fork_power(2))
    child.wait_stdout(b"panel=aaaa")
    child.proc.send_signal(signal.SIGHUP)
    child.wait_for(lambda: child.err.count(b"1 nodes named") == 2, 10, "reload on SIGHUP")
    feed(child, fork_power(2, second=21))
    child.wait_stdout(b"panel=bbbb")
    child.proc.send_signal(signal.SIGHUP)  # unchanged: Telegraf's `signal = "SIGHUP"` every gather
    feed(child, fork_power(2, second=41))
    child.wait_for(lambda: child.out.count(b"\n") == 3, 10, "third report")
    stop(child)
    assert child.err.count(b"nodes named") == 2


def test_missing_names_file_warns_and_applies_once_created(tmp_path: Path) -> None:
    names = tmp_path / "names.csv"
    child = run_ingest("--state-file", "", "--names", str(names))
    child.wait_stderr(b"W! cannot read names file")
    names.write_text("4609,2,late\n")
    child.wait_stderr(b"1 nodes named")
    feed(child, fork_power(2))
    child.wait_stdout(b"panel=late")
    stop(child)


def test_names_file_separated_by_semicolons_or_tabs_says_so(tmp_path: Path) -> None:
    names = tmp_path / "names.csv"
    names.write_text("barcode;panel;string\n4-A2346FZ;east-1;east\n4609\t3\teast-2\n")
    child = run_ingest("--state-file", "", "--names", str(names))
    child.wait_stderr(b"0 nodes named")
    stop(child)
    warnings = [l for l in child.stderr_lines() if l.startswith("W! ")]
    advice = "the names file is comma-separated (save it as CSV with commas), e.g. 4-A2346FZ,east-1,east"
    assert warnings == [f"W! {names} lines 1, 2: fields separated by ';'; {advice} (row skipped)",
                        f"W! {names} line 3: fields separated by tabs; {advice} (row skipped)"]


def test_unknown_name_rows_are_only_told_after_the_nodes_had_a_cycle_to_report(tmp_path: Path) -> None:
    """At start nothing has reported: rows are judged once a node has reported twice since."""
    names = tmp_path / "names.csv"
    names.write_text("# barcode or ids\n4-A2346FZ,east-1\n4609,3,east-2\n4609,99,typo\n")
    child = run_ingest("--state-file", "", "--names", str(names))
    child.wait_stderr(b"3 nodes named")
    feed(child, infra({2: {"barcode": "4-A2346FZ"}}), fork_power(2), fork_power(3))
    child.wait_for(lambda: child.out.count(b"\n") == 2, 10, "two reports")
    assert b"have not reported" not in child.err
    feed(child, fork_power(2, second=21))  # a second cycle begins: every node had its turn
    child.wait_stderr(b"have not reported")
    out = stop(child)
    assert tags(out[1])["panel"] == "east-2"
    told = [l for l in child.stderr_lines() if "have not reported" in l]
    assert told == [(f"I! {names}: 1 rows name nodes that have not reported while the others did "
                     "(lines 4); a gateway,node row applies once that node reports, a barcode row "
                     "once taptap has learnt the barcode (the CCA sends it when it reads its node "
                     "table): check these rows")]


def test_layout_file_is_checked_when_it_changes_and_ingest_goes_on(tmp_path: Path) -> None:
    """run --layout: the drawing's own mistakes at once, its tokens once every node had a cycle to
    report, each a W! line with its line number; an edit is noticed like the names file's."""
    layout = tmp_path / "roof.txt"
    layout.write_text("[west azimuth=400]\n4609/2 4609/99\n")
    child = run_ingest("--state-file", "", "--layout", str(layout))
    child.wait_stderr(b"1 faces, 2 panels drawn")
    assert f"W! {layout} line 1: bad key 'azimuth=400'".encode() in child.err
    feed(child, fork_power(2), fork_power(3))
    child.wait_for(lambda: child.out.count(b"\n") == 2, 10, "two reports")
    assert b"names no known panel" not in child.err  # nothing has had the time to report yet
    feed(child, fork_power(2, second=21))
    child.wait_stderr(b"not drawn")
    told = [line for line in child.stderr_lines() if "4609/99" in line or "not drawn" in line]
    assert told[0].startswith(f"W! {layout} line 2: '4609/99' names no known panel")
    assert told[1] == f"I! {layout}: 1 panel reports but is not drawn: 4609/3"
    layout.write_text("[west azimuth=250]\n4609/2 4609/3\n")  # noticed by the periodic check
    sent = 3
    while b"1 faces, 2 panels drawn" not in child.err.split(b"not drawn", 1)[1]:
        feed(child, fork_power(2, second=sent % 60))
        sent += 1
        child.wait_for(lambda n=sent: child.out.count(b"\n") == n, 10, f"report {sent}")
    feed(child, fork_power(3, second=50), fork_power(2, second=51), fork_power(3, second=52))
    out = stop(child)
    assert len(out) == sent + 3  # ingest never waited for the layout
    assert child.err.count(b"names no known panel") == 1 and child.err.count(b"not drawn") == 1
