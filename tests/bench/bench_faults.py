#!/usr/bin/env python3
"""Benchmark of `tigo-execd faults`: a generated site written into a temporary real influxd, then
the command run on it (no names file: the peer groups are learned). `small`/`large`: the
hand-shaped site of tests/support/site.py (one report per panel every 20 s, one face per
gateway); `small-roof`/`large-roof`: physical sites of tests/support/physsite.py (pvlib, two roof
faces per gateway, reports every 20-30 s), where the grouping splits each gateway in two.

Prints per case: reports written, the command's wall time and peak RSS, against the targets
(7 days x 24 panels under 5 s, 30 days x 100 panels under 30 s, both under 100 MB RSS).

    python3 tests/bench/bench_faults.py [--cases small,large,small-roof,large-roof] [--runs 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from support import physsite, site  # noqa: E402  (this checkout's, not an installed one)
from support.servers import InfluxServer  # noqa: E402

CASES = {  # name: (days, {gateway: {string: panels}}, target seconds)
    "small": (7, {4609: {"east": 12, "west": 12}}, 5.0),
    "large": (30, {4609: {"a": 25, "b": 25}, 4610: {"c": 25, "d": 25}}, 30.0),
    "small-roof": (7, {4609: {"ese": 12, "wsw": 12}}, 5.0),
    "large-roof": (30, {4609: {"ese": 25, "wsw": 25}, 4610: {"ese": 25, "wsw": 25}}, 30.0),
}
FACES = {"ese": physsite.Face("ese", 112, 30), "wsw": physsite.Face("wsw", 248, 30)}
TARGET_RSS_MB = 100


def write(server: InfluxServer, name: str) -> tuple[int, str, float, float]:
    """The case's site into database `name`: (reports, --now, latitude, longitude)."""
    days, layout, _ = CASES[name]
    db = server.client(name)
    if name.endswith("-roof"):
        nodes = sum((physsite.roof(gw, {FACES[f]: n for f, n in faces.items()})
                     for gw, faces in layout.items()), start=())
        roof = physsite.Site(name, nodes, "june-clouds", days).with_conditions(
            **{"4609_3": physsite.Condition("diode"), "4609_5": physsite.Condition("soiling", size=0.25)})
        return physsite.write(db, roof), roof.now, physsite.LATITUDE, physsite.LONGITUDE
    generated = site.Site(site.panels(layout), days=days, period_s=20, faults={
        (4609, 3): site.Fault("bypass_diode", 0.66), (4609, 5): site.Fault("underperforming", 0.72)})
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(site.DAY0 + days * 86400))
    return generated.write(db, batch=50_000), now, site.LATITUDE, site.LONGITUDE


def run(url: str, db: str, days: int, now: str, lat: float, lon: float) -> tuple[float, float, int]:
    """(seconds, peak RSS MB, exit code) of one `faults` run over the whole generated window.

    The peak is the child's own VmHWM, read while it runs: getrusage's ru_maxrss of a child
    starts from this (much larger) process's RSS at fork and survives exec."""
    argv = [sys.executable, "-m", "tigo_execd", "faults", "--influx-url", url, "--db", db,
            "--days", str(days), "--now", now, "--latitude", str(lat), "--longitude", str(lon),
            "--format", "json"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    peak_kb = 0
    while proc.poll() is None:
        peak_kb = max(peak_kb, _vm_hwm_kb(proc.pid))
        time.sleep(0.02)
    elapsed = time.perf_counter() - t0
    assert proc.stderr is not None
    err = proc.stderr.read()
    if err.strip():
        print(err.decode(errors="replace").strip(), file=sys.stderr)
    return elapsed, peak_kb / 1024, proc.returncode


def _vm_hwm_kb(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated: {', '.join(CASES)}")
    ap.add_argument("--runs", type=int, default=2, help="runs per case (the first after writing)")
    args = ap.parse_args()
    with InfluxServer() as server:
        for name in args.cases.split(","):
            days, layout, target = CASES[name]
            server.raw_query(f'CREATE DATABASE "{name}"')
            t0 = time.perf_counter()
            count, now, lat, lon = write(server, name)
            panels = sum(n for strings in layout.values() for n in strings.values())
            print(f"{name}: {days} days x {panels} panels, {count} reports written in "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
            for i in range(args.runs):
                seconds, rss, code = run(server.url, name, days, now, lat, lon)
                verdict = "ok" if seconds < target and rss < TARGET_RSS_MB else "OVER TARGET"
                print(f"  run {i + 1}: {seconds:.2f} s (target {target:g} s), peak RSS {rss:.0f} MB "
                      f"(target {TARGET_RSS_MB}), exit {code}: {verdict}", flush=True)


if __name__ == "__main__":
    main()
