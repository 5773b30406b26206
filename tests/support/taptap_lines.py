"""taptap's JSON lines, built for tests in either of the two formats tigo-execd reads.

Upstream (https://github.com/willglynn/taptap) prints a power report without `event_type`, with
gateway and node as objects: `{"gateway":{"id":4609},"node":{"id":116},"timestamp":...,
"voltage_in":...}`; an `address` (8 ints) and, in git HEAD, the node's `barcode` are added when
known. The fork (https://github.com/litinoveweedle/taptap) prints `{"event_type":"power_report",
"gateway":4609,"node":116,...}` and brings identities in `infrastructure_report` lines whose map
keys are the ids written as strings and whose addresses are upper-case colon hex.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

NS = 1_000_000_000
# The first report of the example output in upstream's README (a real array)
EXAMPLE_TIMESTAMP = "2024-08-24T09:16:41.686961-05:00"
EXAMPLE_VALUES: dict[str, Any] = {"voltage_in": 30.6, "voltage_out": 30.2, "current": 6.94,
                                  "dc_dc_duty_cycle": 1.0, "temperature": 26.8, "rssi": 132}


def stamp(ns: int, digits: int = 9) -> str:
    """An RFC 3339 time in UTC as taptap writes it (`Z`), with `digits` fractional digits."""
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // NS))
    return text + (f".{ns % NS:09d}"[:digits + 1] if digits else "") + "Z"


def power_report(node: Any = 116, gateway: Any = 4609, timestamp: Any = EXAMPLE_TIMESTAMP, *,
                 fork: bool = True, gateway_address: str | None = None,
                 node_address: str | None = None, barcode: str | None = None,
                 **values: Any) -> bytes:
    """One power report line, without newline: the README's values unless `values` say otherwise.
    Any member given as `...` is left out (a report that lacks it); any other value is written
    as given, so a test can build a wrong type too. Addresses are colon hex in both formats
    (upstream prints them as 8 ints); upstream only carries identities in the report."""
    if fork:
        doc: dict[str, Any] = {"event_type": "power_report", "gateway": gateway, "node": node}
    else:
        gw: dict[str, Any] = {"id": gateway}
        if gateway_address:
            gw["address"] = _address_ints(gateway_address)
        nd: dict[str, Any] = {"id": node}
        if node_address:
            nd["address"] = _address_ints(node_address)
        if barcode:
            nd["barcode"] = barcode
        doc = {"gateway": gw, "node": nd}
    doc.update({"timestamp": timestamp, **EXAMPLE_VALUES})
    doc.update(values)
    return orjson.dumps({k: v for k, v in doc.items() if v is not ...})


def infrastructure_report(nodes: dict[int, dict[int, dict[str, str]]],
                          gateways: dict[int, dict[str, str]] | None = None) -> bytes:
    """The fork's infrastructure report: `nodes` {gateway: {node: {"address", "barcode"}}},
    `gateways` {gateway: {"address", "version"}} (only gateways whose address is known)."""
    return orjson.dumps({"event_type": "infrastructure_report",
                         "gateways": {str(g): v for g, v in (gateways or {}).items()},
                         "nodes": {str(g): {str(n): v for n, v in ns.items()}
                                   for g, ns in nodes.items()}})


def _address_ints(address: str) -> list[int]:
    return [int(part, 16) for part in address.split(":")]
