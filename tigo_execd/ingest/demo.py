"""The bundled demo: a believable summer day of a 22-optimizer array on three gateways.

It is synthesized deterministically (fixed seed) as taptap itself would print it, so `--demo`
exercises the same parsing as real data: gateway 4609 speaks the upstream format with addresses and
barcodes that only arrive at 10:00, gateways 4610 and 4611 speak the fork format with identities in
infrastructure reports (4611 stamps in UTC with `Z` and 3 fractional digits, 4610 with 9 digits),
with taptap's non-JSON debug lines in between. The evening of the day before, the night gap, and a
full day with clouds; a shaded node (4609/7, below half its power until 10:30), a weak node (4610/3,
70 % of its peers all day: dirt or a cracked cell), a weak-signal node that misses reports
(4610/5), and a TS4-A-S unit (voltage_out always 0). Node ids clash across gateways, as on real
multi-TAP sites. `tigo-execd faults` finds the first three (docs/reference/faults.md).
"""

from __future__ import annotations

import datetime as dt
import math
import random
from typing import Any

import orjson

from tigo_execd.clock import parse_timestamp
from tigo_execd.identity.barcode import address_colon, address_to_barcode

OFFSET = dt.timezone(dt.timedelta(hours=2))
DAY = dt.datetime(2025, 6, 21, tzinfo=OFFSET)
SUNRISE, SUNSET = 5.25, 21.6           # local hours
START = DAY - dt.timedelta(hours=24 - 19.5)  # 19:30 the evening before
END = DAY + dt.timedelta(hours=SUNSET)
CYCLE = 20.0
GATEWAYS = {4609: 9, 4610: 7, 4611: 6}  # gateway id -> nodes 2..n+1
WEAK_NODE, WEAK_SHARE = (4610, 3), 0.7


def _address(gateway: int, node: int) -> list[int]:
    serial = 0xA23400 + gateway % 100 * 0x100 + node
    return [0x04, 0xC0, 0x5B, 0x40, 0x00, serial >> 16 & 0xFF, serial >> 8 & 0xFF, serial & 0xFF]


def _gateway_address(gateway: int) -> list[int]:
    return [0x04, 0xC0, 0x5B, 0x30, 0x00, 0x02, gateway >> 8 & 0xFF, gateway & 0xFF]


def _barcode(address: list[int]) -> str:
    """The label barcode of one of the demo's made-up addresses (all have the Tigo prefix)."""
    code = address_to_barcode(address)
    assert code is not None
    return code


def _stamp(t: dt.datetime, gateway: int) -> str:
    if gateway == 4611:
        return t.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    text = t.isoformat(timespec="microseconds")
    if gateway == 4610:  # nanosecond digits, as the fork prints them
        text = text[:26] + f"{t.microsecond % 997:03d}" + text[26:]
    return text


def _sun(hour: float) -> float:
    if not SUNRISE < hour < SUNSET:
        return 0.0
    return float(math.sin(math.pi * (hour - SUNRISE) / (SUNSET - SUNRISE)) ** 1.3)


def day() -> tuple[list[bytes], int]:
    """The demo's taptap stdout lines (with newlines) and the epoch ns of its last report."""
    rng = random.Random(20250621)
    lines: list[bytes] = []
    cloud = 1.0
    t = START
    last = 0
    barcodes_known = DAY + dt.timedelta(hours=10)
    infra_at = {4610: DAY + dt.timedelta(hours=11, minutes=30), 4611: DAY + dt.timedelta(hours=15)}
    infra_done: set[int] = set()
    while t <= END:
        hour = t.hour + t.minute / 60 + t.second / 3600
        cloud = min(1.0, max(0.25, cloud + rng.gauss(0, 0.03) + (0.02 if cloud < 0.9 else 0)))
        if 13.5 < hour < 14.2:
            cloud = min(cloud, 0.35 + rng.random() * 0.1)
        for gateway, count in GATEWAYS.items():
            if gateway in infra_at and gateway not in infra_done and t >= infra_at[gateway]:
                infra_done.add(gateway)
                lines.append(_infrastructure(gateway, count))
            if rng.random() < 0.0004:
                lines.append(b"bad tx request: Frame { address: From(GatewayID(0x%X)), frame_type: "
                             b"Type::RECEIVE_RESPONSE, payload: [65, 255, 24, 64, 135] }\n" % gateway)
            slot = t + dt.timedelta(seconds=gateway % 7 * 1.37)
            west = 1.0 if gateway != 4611 else 0.0
            sun = _sun(hour - 0.8 * (1 - west) + 0.3 * west)
            if sun <= 0:
                continue
            stamp = _stamp(slot, gateway)
            last = max(last, parse_timestamp(stamp))
            for node in range(2, count + 2):
                weak = gateway == 4610 and node == 5
                if (weak and rng.random() < 0.35) or rng.random() < 0.01:
                    continue
                lines.append(_report(rng, gateway, node, stamp, sun * cloud, hour,
                                     t >= barcodes_known, weak))
        t += dt.timedelta(seconds=CYCLE)
    return lines, last


def _report(rng: random.Random, gateway: int, node: int, stamp: str, irradiance: float,
            hour: float, identities: bool, weak: bool) -> bytes:
    shade = 0.45 if gateway == 4609 and node == 7 and hour < 10.5 else 1.0
    dirt = WEAK_SHARE if (gateway, node) == WEAK_NODE else 1.0  # less current, the same voltage
    power = 405 * irradiance * shade * dirt * (0.96 + 0.04 * rng.random())
    temperature = 16 + 32 * irradiance + rng.gauss(0, 0.4)
    vin = max(0.0, 37.5 - 0.09 * temperature - (4.0 if shade < 1 else 0) + rng.gauss(0, 0.2))
    current = power / vin if vin > 1 else 0.0
    duty = 1.0 if shade == 1.0 else 0.62 + 0.05 * rng.random()
    tsas = gateway == 4611 and node == 4
    q = {
        "voltage_in": round(round(vin * 20) / 20, 2),
        "voltage_out": 0.0 if tsas else round(round(vin * duty * 10) / 10, 1),
        "current": round(round(current * 200) / 200, 3),
        "dc_dc_duty_cycle": round(duty * 255) / 255,
        "temperature": round(temperature, 1),
        "rssi": max(0, min(255, (58 if weak else 120 + node * 4 + gateway % 3 * 5) + rng.randint(-3, 3))),
    }
    if gateway == 4609:
        gw: dict[str, Any] = {"id": gateway}
        nd: dict[str, Any] = {"id": node}
        if identities:
            gw["address"] = _gateway_address(gateway)
            nd["address"] = _address(gateway, node)
            nd["barcode"] = _barcode(nd["address"])
        return orjson.dumps({"gateway": gw, "node": nd, "timestamp": stamp, **q}) + b"\n"
    return orjson.dumps({"event_type": "power_report", "gateway": gateway, "node": node,
                         "timestamp": stamp, **q}) + b"\n"


def _infrastructure(gateway: int, count: int) -> bytes:
    nodes = {str(n): {"address": address_colon(_address(gateway, n)),
                      "barcode": _barcode(_address(gateway, n))}
             for n in range(2, count + 2)}
    return orjson.dumps({"event_type": "infrastructure_report",
                         "gateways": {str(gateway): {"address": address_colon(_gateway_address(gateway)),
                                                     "version": "Mgate Version G8.59\r"}},
                         "nodes": {str(gateway): nodes}}) + b"\n"
