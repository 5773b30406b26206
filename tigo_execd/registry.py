"""What is known about each (gateway, node): its address and barcode, learnt from the reports.

taptap learns barcodes late (when the CCA reads its node table) and the fork only announces them in
infrastructure reports, so the converter asks the registry for the identity tags of every report.
`generation` grows with every change, so the converter knows when its cached tag strings are stale.
"""

from __future__ import annotations

import re

from tigo_execd.log import log

_BARCODE = re.compile(r"[0-9A-F]-[1-9A-F][0-9A-F]{0,8}[GHJKLMNPRSTVWXYZ]")
_COLON_HEX = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){7}")


def address_hex(value: object) -> str | None:
    """16 lower-case hex digits from an upstream int array or a fork colon-hex string, else None."""
    if isinstance(value, list):
        if len(value) == 8 and all(type(b) is int and 0 <= b <= 255 for b in value):
            return bytes(value).hex()
        return None
    if isinstance(value, str) and _COLON_HEX.fullmatch(value):
        return value.replace(":", "").lower()
    return None


def valid_barcode(value: object) -> str | None:
    """The barcode if it has the Tigo shape (it becomes a tag: nothing else from the bus may)."""
    return value if isinstance(value, str) and _BARCODE.fullmatch(value) else None


class Registry:
    """In-memory map of gateway and node identities."""

    def __init__(self) -> None:
        self.gateways: dict[int, str] = {}                      # gateway id -> address hex
        self.nodes: dict[tuple[int, int], dict[str, str]] = {}  # (gw, node) -> {node_addr, barcode}
        self.generation = 0

    def learn_gateway(self, gateway: int, address: str | None) -> None:
        if address and self.gateways.get(gateway) != address:
            self.gateways[gateway] = address
            self.generation += 1

    def learn_node(self, gateway: int, node: int, address: str | None, barcode: str | None) -> None:
        known = self.nodes.setdefault((gateway, node), {})
        changed = False
        for key, value in (("node_addr", address), ("barcode", barcode)):
            if value and known.get(key) != value:
                if key in known:
                    log.warn(f"gateway {gateway} node {node}: {key} changed from {known[key]} to "
                             f"{value} (the CCA re-enumerated its nodes); tags follow the new value")
                known[key] = value
                changed = True
        if changed:
            self.generation += 1

    def tags(self, gateway: int, node: int) -> dict[str, str]:
        """Identity tags beyond gateway_id/node_id that are known for this node."""
        tags = dict(self.nodes.get((gateway, node), ()))
        if gateway in self.gateways:
            tags["gateway_addr"] = self.gateways[gateway]
        return tags
