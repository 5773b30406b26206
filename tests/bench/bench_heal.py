#!/usr/bin/env python3
"""The journal's cost and the heal's speed, for the figures of docs/reference/heal.md.

A day of 24 optimizers (one report each per 20 s: 103,680 reports, realistic values, the
converter's own lines) is journaled the way `run` journals a live bus: one append per report,
each compressed with a sync flush and handed to the kernel. Printed: journal bytes per day, bytes
per report, appends per day. Then `tigo-execd heal` restores the whole day into an empty database
of a fresh influxd (reports/s, peak RSS), and runs again (nothing to do: its time and RSS); last,
the steps the watchdog runs between its checks are timed one by one (all lost, then nothing to do
with the files already summarised).

    python3 tests/bench/bench_heal.py [--panels 24] [--hours 24]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[2]
for _path in (str(ROOT), str(ROOT / "tests")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from support.servers import InfluxServer  # noqa: E402
from tigo_execd.health.heal import Healer, Result  # noqa: E402
from tigo_execd.identity.barcode import address_to_barcode  # noqa: E402
from tigo_execd.identity.registry import Registry  # noqa: E402
from tigo_execd.influx import Influx  # noqa: E402
from tigo_execd.ingest.convert import Converter  # noqa: E402
from tigo_execd.journal import Journal  # noqa: E402

NS = 1_000_000_000


def day_lines(panels: int, hours: int, start_s: int) -> list[bytes]:
    """The converter's lines for `hours` of `panels` optimizers, one report each per 20 s."""
    rng = random.Random(3)
    converter = Converter("tigo_power_report", Registry())
    temperature = {node: rng.randrange(200, 300) for node in range(panels)}
    out = []
    for cycle in range(hours * 180):
        t = start_s + cycle * 20
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{rng.randrange(10**6):06d}+00:00"
        for node in range(panels):
            address = [4, 192, 91, 64, 0, 162, 52, node + 2]
            vin = round(rng.uniform(28, 38) * 20) / 20
            temperature[node] += rng.choice((-1, 0, 0, 0, 1))
            doc = {"gateway": {"id": 4609, "address": [4, 192, 91, 48, 0, 2, 190, 22]},
                   "node": {"id": node + 2, "address": address,
                            "barcode": address_to_barcode(bytes(address))},
                   "timestamp": stamp, "voltage_in": vin, "voltage_out": round(vin * 10) / 10,
                   "current": round(rng.uniform(0, 10) * 200) / 200,
                   "dc_dc_duty_cycle": 1.0 if rng.random() < 0.8 else rng.randrange(128, 255) / 255,
                   "temperature": temperature[node] / 10, "rssi": rng.randrange(90, 160)}
            out.append(converter.convert_lines([orjson.dumps(doc)]).encode())
    return out


def heal(influx: InfluxServer, journal: Path, now_s: int) -> tuple[float, float, str]:
    """(seconds, peak RSS MB, stdout) of one `tigo-execd heal` run. GNU time measures the RSS: a
    child forked from this big process would count its pages in ru_maxrss until exec."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now_s))
    t0 = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-m", "tigo_execd", "heal",
                           "--journal", str(journal), "--influx-url", influx.url, "--db", "bench",
                           "--now", now, "--days", "3", "--log-level", "warn"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if proc.returncode:
        sys.exit(f"heal exited {proc.returncode}: {proc.stderr}")
    return time.perf_counter() - t0, int(proc.stderr.split()[-1]) / 1024, proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--panels", type=int, default=24)
    ap.add_argument("--hours", type=int, default=24)
    args = ap.parse_args()
    start_s = (int(time.time()) // 3600 - args.hours - 2) * 3600
    lines = day_lines(args.panels, args.hours, start_s)
    raw = sum(len(x) for x in lines)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "journal"
        journal = Journal(directory)
        t0 = time.perf_counter()
        for line in lines:
            journal.append(line)
        append_s = time.perf_counter() - t0
        journal.close()
        size = sum(p.stat().st_size for p in directory.iterdir())
        per_day = 24 / args.hours
        print(f"reports:         {len(lines)} ({args.panels} optimizers, {args.hours} h)")
        print(f"journal:         {size * per_day / 1e6:.2f} MB/day ({size / len(lines):.1f} bytes/report;"
              f" line protocol {raw / len(lines):.0f} bytes/report, {raw / size:.1f}x), "
              f"{len(lines) * per_day:.0f} appends/day, {len(list(directory.iterdir()))} files")
        print(f"append cost:     {append_s / len(lines) * 1e6:.1f} us/report (one report per append)")
        with InfluxServer() as influx:
            influx.raw_query('CREATE DATABASE "bench"')
            now_s = start_s + (args.hours + 2) * 3600
            seconds, rss, _ = heal(influx, directory, now_s)
            print(f"heal (all lost): {len(lines) / seconds:.0f} reports/s ({seconds:.1f} s), "
                  f"peak RSS {rss:.1f} MB")
            seconds, rss, out = heal(influx, directory, now_s)
            assert "nothing to do" in out, out
            print(f"heal (again):    {seconds:.1f} s, nothing to do, peak RSS {rss:.1f} MB")
            influx.raw_query('DROP DATABASE "bench"')
            influx.raw_query('CREATE DATABASE "bench"')
            healer = Healer(directory, Influx(influx.url, "bench", timeout=2.0))
            for what in ("all lost", "nothing to do"):
                steps = slices(healer, now_s)
                print(f"watchdog slices ({what}): {len(steps)} steps, longest {max(steps):.3f} s, "
                      f"{sum(steps):.2f} s in all")


def slices(healer: Healer, now_s: int) -> list[float]:
    """Seconds of each step of one heal pass, as the watchdog runs them between its checks."""
    steps, result = [], Result()
    work = healer.steps(0, now_s * NS, result)
    while True:
        t0 = time.perf_counter()
        try:
            next(work)
        except StopIteration:
            return steps
        steps.append(time.perf_counter() - t0)


if __name__ == "__main__":
    main()
