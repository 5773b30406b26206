#!/usr/bin/env python3
"""Benchmark of the rollups, side by side from one run on this machine, against a private influxd:

- the sum of the dashboard's query times (its variables included, each query timed over HTTP as
  Grafana would send it) for a 24 h view and a 120-day view of 16 panels, backfilled and rolled up
  (target: 120 d <= 2x 24 h), and the 120-day view forced to raw reports, what it cost before;
- `tigo-execd rollup` over --year-days days of 32 panels: wall time and peak RSS (target < 100 MB),
  extrapolated to a year when fewer than 365 days are generated (said so in the output);
- disk per year for 32 panels, raw reports and rollups (the TSM and WAL files of each retention
  policy; a server that runs for hours compacts further, so raw shrinks somewhat more).

    python3 tests/bench/bench_rollup.py [--dash-days 120] [--year-days 60]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
import support.dashboard_grafana as grafana  # noqa: E402
from support.rollup_history import DAY_MS, write_history  # noqa: E402
from support.servers import InfluxServer  # noqa: E402
from support.wait import wait_until  # noqa: E402

DASH_PANELS, YEAR_PANELS = 16, 32


def timed_query(db, q: str) -> tuple[float, list]:
    t = time.perf_counter()
    series = db.query(q, epoch="ms")
    return time.perf_counter() - t, series


def dashboard_seconds(dash: dict, db, rng: grafana.Range, force_raw: bool = False) -> tuple[float, int, str]:
    """Seconds for every variable and panel query of the dashboard over rng (as Grafana runs them),
    the number of queries, and the resolution the variables picked."""
    total, count, variables = 0.0, 0, {}
    for spec in dash["templating"]["list"]:
        var = grafana.Var(spec)
        if spec["type"] == "query":
            took, series = timed_query(db, grafana.interpolate(spec["query"], variables, rng))
            total, count = total + took, count + 1
            values = sorted({row[1] for s in series for row in s["values"]})
            var.options = grafana.sort_options(values, spec["sort"])
            if force_raw and spec["name"] in ("res", "sfx"):
                var.options = [""]
        variables[spec["name"]] = var
    for p in grafana.all_panels(dash):
        if p["type"] == "row":
            continue
        prng = grafana.panel_range(p, rng)
        step = grafana.interval_ms(prng.from_ms, prng.to_ms, p)
        for t in p["targets"]:
            took, _ = timed_query(db, grafana.interpolate(t["query"], variables, prng, step))
            total, count = total + took, count + 1
    return total, count, variables["sfx"].render() or "raw"


def run_rollup(url: str, db: str) -> tuple[float, float, str]:
    """`tigo-execd rollup` as a child: wall seconds, peak RSS in MB, its last stderr line."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "tigo_execd", "rollup", "--influx-url", url, "--db", db],
                            stderr=subprocess.PIPE, env=env, text=True)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    took = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"rollup failed ({proc.returncode}): {err[-2000:]}")
    return took, usage.ru_maxrss / 1024, err.strip().splitlines()[-1]


def disk_bytes(server: InfluxServer, db: str, rp: str) -> int:
    return sum(f.stat().st_size for base in ("data", "wal") for f in (server.dir / base / db / rp).rglob("*")
               if f.is_file())


def settled_disk(server: InfluxServer, db: str, rp: str) -> int:
    """Disk of an RP once its WAL has been snapshotted into TSM files (10 s cold in the test config)."""
    wal = server.dir / "wal" / db / rp
    wait_until(lambda: sum(f.stat().st_size for f in wal.rglob("*.wal")) < 1_000_000, 300,
               f"the WAL of {db}.{rp} to be written to TSM files")
    return disk_bytes(server, db, rp)


def fill(server: InfluxServer, name: str, today: int, days: int, panels: int):
    """A database holding `days` days of `panels` panels up to today; its client."""
    server.raw_query(f'CREATE DATABASE "{name}"')
    db = server.client(name)
    db.timeout = 300
    t = time.perf_counter()
    n = write_history(db, today - days * DAY_MS, days, panels)
    print(f"wrote {n} reports ({days} days, {panels} panels) in {time.perf_counter() - t:.0f} s", flush=True)
    return db


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dash-days", type=int, default=120)
    ap.add_argument("--year-days", type=int, default=60)
    args = ap.parse_args()
    today = int(time.time() * 1000) // DAY_MS * DAY_MS
    dash = grafana.load()
    with InfluxServer() as server:
        print(f"influxd {server.url}, data in {server.dir}", flush=True)
        db = fill(server, "dash", today, args.dash_days, DASH_PANELS)
        took, rss, last = run_rollup(server.url, "dash")
        print(f"rollup of the dashboard history: {took:.1f} s, {rss:.0f} MB RSS ({last})", flush=True)

        end = today  # the history ends at midnight; views end there
        views = [("24 h", grafana.Range(end - DAY_MS, end), False),
                 (f"{args.dash_days} d", grafana.Range(end - args.dash_days * DAY_MS, end), False),
                 (f"{args.dash_days} d, raw forced (before rollups)",
                  grafana.Range(end - args.dash_days * DAY_MS, end), True)]
        sums = {}
        for name, rng, raw in views:
            runs = [dashboard_seconds(dash, db, rng, raw) for _ in range(3)]
            sums[name] = statistics.median(r[0] for r in runs)
            print(f"dashboard {name:>34}: {sums[name]:7.3f} s for {runs[0][1]} queries "
                  f"(median of 3; resolution {runs[0][2]})", flush=True)
        ratio = sums[f"{args.dash_days} d"] / sums["24 h"]
        print(f"ratio {args.dash_days} d / 24 h: {ratio:.2f} (target <= 2)", flush=True)

        fill(server, "year", today, args.year_days, YEAR_PANELS)
        took, rss, last = run_rollup(server.url, "year")
        scale = 365 / args.year_days
        note = "" if args.year_days >= 365 else f", extrapolated x{scale:.2f} from {args.year_days} days"
        print(f"rollup, {YEAR_PANELS} panels: {took:.1f} s for {args.year_days} days, "
              f"{took * scale / 60:.1f} min per year{note}; peak RSS {rss:.0f} MB (target < 100 MB)",
              flush=True)
        raw = settled_disk(server, "year", "autogen")
        roll = settled_disk(server, "year", "tigo_rollup")
        print(f"disk per year, {YEAR_PANELS} panels{note}: raw reports {raw * scale / 1e6:.0f} MB, "
              f"rollups {roll * scale / 1e6:.1f} MB ({raw / roll:.0f}x less)", flush=True)


if __name__ == "__main__":
    main()
