"""A generated history of power reports for the rollup tests and bench: days with nights, a node
that skips minutes, one that is silent for a stretch, one that appears mid-history, a site-wide
outage, reports at every node's own moment of the 20 s cycle. Written in chunks, never held whole."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

MS = 1_000_000
DAY_MS = 86_400_000
SUNRISE_MS, SUNSET_MS = 5 * 3_600_000, 19 * 3_600_000


def node_keys(panels: int) -> list[tuple[str, str]]:
    """(gateway, node): two gateways with clashing node ids."""
    return [(str(1 + i % 2), str(1 + i // 2)) for i in range(panels)]


def day_lines(day0_ms: int, day: int, panels: int, measurement: str = "tigo_power_report") -> Iterator[str]:
    """One day's reports (day counted from day0_ms), in time order per node."""
    rnd = random.Random(day)
    start = day0_ms + day * DAY_MS
    for idx, (gw, node) in enumerate(node_keys(panels)):
        if idx == panels - 1 and day < 2:
            continue  # appears on the third day
        phase = (idx * 1811) % 20000
        peak = 250 + 10 * idx
        cloud = 0.6 + 0.4 * rnd.random()
        t = start + SUNRISE_MS + phase
        while t < start + SUNSET_MS:
            minute = (t - start) // 60000
            skip = (idx == 1 and minute % 7 == 3) or (idx == 2 and day % 3 == 1 and 600 <= minute < 690) \
                or (day % 5 == 4 and 700 <= minute < 703)  # skipper, a silent stretch, a site outage
            if not skip:
                x = (t - start - SUNRISE_MS) / (SUNSET_MS - SUNRISE_MS)
                p = round(peak * cloud * math.sin(math.pi * x) ** 1.5 * rnd.uniform(0.97, 1.03), 2)
                vin = round(28 + 6 * math.sin(math.pi * x), 2)
                vout = round(vin - 0.4, 2)
                yield (f"{measurement},barcode=4-{idx:07X}A,gateway_id={gw},node_id={node},src=tigo "
                       f"current_in_a={round(p / vin, 4)},current_out_a={round(p / vout, 4)},duty_cycle=0.95,"
                       f"power_w={p},rssi={rnd.randint(90, 150)}i,temperature_c={round(20 + p / 20, 1)},"
                       f"voltage_in_v={vin},voltage_out_v={vout} {(t + rnd.randint(-400, 400)) * MS}")
            t += 20000


def write_history(db, day0_ms: int, days: int, panels: int, batch: int = 20000) -> int:
    """Write `days` days from day0_ms through the client `db`; returns the number of reports."""
    n, buf = 0, []
    for d in range(days):
        for line in day_lines(day0_ms, d, panels):
            buf.append(line)
            if len(buf) >= batch:
                db.write("\n".join(buf).encode())
                n, buf = n + len(buf), []
    if buf:
        db.write("\n".join(buf).encode())
        n += len(buf)
    return n
