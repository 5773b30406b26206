"""Everything the shared samples and the demo produce goes into a real InfluxDB 1.x and reads back."""

from __future__ import annotations

import subprocess

from support.paths import DATA
from support.proc import tigo_execd_argv


def produce(*args: str) -> list[bytes]:
    done = subprocess.run(tigo_execd_argv("run", *args), capture_output=True, timeout=120, check=True)
    return done.stdout.splitlines(True)


def write_all(influx, lines: list[bytes], batch: int = 5000) -> None:
    for i in range(0, len(lines), batch):
        influx.write(b"".join(lines[i:i + batch]))  # raises on any rejected line (HTTP 400)


def test_samples_are_accepted_and_read_back_exactly(influx_db):
    lines = []
    for name in ("taptap-upstream.jsonl", "taptap-fork.jsonl"):
        lines += produce("--jsonl", str(DATA / name), "--stats-interval", "1")
    write_all(influx_db, lines)
    count = influx_db.query("SELECT count(rssi) FROM tigo_power_report")[0]["values"][0][1]
    assert count == 17
    rows = influx_db.query("SELECT * FROM tigo_power_report WHERE gateway_id='4609' AND node_id='116' "
                           "ORDER BY time ASC LIMIT 1")[0]
    row = dict(zip(rows["columns"], rows["values"][0]))
    assert row["time"] == 1724509001686961000
    assert (row["power_w"], row["current_out_a"], row["voltage_in_v"], row["rssi"]) == \
        (212.364, 7.0319, 30.6, 132)
    nano = influx_db.query("SELECT power_w FROM tigo_power_report WHERE node_id='2' AND "
                           "barcode='4-A2346FZ' AND time > '2025-01-01T00:00:00Z'")[0]["values"]
    assert [t for t, _ in nano] == [1743700782862954593, 1743700802867021004]
    ingest = influx_db.query("SELECT sum(reports) FROM tigo_ingest")[0]["values"][0][1]
    assert ingest == 17


def test_demo_day_is_accepted_point_for_point(influx_db):
    lines = produce("--demo", "--stats-interval", "1")
    write_all(influx_db, lines)
    reports = [l for l in lines if l.startswith(b"tigo_power_report,")]
    count = influx_db.query("SELECT count(rssi) FROM tigo_power_report")[0]["values"][0][1]
    assert count == len(reports)
    series = influx_db.query("SELECT count(rssi) FROM tigo_power_report GROUP BY gateway_id, node_id")
    assert len(series) == 22
    total = influx_db.query("SELECT sum(power_w) FROM tigo_power_report")[0]["values"][0][1]
    expected = sum(float(f.split(b"=")[1]) for l in reports for f in l.split(b" ")[1].split(b",")
                   if f.startswith(b"power_w="))
    assert abs(total - expected) < 1e-6 * expected
