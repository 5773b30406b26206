"""A journal of power reports as `tigo-execd run` writes it, and what InfluxDB holds of it: the
inputs and the measure of the heal tests."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from support.telegraf_harness import parse_line
from tigo_execd import lineproto
from tigo_execd.journal import Journal

NS = 1_000_000_000
HOUR = 3600 * NS
NOW = "2026-11-20T12:30:00Z"
NOW_NS = int(datetime.fromisoformat(NOW).timestamp()) * NS
T0 = NOW_NS - NOW_NS % HOUR - 3 * HOUR  # 09:00, three whole hours before NOW's hour


def reports(hours: int = 3, nodes: int = 4, per_hour: int = 30, measurement: str = "tigo_power_report",
            start: int = T0) -> list[bytes]:
    out = []
    for h in range(hours):
        for i in range(per_hour):
            ts = start + h * HOUR + i * (HOUR // per_hour) + 123_456_789
            for node in range(1, nodes + 1):
                out.append(lineproto.line(measurement, {"gateway_id": "4609", "node_id": str(node),
                                                        "barcode": f"4-A{node:X}Z", "src": "tigo"},
                                          {"power_w": round(100 + node + i / 7, 3), "rssi": 120 + node,
                                           "voltage_in_v": 30.5}, ts).encode())
    return out


def journal_of(directory: Path, lines: list[bytes]) -> Path:
    """A journal as `run` writes it, one append per bus cycle (all nodes of one time)."""
    j = Journal(directory)
    cycle: list[bytes] = []
    for line in lines:
        if cycle and line.rsplit(b" ", 1)[1] != cycle[0].rsplit(b" ", 1)[1]:
            j.append(b"".join(cycle))
            cycle = []
        cycle.append(line)
    j.append(b"".join(cycle))
    j.close()
    return directory


def stored(db, target: str = '"tigo_power_report"') -> list[tuple]:
    """Every point as (time, gateway, node, barcode, power_w, rssi, voltage_in_v), in time order."""
    series = db.query(f'SELECT "gateway_id", "node_id", "barcode", "power_w", "rssi", '
                      f'"voltage_in_v" FROM {target}')
    return [tuple(row) for s in series for row in s["values"]]


def expected(lines: list[bytes]) -> list[tuple]:
    rows = []
    for line in lines:
        m = parse_line(line.decode().rstrip("\n"))
        rows.append((m.ts_ns, m.tags["gateway_id"], m.tags["node_id"], m.tags["barcode"],
                     m.fields["power_w"], m.fields["rssi"], m.fields["voltage_in_v"]))
    return sorted(rows)
