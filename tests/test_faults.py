"""`tigo-execd faults` against a real InfluxDB holding a generated week (tests/support/site.py).

The standard site: gateway 4609 with strings east and west, gateway 4610 with south, 8 panels
each, every third a TS4-A-S (voltage_out 0); a week of sunny days, passing clouds, an overcast
day and a snow day where the whole array drops. The faulty copy has one panel per kind
(site.INJECTED); the clean copy has none. Here: the output formats, options and errors, snow,
renumbered nodes and clock jumps. Whether each condition is found, and nothing else, on real
roofs: test_faults_physical.py (pvlib's physics, not this hand-shaped site).
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
from collections.abc import Iterator

import orjson
import pytest

from support import site
from support.proc import tigo_execd_argv
from support.servers import InfluxServer, free_port
from tigo_execd.analysis.fault_rules import panel_days
from tigo_execd.analysis.faults import FaultSettings, analyse
from tigo_execd.influx import Influx

NOW = "2026-06-22T00:00:00Z"  # the end of the generated week
LOCATED = ["--latitude", str(site.LATITUDE), "--longitude", str(site.LONGITUDE)]


def faults(url: str, db: str, *args: str,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(tigo_execd_argv("faults", "--influx-url", url, "--db", db, "--now", NOW, *args),
                          capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})


def findings(proc: subprocess.CompletedProcess[str]) -> list[dict[str, object]]:
    assert "Traceback" not in proc.stderr
    return orjson.loads(proc.stdout)  # type: ignore[no-any-return]


def kinds(found: list[dict[str, object]]) -> dict[tuple[object, object], set[tuple[object, object]]]:
    out: dict[tuple[object, object], set[tuple[object, object]]] = {}
    for f in found:
        out.setdefault((f["gateway_id"], f["node_id"]), set()).add((f["kind"], f["severity"]))
    return out


@pytest.fixture(scope="module")
def faulty(influxd: InfluxServer) -> Iterator[Influx]:
    with influxd.database("faults") as db:
        site.standard(site.INJECTED).write(db)
        yield db


@pytest.fixture(scope="module")
def clean(influxd: InfluxServer) -> Iterator[Influx]:
    with influxd.database("faults") as db:
        site.standard().write(db)
        yield db


@pytest.fixture
def names(tmp_path):
    path = tmp_path / "names.csv"
    path.write_text(site.standard().names_csv())
    return path




def test_findings_carry_the_evidence_in_numbers(influxd, faulty, names):
    found = {f["kind"]: f for f in findings(faults(influxd.url, faulty.db, "--format", "json",
                                                   "--names", str(names), *LOCATED))}
    assert "voltage_in is 66% of its peers'" in found["bypass_diode"]["message"]
    assert found["bypass_diode"]["since"].startswith("2026-06-16")  # injected from the 2nd day
    assert found["bypass_diode"]["panel"] == "E2"
    assert "70% of its peers' energy" in found["underperforming"]["message"]
    assert 0.6 < found["underperforming"]["energy_lost_kwh_per_day"] < 1.1
    assert "05:46-07:46 solar time" in found["shaded"]["message"]  # 05:00-07:00 UTC at 11.58 E
    assert found["no_power"]["since"] == "2026-06-19T10:00:00Z"
    assert "150 min" in found["no_power"]["message"]
    assert "hotter than its peers'" in found["hot"]["message"]
    assert "49% of its peers' reports" in found["comms"]["message"]


@pytest.mark.parametrize("located", [True, False], ids=["sun", "no-location"])
def test_clean_site_with_clouds_overcast_and_snow_has_no_finding(influxd, clean, names, located):
    proc = faults(influxd.url, clean.db, "--format", "json", "--names", str(names),
                  *(LOCATED if located else []))
    assert (proc.returncode, findings(proc)) == (0, [])
    proc = faults(influxd.url, clean.db, "--format", "json")
    assert (proc.returncode, findings(proc)) == (0, [])


def test_table_is_one_line_per_finding_warn_first_within_80_columns(influxd, faulty, names):
    proc = faults(influxd.url, faulty.db, "--names", str(names), *LOCATED)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 1
    assert lines[0].startswith("# 2026-06-15T00:00Z .. 2026-06-22T00:00Z: 24 panels, 5 warn, 1 info")
    body = lines[2:]
    assert len(body) == 6 and all(len(line) <= 80 for line in lines)
    assert [line.split()[0] for line in body] == ["warn"] * 5 + ["info"]
    assert body[0].split()[:4] == ["warn", "E2", "4609/3", "bypass_diode"]


def test_csv_has_the_json_columns(influxd, faulty):
    rows = list(csv.DictReader(io.StringIO(faults(influxd.url, faulty.db, "--format", "csv").stdout)))
    as_json = findings(faults(influxd.url, faulty.db, "--format", "json"))
    assert [r["kind"] for r in rows] == [f["kind"] for f in as_json]
    assert list(rows[0]) == list(as_json[0])


def test_a_threshold_moves_with_its_option(influxd, faulty):
    found = findings(faults(influxd.url, faulty.db, "--format", "json", "--threshold", "under_ratio=0.65"))
    assert "underperforming" not in {f["kind"] for f in found}
    assert "bypass_diode" in {f["kind"] for f in found}


def test_shade_alone_is_info_and_exits_0(influxd, influx_db):
    db = influx_db
    shaded = site.Site(site.panels({4609: {"east": 6}}), days=4, weather=("sunny",),
                       faults={(4609, 4): site.Fault("shaded", 0.3, hours=(15.0, 16.5))})
    shaded.write(db)
    proc = faults(influxd.url, db.db)
    assert proc.returncode == 0, proc.stdout
    lines = proc.stdout.splitlines()
    assert "0 warn, 1 info" in lines[0]
    assert lines[2].split()[:4] == ["info", "4-090004Z", "4609/4", "shaded"]
    assert lines[2].endswith("15:00-16:30 UTC")


def test_the_warn_findings_and_the_daily_metric(faulty):
    """The warn findings are the watchdog's panel_fault; panel_days() what tigo_panel_day carries."""
    settings = FaultSettings(faulty, latitude=site.LATITUDE, longitude=site.LONGITUDE)
    now = site.DAY0 + 7 * 86400
    warns = [f for f in analyse(settings, now).findings if f.severity == "warn"]
    assert {(f.gateway_id, f.node_id, f.kind) for f in warns} == {
        (*key, fault.kind) for key, fault in site.INJECTED.items() if fault.kind != "shaded"}
    days = [d for d in panel_days(analyse(settings, now)) if d.tags["node_id"] == "5"
            and d.tags["gateway_id"] == "4609"]
    assert len(days) == 7  # solar days from 23:20 UTC; the last 40 min of the window are night
    sunny = [d for d in days if "underperforming" in str(d.fields["kinds"])]
    assert len(sunny) == 5 and all(0.65 < float(d.fields["energy_ratio"]) < 0.75 for d in sunny)
    assert days[0].tags["barcode"] == "4-090005Z"


def test_no_data_is_said_and_is_no_fault(influxd, influx_db):
    db = influx_db
    proc = faults(influxd.url, db.db)
    assert proc.returncode == 0
    assert "no reports in" in proc.stdout and "nothing to judge" in proc.stdout
    proc = faults(influxd.url, db.db, "--format", "json")
    assert (proc.returncode, findings(proc)) == (0, [])
    assert "I! faults: no reports in" in proc.stderr


@pytest.mark.parametrize("count", [1, 2, 3])
def test_too_few_peers_to_judge(influxd, count, influx_db):
    db = influx_db
    small = site.Site(site.panels({4609: {"east": count}}), days=3,
                      faults={(4609, 2): site.Fault("underperforming", 0.5)})
    small.write(db)
    proc = faults(influxd.url, db.db)
    assert proc.returncode == 0, proc.stdout
    assert f"gateway 4609 has {count} panel" in proc.stdout and "too few peers to judge" in proc.stdout


def test_a_gateway_whose_panels_all_stop_is_the_gateways_problem_said_once(influxd, influx_db):
    db = influx_db
    stopped = site.standard(stop={4610: site.DAY0 + 4 * 86400 + 12 * 3600})
    stopped.write(db)
    found = findings(faults(influxd.url, db.db, "--format", "json", *LOCATED))
    assert [(f["gateway_id"], f["node_id"], f["kind"]) for f in found] == [(4610, None, "comms")]
    assert "Gateway 4610 delivered" in found[0]["message"] and "whole gateway" in found[0]["message"]
    assert found[0]["since"] == "2026-06-19T12:00:00Z"


def test_nodes_renumbered_mid_window_are_no_fault(influxd, influx_db):
    db = influx_db
    moved = {(4609, n): (4609, 40 + n, site.DAY0 + 3 * 86400 + 11 * 3600) for n in (2, 3, 4)}
    site.standard(renumber=moved).write(db)
    proc = faults(influxd.url, db.db, "--format", "json", *LOCATED)
    assert (proc.returncode, findings(proc)) == (0, [])


def test_a_clock_jump_is_no_fault(influxd, influx_db):
    """The host running taptap jumps back 8 hours for 3 hours of day 3: noon's reports are stamped
    03:00-06:00 and replace that dawn's (same series, same times); the site is clean and stays so."""
    db = influx_db
    noon = site.DAY0 + 2 * 86400 + 11 * 3600
    site.standard(clock_jump=(noon, noon + 3 * 3600, -8 * 3600)).write(db)
    for args in ([], LOCATED):
        proc = faults(influxd.url, db.db, "--format", "json", *args)
        assert (proc.returncode, findings(proc)) == (0, []), args


# InfluxDB down, a missing database, refused credentials: tests/test_cli_contract.py, for every command


@pytest.mark.parametrize("args, said", [
    (["--days", "0"], "is not a number of days from 1 to 90"),
    (["--days", "x"], "'x' is not a number"),
    (["--format", "xml"], "invalid choice: 'xml'"),
    (["--latitude", "48.1"], "--latitude and --longitude go together"),
    (["--latitude", "100", "--longitude", "11"], "--latitude must be within -90..90"),
    (["--now", "yesterday"], "is not RFC 3339"),
    (["--threshold", "bogus=1"], "'bogus' is not a threshold"),
    (["--threshold", "under_ratio=much"], "want NAME=NUMBER"),
    (["--threshold", "min_peers=0"], "min_peers is a count, a whole number of 1 or more"),
    (["--threshold", "hot_days=2.5"], "hot_days is a count"),
    (["--threshold", "under_ratio=-1"], "a threshold is a number of 0 or more"),
])
def test_bad_options_exit_64(args, said):
    proc = subprocess.run(tigo_execd_argv("faults", "--influx-url", f"http://127.0.0.1:{free_port()}", *args),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 64, proc.stderr
    assert proc.stderr.startswith("E! ") and said in proc.stderr
    assert "Traceback" not in proc.stderr


DEMO_ARGS = ["--days", "2", "--threshold", "under_days=1", "--threshold", "shade_min_days=1"]


def test_the_demo_day_shows_its_weak_shaded_and_weak_signal_nodes(influx_db):
    """`run --demo` into InfluxDB, then `faults` as README shows it (one day: the day counts lowered,
    default clock: the demo ends now, so the day split falls anywhere in it)."""
    demo = subprocess.run(tigo_execd_argv("run", "--demo", "--stats-interval", "0"), capture_output=True,
                          timeout=120, check=True).stdout.splitlines(True)
    for i in range(0, len(demo), 20_000):
        influx_db.write(b"".join(demo[i:i + 20_000]))
    proc = subprocess.run(tigo_execd_argv("faults", "--influx-url", influx_db.url, "--db", influx_db.db,
                                          "--format", "json", *DEMO_ARGS),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert kinds(findings(proc)) == {(4610, 3): {("underperforming", "warn")},
                                     (4610, 5): {("comms", "warn")},
                                     (4609, 7): {("shaded", "info")}}
    weak = next(f for f in findings(proc) if f["kind"] == "underperforming")
    assert "made 70% of its peers' energy" in str(weak["message"])
    # with the default day counts a single day proves only what one day can: the missing reports
    default = subprocess.run(tigo_execd_argv("faults", "--influx-url", influx_db.url, "--db", influx_db.db,
                                             "--format", "json", "--days", "2"),
                             capture_output=True, text=True, timeout=120)
    assert kinds(findings(default)) == {(4610, 5): {("comms", "warn")}}
