"""The layout file and `tigo-execd layout` (issue 22).

The parser on every mistake the issue names (each a line-numbered message); bad files through the
command line (a clear E! line and an exit code from the table, no traceback); the command against a
real InfluxDB holding the demo day; and the SVG rendered by a real browser (Debian's chromium,
headless), whose pixels show the weak demo panel apart from its face, silent panels grey and every
drawn panel present. The rendering is kept as tests/output/roof.png (docs/roof.png is a copy).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from xml.etree import ElementTree

import orjson
import pytest

from support.chromium import Png, screenshot
from support.paths import ROOT
from support.proc import tigo_execd_argv
from tigo_execd.identity.layout import Known, LayoutError, Reported, read

EXAMPLE = """# our house
[east azimuth=115 tilt=30]
E1 E2 E3
E4 .  E5

[west azimuth=245 tilt=30]
4609/13 4609/14 4-A2346FZ
"""
NAMES = {(4609, n): {"panel": f"E{n}", "string": "east"} for n in range(1, 6)}
NAMES["4-A2346FZ"] = {"panel": "W4"}
KNOWN = Known.build(NAMES, None, [Reported((4609, 13)), Reported((4609, 14)), Reported((4609, 1)),
                                  Reported((4610, 9), None, "X9")])
DEMO_10_15_BEFORE_END_S = 40867  # the demo day's 10:15 (+02:00) is this long before its last report
SVG_NS = {"svg": "http://www.w3.org/2000/svg"}


def layout_of(tmp_path: Path, text: str | bytes, known: Known = KNOWN):
    path = tmp_path / "roof.txt"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return read(path, "roof.txt").resolve(known)


def mistakes(tmp_path: Path, text: str | bytes) -> list[str]:
    with pytest.raises(LayoutError) as caught:
        layout_of(tmp_path, text)
    return caught.value.problems


# ------------------------------------------------------------------ the parser

def test_the_issue_example_is_parsed_face_by_face(tmp_path):
    layout = layout_of(tmp_path, EXAMPLE)
    east, west = layout.faces
    assert (east.name, east.azimuth, east.tilt, east.line, east.columns) == ("east", 115, 30, 2, 3)
    assert [[s and s.panel_id for s in row] for row in east.rows] == [
        ["4609/1", "4609/2", "4609/3"], ["4609/4", None, "4609/5"]]
    assert [s.label for s in west.spots()] == ["4609/13", "4609/14", "W4"]
    barcode = list(west.spots())[2]
    assert (barcode.key, barcode.barcode, barcode.panel_id) == (None, "4-A2346FZ", "")
    assert layout.peer_groups()[(4609, 13)] == "face west"
    assert layout.undrawn_note(KNOWN) == "roof.txt: 1 panel reports but is not drawn: 4610/9"


def test_rows_before_any_header_are_the_face_roof_and_have_no_peer_group(tmp_path):
    layout = layout_of(tmp_path, "4609/13 X9\n")
    assert [f.name for f in layout.faces] == ["roof"]
    assert [s.panel_id for _, s in layout.spots()] == ["4609/13", "4610/9"]  # X9: the reports' tag
    assert layout.peer_groups() == {}


@pytest.mark.parametrize(("text", "expected"), [
    ("E1 nope\n", ["roof.txt line 1: 'nope' names no known panel"]),
    ("\n\nE1 4609/99\n", ["roof.txt line 3: '4609/99' names no known panel: no gateway 4609 node 99"]),
    ("E1 4-A2346FX\n", ["roof.txt line 1: '4-A2346FX' names no known panel", "wrong check letter"]),
    ("E1 E2\nE1\n", ["roof.txt line 2: 'E1' is drawn twice: already on line 1"]),
    ("E1\n4609/1\n", ["roof.txt line 2: '4609/1' is drawn twice: already on line 1 as 'E1', the same panel"]),
    ("[east]\nE1\n[west]\n", ["roof.txt line 3: face 'west' has no rows"]),
    ("[west]\n. .\n[east]\nE1\n", ["roof.txt line 1: face 'west' has no panels (only empty spots)"]),
    ("[east azimut=115]\nE1\n", ["roof.txt line 1: bad key 'azimut=115': a face header knows azimuth"]),
    ("[east azimuth=south]\nE1\n", ["line 1: bad key 'azimuth=south': azimuth is a number of degrees"]),
    ("[east tilt=91]\nE1\n", ["line 1: bad key 'tilt=91': tilt is a number of degrees from 0 to 90"]),
    ("[east tilt]\nE1\n", ["roof.txt line 1: bad key 'tilt'"]),
    ("[east tilt=3 tilt=4]\nE1\n", ["roof.txt line 1: tilt is given twice"]),
    ("[azimuth=3]\nE1\n", ["roof.txt line 1: the face has no name"]),
    ("[east\nE1\n", ["roof.txt line 1: a face header is `[name key=value ...]`"]),
    ("[east]\nE1\n[east]\nE2\n", ["roof.txt line 3: face 'east' is already drawn on line 1"]),
    ("E1 " + "x" * 65 + "\n", ["roof.txt line 1: 'xxxx", "at most 64 printable characters"]),
    ("E1 a\x07b\n", ["roof.txt line 1: 'a\\x07b' is not a panel: a token is a name of at most 64"]),
])
def test_every_mistake_is_a_line_numbered_message(tmp_path, text, expected):
    problems = mistakes(tmp_path, text)
    assert len(problems) == 1, problems
    for part in expected:
        assert part in problems[0]


def test_all_mistakes_of_a_file_are_told_at_once_in_line_order(tmp_path):
    """Those of the drawing first (no InfluxDB needed to find them), then those of its tokens."""
    drawing = mistakes(tmp_path, "[a bad=1]\nE1 nope\n[b]\n[c tilt=x]\nE2\n")
    assert [re.search(r"line (\d+)", p)[1] for p in drawing] == ["1", "3", "4"]  # type: ignore[index]
    tokens = mistakes(tmp_path, "[a]\nE1 nope\n[b]\nE1 E2 4609/77\n")
    assert [re.search(r"line (\d+)", p)[1] for p in tokens] == ["2", "4", "4"]  # type: ignore[index]


def test_a_name_given_to_two_panels_must_be_drawn_by_id(tmp_path):
    known = Known.build({(1, 1): {"panel": "A"}, (1, 2): {"panel": "A"}})
    with pytest.raises(LayoutError) as caught:
        layout_of(tmp_path, "A\n", known)
    assert "'A' is the name of 2 panels (1/1, 1/2): draw them by barcode or gateway/node" in \
        caught.value.problems[0]


@pytest.mark.parametrize(("content", "code", "expected"), [
    (b"", 65, "no panels: the file is empty"),
    (b"# only a comment\n\n", 65, "no panels: the file is empty"),
    (b"4609/2 " * (10 * 1024 * 1024 // 7), 65, "over 1024 KiB, too big"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", 65, "line 3: binary data (a NUL byte)"),
    (b"[ost]\nS\xfcd\n", 65, "line 2: not UTF-8 text (byte 0xfc at offset 7)"),
    (None, 66, "cannot open layout file"),
    (b"[east azimuth=400]\n4609/2\n", 65, "line 1: bad key 'azimuth=400'"),
    (b"[east]\n", 65, "line 1: face 'east' has no rows"),
])
def test_a_bad_file_is_one_clear_error_and_an_exit_code(tmp_path, content, code, expected):
    """Checked before InfluxDB is asked anything (the URL here answers nothing)."""
    path = tmp_path / "roof.txt"
    if content is not None:
        path.write_bytes(content)
    proc = subprocess.run(tigo_execd_argv("layout", "--layout", str(path), "--influx-url",
                                          "http://127.0.0.1:9", "--state-file", ""),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == code, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("E! ")]
    assert len(errors) == 1 and expected in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


# ------------------------------------------------------------------ against InfluxDB

@pytest.fixture(scope="module")
def demo_db(influxd, tmp_path_factory):
    """The demo day in a database of its own, without 4611/7's reports after 08:00 (a silent
    panel), 4610/3's fault kinds from the night before; returns (client, epoch ns of the demo day's
    10:15)."""
    lines = subprocess.run(tigo_execd_argv("run", "--demo", "--stats-interval", "0"), capture_output=True,
                           timeout=120, check=True).stdout.splitlines(True)
    last = max(int(line.rsplit(b" ", 1)[1]) for line in lines)
    at_10_15 = last - DEMO_10_15_BEFORE_END_S * 10**9
    silent_from = at_10_15 - int(2.25 * 3600) * 10**9
    kept = [line for line in lines if not (b"gateway_id=4611,node_id=7," in line
                                           and int(line.rsplit(b" ", 1)[1]) > silent_from)]
    name = "layout_demo"
    influxd.raw_query(f'CREATE DATABASE "{name}"')
    db = influxd.client(name)
    for i in range(0, len(kept), 20_000):
        db.write(b"".join(kept[i:i + 20_000]))
    # what the watchdog's analysis would have written the night before: 4610/3 is underperforming
    night = at_10_15 - 8 * 3600 * 10**9
    db.write(f'tigo_panel_day,gateway_id=4610,node_id=3 kinds="underperforming" {night}\n'.encode())
    yield db, at_10_15
    influxd.raw_query(f'DROP DATABASE "{name}"')


def layout_cmd(db, *args: str, now_ns: int | None = None) -> subprocess.CompletedProcess[str]:
    when = ["--now", _rfc3339(now_ns)] if now_ns else []
    return subprocess.run(tigo_execd_argv("layout", "--influx-url", db.url, "--db", db.db, "--state-file",
                                          "", *when, *args),
                          capture_output=True, text=True, timeout=120, env=_tz())


def _tz() -> dict[str, str]:
    import os
    return {**os.environ, "TZ": "Etc/GMT-2"}  # the demo's own offset, +02:00


def _rfc3339(ns: int) -> str:
    from datetime import UTC, datetime
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def panels(svg: str) -> dict[str, ElementTree.Element]:
    root = ElementTree.fromstring(svg)
    return {r.get("data-panel", ""): r for r in root.iter("{http://www.w3.org/2000/svg}rect")
            if r.get("data-panel") is not None}


def test_the_demo_roof_in_a_real_browser(demo_db, tmp_path, output_dir):
    """Every drawn panel present, the weak 4610/3 visibly apart from its west peers, the silent
    4611/7 grey: read from the screenshot's pixels at each panel's centre."""
    db, at = demo_db
    proc = layout_cmd(db, "--demo", "--output", str(tmp_path / "roof.svg"), now_ns=at)
    assert proc.returncode == 0, proc.stderr
    svg = (tmp_path / "roof.svg").read_text()
    rects = panels(svg)
    expected = {f"{gw}/{n}" for gw, count in ((4609, 9), (4610, 7), (4611, 6)) for n in range(2, count + 2)}
    assert set(rects) == expected  # 4609/10 is drawn by its barcode 4-A23D0AK
    root = ElementTree.fromstring(svg)
    width, height = int(root.get("width", "0")), int(root.get("height", "0"))
    png = tmp_path / "roof.png"
    screenshot(tmp_path / "roof.svg", png, width, height)
    shutil.copy(png, output_dir / "roof.png")
    image = Png(png)
    assert (image.width, image.height) == (width, height)

    def centre(panel: str) -> tuple[int, int, int]:
        r = rects[panel]
        return image.rgb(float(r.get("x", 0)) + float(r.get("width", 0)) / 2,
                         float(r.get("y", 0)) + float(r.get("height", 0)) / 2)

    drawn = {p: centre(p) for p in expected}
    for p, rgb in drawn.items():  # the browser drew each panel in the colour the SVG gives it
        assert _distance(rgb, _hex(rects[p].get("fill", ""))) < 8, (p, rgb)
    assert drawn["4611/7"] == (0x9E, 0x9E, 0x9E) and rects["4611/7"].get("data-value") == ""
    weak_rect = rects["4610/3"]  # its current fault: a black triangle in the top right corner
    corner = (float(weak_rect.get("x", 0)) + float(weak_rect.get("width", 0)) - 7,
              float(weak_rect.get("y", 0)) + 7)
    assert image.rgb(*corner) == (0, 0, 0) and weak_rect.get("data-fault") == "underperforming"
    peers = [p for p in expected if p.startswith(("4609/", "4610/")) and p not in ("4610/3", "4609/7")]
    weak = drawn["4610/3"]
    assert min(_distance(weak, drawn[p]) for p in peers) > 60  # plainly another colour
    assert max(_distance(drawn[a], drawn[b]) for a in peers for b in peers) < 40  # peers look alike
    value = {p: float(rects[p].get("data-value") or "nan") for p in expected}
    best = max(value[p] for p in peers)
    assert 0.6 < value["4610/3"] / best < 0.8  # the demo's weak panel makes 70 % of its peers
    assert "night, no panel" not in svg


def test_energy_today_and_night(demo_db):
    """Energy today ranks the weak panel as the dashboard would (70 %); at night the picture says
    so and no panel reads as weak."""
    db, at = demo_db
    proc = layout_cmd(db, "--demo", "--metric", "energy_today", now_ns=at + 4 * 3600 * 10**9)
    assert proc.returncode == 0, proc.stderr
    rects = panels(proc.stdout)
    west = [float(rects[f"4610/{n}"].get("data-value", "")) for n in (2, 4, 6, 7, 8)]
    assert 0.6 < float(rects["4610/3"].get("data-value", "")) / max(west) < 0.8
    night = layout_cmd(db, "--demo", now_ns=at + 12 * 3600 * 10**9)
    assert night.returncode == 0, night.stderr
    assert "night, no panel has reported since" in night.stdout
    assert {r.get("data-value") for p, r in panels(night.stdout).items() if p != "4611/7"} == {"0"}


def test_fault_kinds_colour_the_faults_metric(demo_db):
    db, at = demo_db
    proc = layout_cmd(db, "--demo", "--metric", "faults", now_ns=at)
    assert proc.returncode == 0, proc.stderr
    rects = panels(proc.stdout)
    assert rects["4610/3"].get("data-fault") == "underperforming"
    assert rects["4610/3"].get("data-value") == "1" and rects["4610/2"].get("data-value") == "0"
    assert proc.stdout.count("<polygon") == 2  # the mark and the legend's


def test_unknown_tokens_and_undrawn_panels_against_the_reports(demo_db, tmp_path):
    db, at = demo_db
    path = tmp_path / "roof.txt"
    path.write_text("[west azimuth=250]\n4609/2 4609/3\n4609/4 4609/99 nope\n")
    proc = layout_cmd(db, "--layout", str(path), now_ns=at)
    assert proc.returncode == 65 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("E! ")]
    assert len(errors) == 2, proc.stderr
    for error, token in zip(errors, ("4609/99", "nope")):
        assert error.startswith(f"E! {path} line 3: '{token}' names no known panel")
    path.write_text("[west azimuth=250]\n4609/2 4609/3\n")
    ok = layout_cmd(db, "--layout", str(path), now_ns=at)
    assert ok.returncode == 0, ok.stderr
    notes = [line for line in ok.stderr.splitlines() if "report but are not drawn" in line]
    assert len(notes) == 1 and notes[0].startswith("I! ") and "20 panels" in notes[0], ok.stderr
    assert set(panels(ok.stdout)) == {"4609/2", "4609/3"}


def _hex(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _distance(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    return float(sum((x - y) ** 2 for x, y in zip(a, b)) ** 0.5)


def test_faults_takes_a_face_with_an_azimuth_as_one_peer_group(demo_db, tmp_path):
    """The demo's west face joins gateways 4609 and 4610 into one group: the weak 4610/3 is still
    found, now judged against its face; a face without azimuth leaves the groups alone."""
    db, _ = demo_db
    demo = str(ROOT / "tigo_execd" / "data" / "demo-layout.txt")
    proc = subprocess.run(tigo_execd_argv("faults", "--influx-url", db.url, "--db", db.db, "--format", "json",
                                          "--days", "2", "--threshold", "under_days=1", "--layout", demo),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    weak = [f for f in orjson.loads(proc.stdout) if (f["gateway_id"], f["node_id"]) == (4610, 3)]
    judged = [(f["kind"], f["peer_group"], f["string"]) for f in weak]
    assert judged == [("underperforming", "face west", None)]
    path = tmp_path / "roof.txt"
    path.write_text("[west azimuth=250]\n4609/2 4609/3 4609/2\n")
    bad = subprocess.run(tigo_execd_argv("faults", "--influx-url", db.url, "--db", db.db,
                                         "--layout", str(path)),
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 65 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith(f"E! {path} line 2: '4609/2' is drawn twice: already on line 2"), bad.stderr


def test_names_from_the_names_file_and_an_output_that_cannot_be_written(demo_db, tmp_path):
    db, at = demo_db
    names = tmp_path / "names.csv"
    names.write_text("4609,2,W-top,west\n")
    path = tmp_path / "roof.txt"
    path.write_text("W-top 4609/3\n")
    blocked = layout_cmd(db, "--layout", str(path), "--names", str(names), "--output",
                         str(tmp_path / "missing" / "roof.svg"), now_ns=at)
    assert blocked.returncode == 73 and "Traceback" not in blocked.stderr
    assert [line for line in blocked.stderr.splitlines() if line.startswith("E! ")] == [
        f"E! layout: cannot write {tmp_path / 'missing' / 'roof.svg'}: No such file or directory"]
    ok = layout_cmd(db, "--layout", str(path), "--names", str(names), now_ns=at)
    assert ok.returncode == 0, ok.stderr
    assert {p: r.get("data-label") for p, r in panels(ok.stdout).items()} == {"4609/2": "W-top",
                                                                             "4609/3": "4-A23D03V"}
    missing = layout_cmd(db, "--layout", str(path), "--names", str(tmp_path / "nope.csv"), now_ns=at)
    assert missing.returncode == 66 and "cannot open names file" in missing.stderr


def test_an_empty_database_is_said_before_the_tokens_it_cannot_know(influx_db, tmp_path):
    path = tmp_path / "roof.txt"
    path.write_text("4609/2\n")
    proc = layout_cmd(influx_db, "--layout", str(path))
    assert proc.returncode == 65, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0].startswith(f"W! no reports in {influx_db.db} \"tigo_power_report\" in the 7 days before")
    assert lines[1].startswith(f"E! {path} line 1: '4609/2' names no known panel")
