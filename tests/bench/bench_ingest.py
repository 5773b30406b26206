#!/usr/bin/env python3
"""Benchmark of `tigo-execd run --jsonl` against a floor that only reads lines and orjson.loads them.

Prints, from one run on this machine: events/s of both and their ratio (target >= 0.25x, aim 0.3x),
the converter's peak RSS (target < 40 MB), and the latency from a slow taptap writing one report to
that report's line appearing on tigo-execd's stdout (target < 50 ms).

    python3 tests/bench/bench_ingest.py [--events 200000] [--instructions]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tigo_execd.identity.barcode import address_to_barcode  # noqa: E402  (the repository's, not an installed one)

FLOOR = "import sys, orjson\nfor line in sys.stdin.buffer:\n    orjson.loads(line)\n"


def make_events(path: Path, count: int) -> None:
    """Realistic taptap output: 60 nodes on 2 gateways, one shared timestamp per 20 s cycle; half
    upstream with addresses and barcode on every report (taptap HEAD, once it knows them), half
    the fork; values in taptap's steps, each node's temperature drifting, duty cycle mostly 1.0."""
    rng = random.Random(1)
    nodes = [(4609 + i % 2, 2 + i // 2) for i in range(60)]
    temperature = {node: rng.randrange(200, 300) for node in nodes}  # tenths of a degree
    t = 1_750_000_000
    with path.open("wb") as f:
        written = 0
        while written < count:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{rng.randrange(10**6):06d}+00:00"
            for gw, node in nodes:
                vin = round(rng.uniform(28, 38) * 20) / 20
                temperature[gw, node] += rng.choice((-1, 0, 0, 0, 1))
                if gw == 4609:
                    address = [4, 192, 91, 64, 0, 162, 52, node]
                    head = {"gateway": {"id": gw, "address": [4, 192, 91, 48, 0, 2, 190, 22]},
                            "node": {"id": node, "address": address,
                                     "barcode": address_to_barcode(bytes(address))}}
                else:
                    head = {"event_type": "power_report", "gateway": gw, "node": node}
                f.write(orjson.dumps({**head, "timestamp": stamp, "voltage_in": vin,
                                      "voltage_out": round(vin * 10) / 10,
                                      "current": round(rng.uniform(0, 10) * 200) / 200,
                                      "dc_dc_duty_cycle": 1.0 if rng.random() < 0.8
                                      else rng.randrange(128, 255) / 255,
                                      "temperature": temperature[gw, node] / 10,
                                      "rssi": rng.randrange(90, 160)}) + b"\n")
                written += 1
                if written == count:
                    break
            t += 20


def timed(argv: list[str], stdin_path: Path | None = None) -> tuple[float, float, int]:
    """Run argv to completion, draining stdout; returns (seconds, peak RSS MB, stdout bytes)."""
    stdin = stdin_path.open("rb") if stdin_path else subprocess.DEVNULL
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, env=env)
    size = 0
    while chunk := proc.stdout.read(1 << 16):
        size += len(chunk)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f"{argv} exited {proc.returncode}")
    return elapsed, usage.ru_maxrss / 1024, size


def latency(samples: int, journal: bool) -> list[float]:
    """Seconds from a taptap line written to its converted line read from tigo-execd's stdout
    (with `journal`, the journal is on, as for a live source under Telegraf)."""
    tmp = Path(tempfile.mkdtemp())
    fifo = tmp / "taptap.fifo"
    os.mkfifo(fifo)
    argv = [sys.executable, "-m", "tigo_execd", "run", "--taptap-cmd", f"cat {fifo}",
            "--stats-interval", "0", "--state-file", "",
            "--journal", str(tmp / "journal") if journal else "off"]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    out = []
    with fifo.open("wb", buffering=0) as w:
        for i in range(samples):
            line = orjson.dumps({"event_type": "power_report", "gateway": 1, "node": i + 1,
                                 "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.123456Z",
                                                            time.gmtime()),
                                 "voltage_in": 30.5,
                                 "voltage_out": 30.5, "current": 5.0, "dc_dc_duty_cycle": 1.0,
                                 "temperature": 30.0, "rssi": 120}) + b"\n"
            time.sleep(0.05)  # a slow taptap: one report now and then
            t0 = time.perf_counter()
            w.write(line)
            got = proc.stdout.readline()
            out.append(time.perf_counter() - t0)
            assert f"node_id={i + 1},".encode() in got, got
    proc.stdin.close()
    proc.wait(5)
    return out


LOOP = """import sys, orjson
lines = open(sys.argv[1], "rb").read().split(b"\\n")[:int(sys.argv[3])]
if sys.argv[2] == "floor":
    for line in lines:
        orjson.loads(line)
else:
    from tigo_execd.ingest.convert import Converter
    conv = Converter()
    for i in range(0, len(lines), 5000):
        conv.convert_lines(lines[i:i + 5000]).encode()
"""


def instructions(path: Path, events: int) -> dict[str, float]:
    """CPU instructions per line of the floor's loop and of the converter, counted by valgrind
    (callgrind): lines events/4..events/2 over the first events/4, so start-up and first sights
    fall out. Unlike times on a shared VM, these counts repeat to within a percent."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "0"}
    counts = {}
    for who in ("floor", "tigo-execd"):
        for n in (events // 4, events // 2):
            run = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                                  sys.executable, "-c", LOOP, str(path), who, str(n)],
                                 env=env, capture_output=True, text=True, check=True)
            counts[who, n] = int(run.stderr.split("refs:")[1].split()[0].replace(",", ""))
    return {who: (counts[who, events // 2] - counts[who, events // 4]) / (events // 4)
            for who in ("floor", "tigo-execd")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--latency-samples", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=7, help="runs of each, best taken")
    parser.add_argument("--journal", action="store_true",
                        help="also time `run --journal DIR` (the journal on) and measure latency with it")
    parser.add_argument("--instructions", action="store_true",
                        help="also count instructions per line with valgrind (about 2 minutes)")
    args = parser.parse_args()
    # tigo-execd as pip installs it, with its bytecode compiled, so that the runs time conversion
    # and not the compiler (with PYTHONDONTWRITEBYTECODE set, each run would compile it anew)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "tigo_execd")],
                   check=True, stdout=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        make_events(path, args.events)
        floor, conv, journaled = [], [], []
        run = [sys.executable, "-m", "tigo_execd", "run", "--jsonl", str(path), "--stats-interval",
               "0", "--state-file", ""]
        for i in range(args.rounds):  # interleaved, so all see the same machine
            floor.append(timed([sys.executable, "-c", FLOOR], path))
            conv.append(timed(run))
            if args.journal:
                journaled.append(timed([*run, "--journal", str(Path(tmp) / f"journal{i}")]))
        floor_s, floor_rss, _ = min(floor)
        conv_s, _, size = min(conv)
        conv_rss = max(r for _, r, _ in conv)
        counted = instructions(path, args.events) if args.instructions else None
    lat = latency(args.latency_samples, args.journal)
    n = args.events
    print(f"events:             {n} (best of {args.rounds} interleaved runs each)")
    print(f"floor (read+loads): {n / floor_s:10.0f} events/s  ({floor_s:.2f} s, peak RSS {floor_rss:.1f} MB)")
    print(f"tigo-execd run:     {n / conv_s:10.0f} events/s  ({conv_s:.2f} s, {size / 1e6:.1f} MB out)")
    pairs = sorted(f[0] / c[0] for f, c in zip(floor, conv))  # each round's floor and run, side by side
    print(f"ratio:              {floor_s / conv_s:.2f}x of the floor (required >= 0.25x); "
          f"round by round {pairs[0]:.2f}-{pairs[-1]:.2f}x, median {statistics.median(pairs):.2f}x")
    print(f"peak RSS:           {conv_rss:.1f} MB (required < 40 MB)")
    if journaled:
        j_s, _, _ = min(journaled)
        print(f"with --journal:     {n / j_s:10.0f} events/s  ({j_s:.2f} s, {conv_s / j_s:.2f}x of run "
              f"without; peak RSS {max(r for _, r, _ in journaled):.1f} MB)")
    print(f"latency one report{' (journal on)' if args.journal else ''}: "
          f"median {statistics.median(lat) * 1e3:.1f} ms, "
          f"max {max(lat) * 1e3:.1f} ms over {len(lat)} (required < 50 ms)")
    if counted:
        print(f"instructions/line:  floor {counted['floor']:,.0f}, tigo-execd "
              f"{counted['tigo-execd']:,.0f} ({counted['floor'] / counted['tigo-execd']:.2f}x, "
              f"conversion alone, start-up and I/O not counted)")


if __name__ == "__main__":
    main()
