#!/usr/bin/env python3
"""The layout file's cost at its limits, for the figures of docs/reference/layout.md.

A roof of `--panels` optimizers (default 4096, the most a layout may draw) on one face, each drawn
by gateway/node and known with a barcode: the time to parse and resolve it, and to draw the SVG
(and its size). Then `tigo-execd layout` on a 10 MB file, which it refuses after reading 1 MiB:
its wall time and peak RSS as a child process.

    python3 tests/bench/bench_layout.py [--panels 4096]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tigo_execd.analysis import roof_svg  # noqa: E402
from tigo_execd.analysis.roof import PanelValue, Roof  # noqa: E402
from tigo_execd.identity.barcode import address_to_barcode  # noqa: E402
from tigo_execd.identity.layout import Known, Reported, parse, resolve  # noqa: E402


def drawing(panels: int) -> None:
    ids = [(4600 + i // 300, i % 300 + 2) for i in range(panels)]
    known = Known.build(None, None, [Reported(k, address_to_barcode(bytes([4, 0xC0, 0x5B, 0x40, 0, 0,
                                                                           i >> 8, i & 255])))
                                     for i, k in enumerate(ids)])
    width = max(1, int(panels ** 0.5))
    rows = [" ".join(f"{g}/{n}" for g, n in ids[r:r + width]) for r in range(0, panels, width)]
    text = "[roof azimuth=180 tilt=30]\n" + "\n".join(rows) + "\n"
    start = time.perf_counter()
    parsed, problems = parse(text, "bench")
    layout, unresolved = resolve(parsed, known)
    resolved = time.perf_counter()
    assert not problems and not unresolved
    values = {k: PanelValue(float(i % 300), False, "", f"{i % 300} W") for i, k in enumerate(ids)}
    svg = roof_svg.render(Roof(layout, "power", 0, values, False, 0))
    drawn = time.perf_counter()
    print(f"{panels} panels ({len(text)} bytes of layout): parse and resolve {resolved - start:.3f} s, "
          f"SVG {drawn - resolved:.3f} s ({len(svg) / 1e6:.2f} MB)")


def big_file() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "roof.txt"
        path.write_bytes(b"4609/2 " * (10 * 1024 * 1024 // 7))
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "tigo_execd", "layout", "--layout", str(path),
                               "--state-file", ""], capture_output=True, text=True, cwd=ROOT)
        took = time.perf_counter() - start
    rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"a 10 MB file: exit {proc.returncode} in {took:.2f} s, peak RSS {rss_mb:.0f} MB: "
          f"{proc.stderr.strip()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--panels", type=int, default=4096)
    args = parser.parse_args()
    drawing(args.panels)
    big_file()


if __name__ == "__main__":
    main()
