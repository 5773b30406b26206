"""`tigo-execd nodes` against a real InfluxDB holding a synthetic day.

The day (06:00-18:00 UTC, 720 minutes, 3 reports per node per minute are due):
- gateway 4609 node 2 and gateway 4610 node 2 (same node id, other gateway) report fully;
- 4609/3 reports fully, its barcode tag appears only at noon (learnt late);
- 4609/5 reports every 40 s instead of 20 s: half of what is due, rssi cycling 40..79;
- 4609/7 is silent all day but reported three days earlier (with a panel name).
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from support.proc import tigo_execd_argv
from support.servers import free_port

UNTIL = datetime(2026, 6, 21, 20, 0, tzinfo=UTC)
SUNRISE = datetime(2026, 6, 21, 6, 0, tzinfo=UTC)
MINUTES = 720
DUE = MINUTES * 3
HALF_RSSI = list(range(40, 80))
pytestmark = pytest.mark.usefixtures("own_state_dir")  # conftest: a fresh default registry place


def line(gw: int, node: int, t: datetime, rssi: int, extra: str = "") -> str:
    ns = int(t.timestamp() * 1e9)
    return (f"tigo_power_report,gateway_id={gw},node_id={node},src=tigo{extra} "
            f"power_w=200.5,rssi={rssi}i {ns}")


def synthetic_day() -> bytes:
    lines = []
    for i in range(MINUTES * 3):
        t = SUNRISE + timedelta(seconds=20 * i)
        lines.append(line(4609, 2, t + timedelta(seconds=1.5), 150,
                          ",barcode=4-A2346FZ,panel=A1,string=S1"))
        lines.append(line(4610, 2, t + timedelta(seconds=7), 140))
        late = ",barcode=4-A23471V" if i >= MINUTES * 3 // 2 else ""
        lines.append(line(4609, 3, t + timedelta(seconds=11.25), 120, late))
        if i % 2 == 0:
            lines.append(line(4609, 5, t + timedelta(seconds=3), HALF_RSSI[(i // 2) % 40]))
    earlier = SUNRISE - timedelta(days=3)
    for i in range(180):
        lines.append(line(4609, 7, earlier + timedelta(seconds=20 * i + 5), 90, ",panel=B7"))
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def day_db(influx_db):
    influx_db.write(synthetic_day())
    return influx_db


def run_nodes(db, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        tigo_execd_argv("nodes", "--influx-url", db.url, "--db", db.db, *args),
        capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})})


def report(db, fmt: str, *args: str) -> str:
    r = run_nodes(db, "--until", "2026-06-21T20:00:30Z", "--format", fmt, *args)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    return r.stdout


def p95(values: list[int]) -> int:
    """InfluxDB's percentile(): nearest rank, rounded half up."""
    s = sorted(values)
    return s[int(len(s) * 95 / 100 + 0.5) - 1]


def test_json_worst_first_with_counts(day_db) -> None:
    doc = orjson.loads(report(day_db, "json"))
    assert doc["active_minutes"] == MINUTES
    assert doc["expected_per_node"] == DUE
    assert (doc["start_utc"], doc["end_utc"]) == ("2026-06-20T20:00:00Z", "2026-06-21T20:00:00Z")
    nodes = doc["nodes"]
    assert [(n["gateway_id"], n["node_id"]) for n in nodes] == [
        ("4609", "7"), ("4609", "5"), ("4609", "3"), ("4610", "2"), ("4609", "2")]
    silent, half = nodes[0], nodes[1]
    assert silent["status"] == "silent"
    assert (silent["reports"], silent["expected"], silent["completeness"]) == (0, DUE, 0.0)
    assert silent["panel"] == "B7"
    assert silent["last_seen_utc"] == "2026-06-18T06:59:45Z"
    assert silent["rssi_mean"] is None
    assert half["status"] == "low"
    assert (half["reports"], half["completeness"]) == (DUE // 2, 0.5)
    half_rssi = [HALF_RSSI[k % 40] for k in range(DUE // 2)]
    assert half["rssi_mean"] == round(sum(half_rssi) / len(half_rssi), 1)
    assert (half["rssi_min"], half["rssi_p95"]) == (40, p95(half_rssi))
    assert half["last_seen_utc"] == "2026-06-21T17:59:23Z"
    full = {(n["gateway_id"], n["node_id"]): n for n in nodes[2:]}
    assert {n["reports"] for n in full.values()} == {DUE}
    assert {n["status"] for n in full.values()} == {"ok"}
    assert full["4609", "3"]["barcode"] == "4-A23471V"  # learnt at noon: the newest tags win
    assert (full["4609", "2"]["barcode"], full["4609", "2"]["panel"],
            full["4609", "2"]["string"]) == ("4-A2346FZ", "A1", "S1")
    assert full["4610", "2"]["barcode"] == "" and full["4610", "2"]["rssi_mean"] == 140


def test_csv(day_db) -> None:
    rows = list(csv.DictReader(io.StringIO(report(day_db, "csv"))))
    assert [(r["gateway_id"], r["node_id"], r["status"], r["reports"], r["expected"],
             r["completeness"]) for r in rows[:2]] == [
        ("4609", "7", "silent", "0", str(DUE), "0"),
        ("4609", "5", "low", str(DUE // 2), str(DUE), "0.5")]
    assert rows[0]["rssi_mean"] == "" and rows[0]["last_seen_utc"] == "2026-06-18T06:59:45Z"
    assert len(rows) == 5


def test_table(day_db) -> None:
    out = report(day_db, "table", "--rp", "autogen").splitlines()
    assert "720 minutes" in out[0] and f"{DUE} reports due" in out[0]
    assert out[1].split()[:3] == ["gateway", "node", "barcode"]
    assert out[2].split()[:6] == ["4609", "7", "B7", "silent", "0", str(DUE)]
    assert out[3].split()[:6] == ["4609", "5", "low", str(DUE // 2), str(DUE), "50.0%"]
    assert len(out) == 7


def test_current_fault_kinds_from_the_newest_panel_day(day_db) -> None:
    """`kinds`: the newest tigo_panel_day of the last 2 days; an older one is not current."""
    def panel_day(node: int, day: str, kinds: str) -> str:
        ns = int(datetime.fromisoformat(day).timestamp()) * 1_000_000_000
        return f'tigo_panel_day,gateway_id=4609,node_id={node} energy_kwh=1.5,kinds="{kinds}" {ns}\n'

    day_db.write((panel_day(5, "2026-06-19T00:00:00Z", "hot")
                  + panel_day(5, "2026-06-20T00:00:00Z", "underperforming,comms")
                  + panel_day(3, "2026-06-20T00:00:00Z", "")
                  + panel_day(7, "2026-06-17T00:00:00Z", "no_power")).encode())
    nodes = orjson.loads(report(day_db, "json"))["nodes"]
    kinds = {(n["gateway_id"], n["node_id"]): n["kinds"] for n in nodes}
    assert kinds == {("4609", "7"): "", ("4609", "5"): "underperforming,comms", ("4609", "3"): "",
                     ("4610", "2"): "", ("4609", "2"): ""}
    table = report(day_db, "table").splitlines()
    assert table[1].split()[-1] == "kinds"
    assert table[3].split()[-1] == "underperforming,comms"
    assert list(csv.DictReader(io.StringIO(report(day_db, "csv"))))[1]["kinds"] == "underperforming,comms"


def test_registry_nodes_never_seen_in_influx_are_listed(day_db, tmp_path) -> None:
    state = tmp_path / "registry.json"
    state.write_text(orjson.dumps({"version": 1, "gateways": {}, "nodes": {
        "4609": {"2": {"barcode": "4-A2346FZ"}, "9": {"barcode": "4-A23471V"}}}}).decode())
    r = run_nodes(day_db, "--until", "2026-06-21T20:00:30Z", "--format", "json",
                  "--state-file", str(state))
    assert r.returncode == 0, r.stderr
    nodes = orjson.loads(r.stdout)["nodes"]
    assert len(nodes) == 6
    first = {(n["gateway_id"], n["node_id"]): n for n in nodes[:2]}
    assert set(first) == {("4609", "7"), ("4609", "9")}
    assert first["4609", "9"]["status"] == "silent"
    assert first["4609", "9"]["barcode"] == "4-A23471V"
    assert first["4609", "9"]["last_seen_utc"] is None


def test_idle_window_and_forgotten_nodes(day_db) -> None:
    """No report in the window: the known nodes are idle, not silent; after 7 days they are gone."""
    r = run_nodes(day_db, "--format", "json", "--hours", "1", "--until", "2026-06-24T12:00:00Z")
    assert r.returncode == 0
    assert r.stderr.startswith("W! no node reported")
    doc = orjson.loads(r.stdout)
    assert (doc["active_minutes"], doc["expected_per_node"]) == (0, 0)
    assert [n["status"] for n in doc["nodes"]] == ["idle"] * 5
    assert {n["completeness"] for n in doc["nodes"]} == {None}
    r = run_nodes(day_db, "--until", "2026-07-01T12:00:00Z")
    assert r.returncode == 0
    assert r.stderr.startswith("W! no reports")


def test_default_window_ends_now(influx_db) -> None:
    minute = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
    points = [line(1, 1, minute + timedelta(seconds=s), 100) for s in (0, 20, 40)]
    points.append(line(1, 2, minute + timedelta(seconds=10), 100))
    influx_db.write(("\n".join(points) + "\n").encode())
    r = run_nodes(influx_db, "--format", "json", "--hours", "1")
    assert r.returncode == 0, r.stderr
    doc = orjson.loads(r.stdout)
    assert (doc["active_minutes"], doc["expected_per_node"]) == (1, 3)
    assert [(n["node_id"], n["reports"], n["status"]) for n in doc["nodes"]] == [
        ("2", 1, "low"), ("1", 3, "ok")]


def test_influx_errors_exit_codes(influxd_auth, influx_auth_db, influx_db) -> None:
    r = subprocess.run(tigo_execd_argv("nodes", "--influx-url", f"http://127.0.0.1:{free_port()}"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 69 and "unreachable" in r.stderr and r.stderr.startswith("E! ")
    base = tigo_execd_argv("nodes", "--influx-url", influxd_auth.url, "--db", influx_auth_db.db)
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFLUX_")}
    r = subprocess.run(base, capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 77 and "INFLUX_USER" in r.stderr
    r = subprocess.run(base, capture_output=True, text=True, timeout=60,
                       env={**env, "INFLUX_USER": "admin", "INFLUX_PASS": "adminpw"})
    assert r.returncode == 0 and "W! no reports" in r.stderr
    r = run_nodes(influx_db, "--hours", "0")
    assert r.returncode == 64


def test_by_hand_the_services_registry_is_read_and_named(day_db, tmp_path, monkeypatch, capsys) -> None:
    """A person runs `nodes` with their own ~/.local/state, the service keeps its registry in
    /var/lib/tigo-execd: the service's is what they mean; --state-file and the unit's own
    STATE_DIRECTORY still win."""
    from tigo_execd import cli
    from tigo_execd.analysis import nodes

    service = tmp_path / "var-lib" / "registry.json"
    service.parent.mkdir()
    service.write_text(orjson.dumps({"version": 1, "gateways": {}, "nodes": {
        "4609": {"9": {"barcode": "4-A23471V"}}}}).decode())
    monkeypatch.setattr(nodes, "SERVICE_STATE_FILE", service)
    base = ["nodes", "--influx-url", day_db.url, "--db", day_db.db, "--until", "2026-06-21T20:00:30Z",
            "--format", "json"]

    def listed(*args: str) -> tuple[set[tuple[str, str]], str]:
        assert cli.main([*base, *args]) == 0
        out, err = capsys.readouterr()
        return {(n["gateway_id"], n["node_id"]) for n in orjson.loads(out)["nodes"]}, err

    found, err = listed()
    assert ("4609", "9") in found and len(found) == 6
    assert err.splitlines() == [(f"I! node registry {service} (the tigo-execd service's; "
                                 "--state-file FILE reads another): 1 nodes, 1 with a barcode")]
    found, err = listed("--state-file", "")
    assert ("4609", "9") not in found and str(service) not in err
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "unit"))
    found, err = listed()
    assert ("4609", "9") not in found and str(service) not in err
