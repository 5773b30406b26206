"""taptap as the field runs it (issue 24): a site of 2,100 optimizers on one infrastructure report
line, stale node tables that contradict the live reports, the fork's state file, and the fork's
next line shape (flat ids, no event_type).

The large site and the state file are tested end to end through `run` with the fake taptap (both
as `--taptap-cmd` and behind the bridge); the tables and line shapes through the Converter.
"""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path

import orjson
import pytest

from support.bridge_run import run_bridge, taptap_starts
from support.fuzz_strategies import barcode, colon
from support.paths import DATA
from support.proc import FAKE_TAPTAP, Child, tigo_execd_argv
from support.taptap_lines import infrastructure_report, power_report
from tigo_execd.ingest.convert import Converter
from tigo_execd.linesplit import MAX_LINE, LineSplitter

TIGO = b"\x04\xc0\x5b"
GATEWAYS = range(4609, 4616)  # 7 TAPs, the most a CCA serves (TAPTAP.md)
NODES = range(2, 302)         # 300 optimizers on each
VERSION = "Mgate Version G8.59\rJul  6 2020\r16:51:51\rGW-H158.4.3S0.12\r"  # tests/data/taptap-fork.jsonl
STAMP = "2025-04-03T19:19:42.862954593+02:00"


def node_address(gateway: int, node: int) -> bytes:
    return TIGO + bytes([0x40 + gateway - GATEWAYS[0]]) + node.to_bytes(4, "big")


def gateway_address(gateway: int) -> bytes:
    return TIGO + bytes([0x30, 0x00, 0x02, 0xBE, gateway - GATEWAYS[0]])


def site_lines() -> tuple[bytes, list[bytes]]:
    """The fork's infrastructure report of the whole site, and a power report from each optimizer."""
    infra = infrastructure_report(
        {gw: {n: {"address": colon(node_address(gw, n)), "barcode": barcode(node_address(gw, n))}
              for n in NODES} for gw in GATEWAYS},
        {gw: {"address": colon(gateway_address(gw)), "version": VERSION} for gw in GATEWAYS})
    return infra, [power_report(n, gw, STAMP) for gw in GATEWAYS for n in NODES]


def assert_every_report_tagged(lines: list[str]) -> None:
    reports = [l for l in lines if l.startswith("tigo_power_report,")]
    assert len(reports) == len(GATEWAYS) * len(NODES)
    for line in reports:
        tags = dict(kv.split("=", 1) for kv in line.split(" ", 1)[0].split(",")[1:])
        address = node_address(int(tags["gateway_id"]), int(tags["node_id"]))
        assert tags.get("barcode") == barcode(address), line
        assert tags.get("node_addr") == address.hex(), line
        assert tags.get("gateway_addr") == gateway_address(int(tags["gateway_id"])).hex(), line


def test_a_site_of_2100_optimizers_is_one_line_over_128_kib():
    infra, _ = site_lines()
    assert 128 * 1024 < len(infra) < MAX_LINE / 4


@pytest.mark.parametrize("piece", [0, 16 * 1024], ids=["whole", "16KiB-pieces"])
def test_large_site_through_taptap_cmd(tmp_path, piece):
    infra, reports = site_lines()
    lines = tmp_path / "site.jsonl"
    lines.write_bytes(b"\n".join([infra, *reports]) + b"\n")
    state = tmp_path / "taptap-state.json"
    cmd = " ".join([*FAKE_TAPTAP, "observe", "--serial", "/dev/null", "--state-file", str(state)])
    child = Child(tigo_execd_argv("run", "--taptap-cmd", cmd, "--stats-interval", "0", "--state-file",
                                  "", "--clock-check", "off"),
                  env={"FAKE_TAPTAP_BUILD": "fork", "FAKE_TAPTAP_LINES": str(lines),
                       "FAKE_TAPTAP_THEN": "sleep", "FAKE_TAPTAP_PIECE": str(piece)})
    try:
        child.wait_for(lambda: child.out.count(b"\n") >= len(reports), 30, "every report")
    finally:
        child.close_stdin()
    assert child.finish(5) == 0
    assert_every_report_tagged(child.stdout_lines())
    assert b"longer than" not in child.err and b"W! " not in child.err


@pytest.mark.parametrize("piece", [0, 16 * 1024], ids=["whole", "16KiB-pieces"])
def test_large_site_through_the_bridge(tmp_path, piece):
    infra, reports = site_lines()
    capture = tmp_path / "bus.bin"  # the fake taptap "decodes" JSON lines from the bus
    capture.write_bytes(b"\n".join([infra, *reports]) + b"\n")

    async def scenario():
        async with run_bridge(tmp_path, "--replay", str(capture), "--replay-speed", "max",
                              env={"FAKE_TAPTAP_BUILD": "fork",
                                   "FAKE_TAPTAP_PIECE": str(piece)}) as run:
            assert await run.finish(60) == 0
        return run

    run = asyncio.run(scenario())
    assert_every_report_tagged(run.out.decode().splitlines())
    assert "lines_too_long=0i" in run.stats()[-1]


# ---------------------------------------------------------------- one line limit


def split_all(chunks: list[bytes], limit: int = 10) -> tuple[list[bytes], list[int]]:
    dropped: list[int] = []
    splitter = LineSplitter(dropped.append, limit)
    lines = [line for chunk in chunks for line in splitter.feed(chunk)]
    if rest := splitter.rest():
        lines.append(rest)
    return lines, dropped


@pytest.mark.parametrize("cut", [1, 2, 3, 7, 11, 64])
def test_the_splitter_gives_the_same_lines_however_the_input_is_cut(cut):
    data = b"short\n" + b"x" * 10 + b"\n" + b"y" * 11 + b"\nnext\n" + b"z" * 30 + b"\n\nlast"
    chunks = [data[i:i + cut] for i in range(0, len(data), cut)]
    lines, dropped = split_all(chunks)
    assert lines == [b"short", b"x" * 10, b"next", b"", b"last"]
    assert len(dropped) == 2  # each line over the limit is said once, however many chunks it took


def test_a_line_over_the_limit_is_counted_said_once_and_reading_goes_on(tmp_path):
    good = (DATA / "taptap-upstream.jsonl").read_bytes().splitlines(True)[0]
    path = tmp_path / "long.jsonl"
    path.write_bytes(good + b'{"pad":"' + b"x" * (MAX_LINE + 10) + b'"}\n' + good)
    child = Child(tigo_execd_argv("run", "--jsonl", str(path), "--stats-interval", "1"))
    assert child.finish() == 0
    lines = child.stdout_lines()
    assert len(lines) == 3
    assert "lines_too_long=1i" in lines[-1] and "lines_invalid=1i" in lines[-1]
    told = [l for l in child.stderr_lines() if "1 MiB" in l]
    assert len(told) == 1 and told[0].startswith("W! ")


# ---------------------------------------------------------------- stale tables

A, B = node_address(4609, 2), node_address(4609, 3)


def fork_infra(tables: dict[int, dict[int, bytes]]) -> bytes:
    return infrastructure_report({gw: {n: {"address": colon(a), "barcode": barcode(a)}
                                       for n, a in nodes.items()} for gw, nodes in tables.items()})


def tags_of(line: str) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in line.split(" ", 1)[0].split(",")[1:])


def test_a_stale_table_never_untags_the_live_optimizer(logged: io.StringIO):
    """The optimizer of A moved from gateway 4610 (node 5) to 4609 (node 2); the fork keeps 4610's
    old table until 4610's next full table, so every report lists A under both gateways."""
    conv = Converter()
    conv.convert(fork_infra({4610: {5: A}}))
    assert tags_of(conv.convert(power_report(5, 4610, STAMP)))["barcode"] == barcode(A)
    for second in range(100):
        conv.convert(fork_infra({4609: {2: A, 3: B}, 4610: {5: A}}))
        live = conv.convert(power_report(2, 4609, f"2025-04-03T19:{20 + second // 60:02d}:"
                                                  f"{second % 60:02d}+02:00"))
        assert tags_of(live)["barcode"] == barcode(A)
    assert "barcode" not in tags_of(conv.convert(power_report(5, 4610, STAMP)))
    moves = [l for l in logged.getvalue().splitlines() if "moved" in l]
    assert moves == [f"W! {barcode(A)} moved from gateway 4610 node 5 to gateway 4609 node 2; the "
                     f"old id is untagged until it is learnt again"]


def test_a_contradictory_table_at_start_tags_the_optimizer_that_reports(logged: io.StringIO):
    conv = Converter()
    conv.convert(fork_infra({4609: {2: A}, 4610: {5: A}}))
    assert tags_of(conv.convert(power_report(2, 4609, STAMP)))["barcode"] == barcode(A)
    assert "barcode" not in tags_of(conv.convert(power_report(5, 4610, STAMP)))
    assert "moved" not in logged.getvalue()  # nothing moved: it was never known elsewhere


def test_a_real_move_still_follows_the_new_table(logged: io.StringIO):
    """The CCA re-enumerated: the new table of the same gateway names A under node 7 only."""
    conv = Converter()
    conv.convert(fork_infra({4609: {2: A, 3: B}}))
    conv.convert(power_report(2, 4609, STAMP))
    conv.convert(fork_infra({4609: {7: A, 3: B}}))
    assert tags_of(conv.convert(power_report(7, 4609, STAMP)))["barcode"] == barcode(A)
    assert "barcode" not in tags_of(conv.convert(power_report(2, 4609, STAMP)))
    assert f"W! {barcode(A)} moved from gateway 4609 node 2 to gateway 4609 node 7" in logged.getvalue()


def test_the_state_file_keeps_the_owner_not_the_stale_claim():
    conv = Converter()
    conv.convert(fork_infra({4609: {2: A}, 4610: {5: A}}))
    conv.convert(power_report(2, 4609, STAMP))
    saved = orjson.loads(orjson.dumps(conv.registry.to_json()))
    assert saved["nodes"] == {"4609": {"2": {"node_addr": A.hex(), "barcode": barcode(A)}}}


# ---------------------------------------------------------------- the fork's state file


def test_the_fork_gets_a_state_file_and_its_identities_survive_a_restart(tmp_path, monkeypatch):
    """The fork from 0.2.5 prints infrastructure reports only with a state file: `run` gives it one
    in its state directory, so barcodes are learnt, and the next start prints them again."""
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    infra = fork_infra({4609: {2: A}})
    bus = tmp_path / "bus.bin"
    bus.write_bytes(infra + b"\n" + power_report(2, 4609, STAMP) + b"\n")
    only_power = tmp_path / "power.bin"
    only_power.write_bytes(power_report(2, 4609, STAMP) + b"\n")

    async def replay(capture: Path):
        async with run_bridge(tmp_path, "--replay", str(capture), "--replay-speed", "max",
                              env={"FAKE_TAPTAP_BUILD": "fork"}) as run:
            assert await run.finish(30) == 0
        return run

    first = asyncio.run(replay(bus))
    assert tags_of(first.reports()[0])["barcode"] == barcode(A)
    state = tmp_path / "state" / "taptap-state.json"
    assert taptap_starts(tmp_path)[0][1].endswith(f" --state-file {state}")
    assert state.exists()
    # tigo-execd's own registry is off (`--state-file ''`): only taptap's state file knows A now
    second = asyncio.run(replay(only_power))
    assert tags_of(second.reports()[0])["barcode"] == barcode(A)


def test_without_a_state_file_the_fork_reports_no_identities_and_run_says_what_to_add(tmp_path):
    lines = tmp_path / "lines.jsonl"
    lines.write_bytes(fork_infra({4609: {2: A}}) + b"\n" + power_report(2, 4609, STAMP) + b"\n")
    cmd = " ".join([*FAKE_TAPTAP, "observe", "--serial", "/dev/null"])
    child = Child(tigo_execd_argv("run", "--taptap-cmd", cmd, "--stats-interval", "0", "--state-file",
                                  "", "--clock-check", "off"),
                  env={"FAKE_TAPTAP_BUILD": "fork", "FAKE_TAPTAP_LINES": str(lines),
                       "FAKE_TAPTAP_THEN": "sleep", "STATE_DIRECTORY": str(tmp_path / "state")})
    try:
        child.wait_stdout(b"tigo_power_report", timeout=10)
    finally:
        child.close_stdin()
    assert child.finish(5) == 0
    assert "barcode" not in tags_of(child.stdout_lines()[0])
    state = tmp_path / "state" / "taptap-state.json"
    assert [l for l in child.stderr_lines() if "state file" in l] == [
        f"W! --taptap-cmd passes no state file: this taptap prints no infrastructure report without "
        f"--state-file, so no barcode ever reaches the reports: add `--state-file {state}` to the "
        f"taptap command"]


@pytest.mark.parametrize("build, option", [("upstream", None), ("fork-0.2.0", "--persistent-file"),
                                           ("fork", "--state-file")])
def test_the_state_option_is_asked_of_the_program(tmp_path, build, option):
    capture = tmp_path / "bus.bin"
    capture.write_bytes(power_report(2, 4609, STAMP) + b"\n")

    async def scenario():
        async with run_bridge(tmp_path, "--replay", str(capture), "--replay-speed", "max",
                              env={"FAKE_TAPTAP_BUILD": build}) as run:
            assert await run.finish(30) == 0
        return run

    run = asyncio.run(scenario())
    assert len(run.reports()) == 1
    [(_, argv)] = taptap_starts(tmp_path)
    if option:
        assert re.fullmatch(rf"observe --tcp 127\.0\.0\.1 --port \d+ {option} \S+taptap-state\.json",
                            argv)
    else:
        assert re.fullmatch(r"observe --tcp 127\.0\.0\.1 --port \d+", argv)


# ---------------------------------------------------------------- line shapes


def test_flat_ids_without_event_type_convert_byte_identical_to_the_fork():
    """The fork's development branch drops event_type from power reports (src/observer/event.rs)."""
    fork = (DATA / "taptap-fork.jsonl").read_bytes().splitlines()
    flat = (DATA / "taptap-fork-flat.jsonl").read_bytes().splitlines()
    assert len(flat) == len(fork)
    out_fork = Converter().convert_lines(fork)
    out_flat = Converter().convert_lines(flat)
    assert out_flat == out_fork and out_flat.count("\n") == 7 and "barcode=4-A2346FZ" in out_flat


@pytest.mark.parametrize("node, expected", [
    # upstream git of 2025-02-07 printed an unknown barcode as null; the address still gives it
    ({"id": 2, "address": list(A), "barcode": None}, {"node_addr": A.hex(), "barcode": barcode(A)}),
    # an address outside Tigo's range: taptap writes it as its "barcode", in colon hex
    ({"id": 2, "address": list(range(8)), "barcode": colon(bytes(range(8)))},
     {"node_addr": bytes(range(8)).hex()}),
])
def test_upstream_barcodes_that_are_none(node, expected):
    line = orjson.dumps({"gateway": {"id": 4609}, "node": node, "timestamp": STAMP,
                         "voltage_in": 30.6, "voltage_out": 30.2, "current": 6.94,
                         "dc_dc_duty_cycle": 1.0, "temperature": 26.8, "rssi": 132})
    tags = tags_of(Converter().convert(line))
    assert {k: v for k, v in tags.items() if k in ("node_addr", "barcode")} == expected


def test_jsonl_of_unknown_events_is_skipped_quietly_without_the_capture_hint(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"event_type":"topology_report","gateway":4609,"node":2}\n' * 3)
    child = Child(tigo_execd_argv("run", "--jsonl", str(path), "--stats-interval", "1", "--state-file",
                                  ""))
    assert child.finish() == 0
    assert "lines_skipped=3i" in child.stdout_lines()[-1]
    assert child.err == b""


def test_a_commands_exit_is_explained_by_what_is_known(tmp_path):
    path = tmp_path / "old.jsonl"
    path.write_bytes((DATA / "taptap-fork.jsonl").read_bytes())
    child = Child(tigo_execd_argv("run", "--taptap-cmd", f"cat {path}", "--stats-interval", "0",
                                  "--state-file", "", "--clock-check", "off"))
    try:
        child.wait_stderr(b"restarting in 1 s")
    finally:
        child.close_stdin()
    child.finish(5)
    told = [l for l in child.stderr_lines() if "exited" in l]
    assert told[0] == "W! taptap exited with code 0 (it ended); restarting in 1 s"
    assert b"TCP" not in child.err
