"""The watchdog's inputs and one check of it: InfluxDB rows at a fixed clock (a fleet of nodes,
taptap's ingest self-metrics) and `tigo-execd watchdog` run as Telegraf's execd runs it."""

from __future__ import annotations

import os
import subprocess
from datetime import datetime

from support.proc import tigo_execd_argv
from support.telegraf_harness import parse_line
from tigo_execd import lineproto

NOON = "2026-06-21T12:00:00Z"        # Munich: sun about 65 deg high
MIDNIGHT = "2026-06-21T23:00:00Z"    # Munich: sun about 18 deg below the horizon
DAWN = "2026-06-21T04:00:00Z"        # Munich: sun just above 5 deg, below it 15 min earlier
MUNICH = ("--latitude", "48.14", "--longitude", "11.58")
MIN = 60_000_000_000


def ns(rfc3339: str) -> int:
    return int(datetime.fromisoformat(rfc3339).timestamp()) * 1_000_000_000


def report(gateway: int, node: int, ts: int, barcode: str | None = None) -> str:
    tags = {"src": "tigo", "gateway_id": str(gateway), "node_id": str(node), "barcode": barcode or ""}
    return lineproto.line("tigo_power_report", tags, {"power_w": 210.5, "rssi": 130}, ts)


def ingest(source: str, ts: int, **fields: int | float) -> str:
    return lineproto.line("tigo_ingest", {"source": source}, fields, ts)


def fleet(now: int, ages_min: dict[int, float], gateway: int = 4609) -> list[str]:
    """Each node's newest report `ages_min[node]` minutes before now, plus one 6 h earlier."""
    lines = []
    for node, age in ages_min.items():
        lines.append(report(gateway, node, now - int(age * MIN), f"4-A{node:X}Z"))
        lines.append(report(gateway, node, now - int((age + 360) * MIN), f"4-A{node:X}Z"))
    return lines


def ingest_rows(source: str, now: int, minutes: int = 12, **fields: int | float) -> list[str]:
    """One self-metric line per minute over the last `minutes`; counters grow unless given."""
    rows = []
    for i in range(minutes, 0, -1):
        values = {"lines_read": 1000 + (minutes - i) * 60, "reports": 900 + (minutes - i) * 60,
                  "lines_skipped": 0, "lines_invalid": 0, "taptap_starts": 1, "taptap_running": 1,
                  "last_report_age_s": 3.0, "nodes_seen": 4}
        values.update(fields)
        rows.append(ingest(source, now - i * MIN + 1, **values))
    return rows


def watchdog(db, *args: str, now: str = NOON, stdin: bytes | None = None,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The watchdog at a fixed `now`: --once, or execd mode when `stdin` is given; the test
    process's own INFLUX_USER/INFLUX_PASS are not passed on."""
    argv = tigo_execd_argv("watchdog", "--influx-url", db.url, "--db", db.db, "--now", now, *args)
    if stdin is None:
        argv.append("--once")
    environ = {k: v for k, v in os.environ.items() if k not in ("INFLUX_USER", "INFLUX_PASS")}
    return subprocess.run(argv, input=stdin or b"", capture_output=True, timeout=60,
                          env={**environ, **(env or {})})


def health(db, *args: str, now: str = NOON, env: dict[str, str] | None = None):
    """One check in execd mode; returns (tigo_health fields, [tigo_node_health metrics])."""
    proc = watchdog(db, *args, now=now, stdin=b"\n", env=env)
    assert proc.returncode == 0, proc.stderr
    metrics = [parse_line(line) for line in proc.stdout.decode().splitlines()]
    assert metrics[0].name == "tigo_health" and metrics[0].ts_ns == ns(now)
    assert all(m.name == "tigo_node_health" for m in metrics[1:])
    return metrics[0].fields, metrics[1:]
