"""A known synthetic solar day (and the next morning) for the dashboard tests, with the figures the
dashboard must show computed here in plain Python, independently of InfluxQL.

Three gateways whose node ids clash (1/1 and 2/1 are different optimizers), node 1/2 skips every
minute whose minute-of-day is 3 mod 7, node 2/3 goes silent at 09:00 on the first day, a night
between the days, reports staggered per node (own phase within the 20 s cycle, jitter).
"""

from __future__ import annotations

import bisect
import math
import random
from collections import defaultdict
from dataclasses import dataclass

MS = 1_000_000  # ns per ms
MIN = 60_000  # ms per minute
DAY0 = 1718928000000  # 2024-06-21T00:00:00Z in ms
NOW = DAY0 + 86400000 + 10 * 3600000  # second day 10:00Z: "now", the end of the dashboard range
SUNRISE, SUNSET = 4 * 3600000, 19 * 3600000  # ms after midnight (UTC)
SILENT_FROM = DAY0 + 9 * 3600000


@dataclass(frozen=True)
class Node:
    gateway: str
    node: str
    peak_w: float
    barcode: str = ""
    panel: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return self.gateway, self.node


NODES = [Node("1", str(i), 250 + 20 * i, barcode=f"4-{0xA0000 + i:07X}{'ABCD'[i - 1]}") for i in range(1, 5)]
NODES += [Node("2", str(i), 240 + 15 * i) for i in range(1, 5)]
NODES += [Node("3", "2", 300, "4-B00002C"), Node("3", "10", 310, "4-B0000AD", "A1"),
          Node("3", "11", 290, "4-B0000BE", "A2")]
SKIPPER, SILENT = ("1", "2"), ("2", "3")


@dataclass(frozen=True)
class Report:
    node: Node
    ms: int
    power_w: float
    vin: float
    vout: float
    rssi: int

    def line(self, measurement: str = "tigo_power_report") -> str:
        n = self.node
        tags = "".join(f",{k}={v}" for k, v in (("barcode", n.barcode), ("gateway_id", n.gateway),
                                                  ("node_id", n.node), ("panel", n.panel)) if v)
        cur = round(self.power_w / self.vin, 4)
        cur_out = round(self.power_w / self.vout, 4)
        temp = round(20 + self.power_w / 20, 1)
        fields = (f"current_in_a={cur},current_out_a={cur_out},duty_cycle=0.95,"
                  f"power_w={self.power_w},rssi={self.rssi}i,temperature_c={temp},"
                  f"voltage_in_v={self.vin},voltage_out_v={self.vout}")
        return f"{measurement}{tags},src=tigo {fields} {self.ms * MS}"


def reports() -> list[Report]:
    rnd = random.Random(6)
    out = []
    for idx, n in enumerate(NODES):
        phase = (idx * 1811) % 20000  # ms within the 20 s cycle: every node its own moment
        for day in (DAY0, DAY0 + 86400000):
            t = day + SUNRISE + phase
            while t < min(day + SUNSET, NOW):
                skipped = n.key == SKIPPER and ((t - day) // MIN) % 7 == 3
                if not skipped and not (n.key == SILENT and t >= SILENT_FROM):
                    x = (t - day - SUNRISE) / (SUNSET - SUNRISE)
                    p = round(n.peak_w * math.sin(math.pi * x) ** 1.5 * rnd.uniform(0.97, 1.03), 2)
                    vin = round(28 + 6 * math.sin(math.pi * x), 2)
                    out.append(Report(n, t + rnd.randint(-400, 400), p, vin, round(vin - 0.4, 2),
                                      rnd.randint(90, 150) - (40 if n.gateway == "2" else 0)))
                t += 20000
    return out


def ingest_lines(rs: list[Report]) -> list[str]:
    """tigo_ingest every 60 s from the first midnight to NOW; the process restarts at 12:00 on day one
    (all counters start again from zero)."""
    restart = DAY0 + 12 * 3600000
    times = sorted(r.ms for r in rs)
    out = []
    for t in range(DAY0, NOW + 1, MIN):
        i = bisect.bisect_right(times, t)
        since = restart if t >= restart else DAY0
        before = bisect.bisect_right(times, restart) if t >= restart else 0
        up_s = (t - since) // 1000
        out.append(f"tigo_ingest,host=pi,source=serial lines_read={i - before + up_s // 600}i,"
                   f"reports={i - before}i,lines_skipped={up_s // 600}i,lines_invalid=0i,"
                   f"taptap_starts=1i,taptap_running=1i,nodes_seen={len(NODES)}i,"
                   f"bus_bytes={up_s * 1200}i,source_connected=1i {t * MS}")
    return out


def health_lines() -> list[str]:
    out = []
    for t in range(DAY0, NOW + 1, 5 * MIN):
        tod = t % 86400000
        code, status, reason = ((0, "OK", "healthy") if SUNRISE <= tod < SUNSET else (0, "OK", "night"))
        if t >= SILENT_FROM + 10 * MIN and SUNRISE <= tod < SUNSET:
            code, status, reason = 1, "WARN", "nodes_silent"
        out.append(f'tigo_health code={code}i,status="{status}",reason="{reason}",'
                   f'message="{status} {reason}",lag_min=0.5,nodes_expected={len(NODES)}i,'
                   f"nodes_reporting={len(NODES) - (code > 0)}i {t * MS}")
    return out


# the watchdog's daily tigo_panel_day for the first day (the day before "now"): every node, two with
# fault kinds; and one of the day before, no longer current (the Panel faults table shows 2 days)
PANEL_DAY = DAY0
FAULTY = {("1", "3"): ("underperforming", 0.72), ("3", "10"): ("bypass_diode,hot", 0.66)}
STALE_FAULT = ("2", "1")


def panel_day_lines() -> list[str]:
    out = []
    for n in NODES:
        kinds, ratio = FAULTY.get(n.key, ("", 1.0))
        tags = "".join(f",{k}={v}" for k, v in (("barcode", n.barcode), ("gateway_id", n.gateway),
                                                  ("node_id", n.node), ("panel", n.panel)) if v)
        out.append(f'tigo_panel_day{tags} energy_kwh=1.5,energy_ratio={ratio},vin_ratio=1.0,'
                   f'temp_delta_c=0.5,report_ratio=1.0,kinds="{kinds}",peer_group="{n.gateway}/a" '
                   f'{PANEL_DAY * MS}')
    out.append(f'tigo_panel_day,gateway_id={STALE_FAULT[0]},node_id={STALE_FAULT[1]} energy_kwh=1.0,'
               f'energy_ratio=0.5,kinds="no_power" {(PANEL_DAY - 86400000) * MS}')
    return out


# ---- what the dashboard must show, computed directly from the reports ----

def select(rs: list[Report], frm: int, to: int, keys: set[tuple[str, str]] | None = None) -> list[Report]:
    """Reports in [frm, to] (InfluxDB's `time >= from and time <= to`), optionally for some nodes."""
    return [r for r in rs if frm <= r.ms <= to and (keys is None or r.node.key in keys)]


def node_bucket_means(rs: list[Report], bucket_ms: int) -> dict[tuple[str, str], dict[int, float]]:
    acc: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rs:
        acc[r.node.key][r.ms - r.ms % bucket_ms].append(r.power_w)
    return {k: {b: sum(v) / len(v) for b, v in d.items()} for k, d in acc.items()}


def total_power(rs: list[Report], bucket_ms: int) -> dict[int, float]:
    """Per bucket: the sum over nodes of each node's mean power in the bucket."""
    out: dict[int, float] = defaultdict(float)
    for buckets in node_bucket_means(rs, bucket_ms).values():
        for b, p in buckets.items():
            out[b] += p
    return dict(out)


def energy_kwh(rs: list[Report]) -> dict[tuple[str, str], dict[int, float]]:
    """Per node and UTC day: 5-minute mean power x 5 minutes, in kWh (the rollups' energy too)."""
    out: dict[tuple[str, str], dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for key, buckets in node_bucket_means(rs, 5 * MIN).items():
        for b, p in buckets.items():
            out[key][b - b % 86400000] += p * 5 / 60 / 1000
    return out


def naive_minute_total(rs: list[Report]) -> dict[int, float]:
    """The old dashboard: per node 1-minute means, summed (dips when a node misses a minute)."""
    return total_power(rs, MIN)


def true_total(minute: int) -> float:
    """The model's total power at a moment (without noise), all nodes that should be reporting."""
    x = (minute % 86400000 - SUNRISE) / (SUNSET - SUNRISE)
    if not 0 <= x <= 1:
        return 0.0
    live = [n for n in NODES if not (n.key == SILENT and minute >= SILENT_FROM)]
    return sum(n.peak_w for n in live) * math.sin(math.pi * x) ** 1.5
