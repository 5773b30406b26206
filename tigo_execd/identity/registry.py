"""What is known about each (gateway, node): its address and barcode, learnt from the reports.

taptap learns barcodes late (when the CCA reads its node table) and the fork only announces them in
infrastructure reports, so the converter asks the registry for the identity tags of every report.
`generation` grows with every change, so the converter knows when its cached tag strings are stale;
`on_change` lets the state file (identity.py) be saved only when something changed. A barcode is the
address written another way (barcode.py), so knowing one gives the other. Names (`panel`, `string`)
come from the user's names file, by barcode (it stays with the panel when the CCA re-enumerates) or
by gateway and node id.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any

from tigo_execd.identity.barcode import COLON_HEX, address_to_barcode, barcode_to_address, is_valid_barcode
from tigo_execd.log import log

# A CCA serves at most 7 TAPs x 300 optimizers (TAPTAP.md): more distinct ids than this mean a
# hostile or broken bus, and every per-node table stops growing here.
MAX_NODES = 4096
MAX_ID = 65535  # gateway and node ids are 16-bit on the bus

_HEX16 = re.compile(r"[0-9a-f]{16}")


def address_hex_from_json(value: object) -> str | None:
    """16 lower-case hex digits from taptap's JSON (an upstream int array or a fork colon-hex
    string), None for anything else: the bus is hostile input, so no exception for it either
    (barcode.address_hex is the one for addresses people type, and raises)."""
    if isinstance(value, list):
        if len(value) == 8 and all(type(b) is int and 0 <= b <= 255 for b in value):
            return bytes(value).hex()
        return None
    if isinstance(value, str) and COLON_HEX.fullmatch(value):
        return value.replace(":", "").lower()
    return None


def valid_barcode(value: object) -> str | None:
    """The barcode if it is one, check letter included (it becomes a tag: nothing else from the bus
    may)."""
    return value if is_valid_barcode(value) else None


def parse_id(text: object) -> int | None:
    """A gateway or node id (0-65535) from its decimal text (a JSON map key, a names file cell),
    else None. ASCII digits only (int() refuses some that isdigit() passes, "²"); leading zeros
    are stripped before the length check, so long text costs no int() conversion."""
    if not (isinstance(text, str) and text.isascii() and text.isdigit()):
        return None
    digits = text.lstrip("0") or "0"
    if len(digits) > 5:
        return None
    number = int(digits)
    return number if number <= MAX_ID else None


def id_sort_key(text: str) -> tuple[int, str]:
    """Sort ids held as text (tag values) as numbers, 2 before 10; any other text after them."""
    number = parse_id(text)
    return (number, "") if number is not None else (sys.maxsize, text)


def _complete(address: str | None, barcode: str | None) -> tuple[str | None, str | None]:
    """Fill in whichever of address (16 hex) and barcode is missing from the other."""
    if address and not barcode:
        return address, address_to_barcode(address)
    if barcode and not address:
        return barcode_to_address(barcode).hex(), barcode
    return address, barcode


Key = tuple[int, int]  # (gateway id, node id)


class Registry:
    """In-memory map of gateway and node identities.

    Each node's claim (the address and barcode its latest table or report names) is kept apart from
    what it is tagged with: an address is globally unique, so only one node at a time is tagged
    with it, its owner. The fork replaces a gateway's node table only when that gateway's whole
    table arrives, so after an optimizer moves to another TAP one infrastructure report can list its
    address under both gateways. Such a contest is settled by the power reports: the owner stays
    tagged until one of the claimants reports, and that one owns the address from then on (the
    converter calls `heard` for the reports of `contested` nodes). A claim repeated unchanged
    settles nothing again, so a stale table can never untag the live optimizer.
    """

    def __init__(self) -> None:
        self.gateways: dict[int, str] = {}             # gateway id -> address hex
        self.nodes: dict[Key, dict[str, str]] = {}     # what each node is tagged with: node_addr, barcode
        self.claims: dict[Key, dict[str, str]] = {}    # what each node's latest table or report said
        self.contested: set[Key] = set()               # claimants of an address not settled yet
        self._owners: dict[str, Key] = {}              # node address -> the node tagged with it
        self._claimants: dict[str, set[Key]] = {}      # node address -> the nodes that claim it
        self._former: dict[str, Key] = {}              # contested address -> its owner before
        # barcode or (gw, node) -> {panel, string}, from the names file
        self.names: dict[str | Key, dict[str, str]] = {}
        self.generation = 0
        self.on_change: Callable[[], None] | None = None

    def _changed(self) -> None:
        self.generation += 1
        if self.on_change:
            self.on_change()

    def learn_gateway(self, gateway: int, address: str | None) -> None:
        if address and self.gateways.get(gateway) != address:
            self.gateways[gateway] = address
            self._changed()

    def learn_node(self, gateway: int, node: int, address: str | None, barcode: str | None) -> None:
        """What one report (or the state file) says of one node."""
        key = (gateway, node)
        if not self._news(key, address, barcode):
            return  # the common case: every upstream report repeats what is known
        claim = self._claim(key, address, barcode)
        if claim is not None:
            self._settle(self._set_claims({key: claim}))

    def learn_table(self, gateway: int, table: dict[int, tuple[str | None, str | None]]) -> None:
        """A gateway's whole node table (node -> (address, barcode)), as the fork prints it: it
        replaces what that gateway's nodes claimed before; a node it leaves out claims nothing."""
        claims: dict[Key, dict[str, str] | None] = {
            key: None for key in self.claims if key[0] == gateway and key[1] not in table}
        for node, (address, barcode) in table.items():
            if self._news((gateway, node), address, barcode) and \
                    (claim := self._claim((gateway, node), address, barcode)) is not None:
                claims[(gateway, node)] = claim
        if claims:  # a table repeated unchanged (the fork prints them again and again) changes nothing
            self._settle(self._set_claims(claims))

    def _news(self, key: Key, address: str | None, barcode: str | None) -> bool:
        """Whether an address or barcode for `key` says something its claim does not."""
        known = self.claims.get(key, {})
        return bool((address and known.get("node_addr") != address)
                    or (barcode and known.get("barcode") != barcode))

    def _claim(self, key: Key, address: str | None, barcode: str | None) -> dict[str, str] | None:
        """A node's new claim, merged with what it claimed before; None beyond MAX_NODES."""
        if key not in self.claims and len(self.claims) >= MAX_NODES:
            log.warn(f"over {MAX_NODES} optimizers known: not learning gateway {key[0]} node "
                     f"{key[1]} (no real bus has that many; is something else writing on it?)",
                     key="max-nodes")
            return None
        known = self.claims.get(key, {})
        address, barcode = _complete(address, barcode)
        new = {k: v for k, v in (("node_addr", address), ("barcode", barcode)) if v}
        for tag in ("barcode", "node_addr"):
            if known.get(tag) and new.get(tag) and known[tag] != new[tag]:
                log.warn(f"gateway {key[0]} node {key[1]}: {tag} changed from {known[tag]} to "
                         f"{new[tag]} (the CCA re-enumerated its nodes); tags follow the new "
                         f"mapping", key=f"reenumerated {key[0]} {key[1]}")
                break
        return {**known, **new}

    def _set_claims(self, claims: dict[Key, dict[str, str] | None]) -> set[str]:
        """Record new claims (None: none any more); returns the addresses whose owner may change."""
        touched = set()
        for key, claim in claims.items():
            self.contested.discard(key)  # its contest, if any, goes on without it
            old = self.claims.pop(key, {}).get("node_addr")
            if old:
                self._claimants[old].discard(key)
                touched.add(old)
            if claim is not None:
                self.claims[key] = claim
                if address := claim.get("node_addr"):
                    self._claimants.setdefault(address, set()).add(key)
                    touched.add(address)
        return touched

    def _settle(self, addresses: set[str]) -> None:
        """Who is tagged with each address after its claims changed: its only claimant; with
        several, the owner stays until one of them reports (`heard`)."""
        for address in addresses:
            claimants = self._claimants.get(address, set())
            owner = self._owners.get(address)
            if owner is not None and owner not in claimants:
                self._former.setdefault(address, owner)
                self._untag(address)
                owner = None
            if len(claimants) == 1:
                self.contested -= claimants
                self._own(address, next(iter(claimants)))
            elif claimants:
                if owner is not None:
                    self._former.setdefault(address, owner)
                    self.nodes[owner] = dict(self.claims[owner])  # what it claims now
                self.contested |= claimants
            else:
                self._claimants.pop(address, None)
                self._former.pop(address, None)
        self._changed()

    def heard(self, gateway: int, node: int) -> None:
        """A contested node sent a power report: it owns the address it claims from now on."""
        key = (gateway, node)
        address = self.claims.get(key, {}).get("node_addr")
        self.contested.discard(key)
        if address is None:
            return
        self.contested -= self._claimants.get(address, set())
        if self._owners.get(address) != key:
            self._own(address, key)
            self._changed()
        self._former.pop(address, None)

    def _own(self, address: str, key: Key) -> None:
        """Tag `key` with `address`; say once where it came from if another node had it."""
        former = self._former.pop(address, None) or self._owners.get(address)
        self._untag(address)
        self._owners[address] = key
        self.nodes[key] = dict(self.claims[key])
        if former is not None and former != key:
            log.warn(f"{self.claims[key].get('barcode') or address} moved from gateway {former[0]} "
                     f"node {former[1]} to gateway {key[0]} node {key[1]}; the old id is "
                     f"untagged until it is learnt again", key=f"moved {address}")

    def _untag(self, address: str) -> None:
        owner = self._owners.pop(address, None)
        if owner is not None and self.nodes.get(owner, {}).get("node_addr") == address:
            del self.nodes[owner]  # (unless it is tagged with the address it claims now)

    def set_names(self, names: dict[str | tuple[int, int], dict[str, str]]) -> None:
        self.names = names
        self.generation += 1  # new tags; nothing for the state file (names live in their own file)

    def tags(self, gateway: int, node: int) -> dict[str, str]:
        """Identity tags beyond gateway_id/node_id that are known for this node."""
        tags = dict(self.nodes.get((gateway, node), ()))
        if gateway in self.gateways:
            tags["gateway_addr"] = self.gateways[gateway]
        name = self.names.get(tags.get("barcode", "")) or self.names.get((gateway, node))
        if name:
            tags.update(name)
        return tags

    def to_json(self) -> dict[str, Any]:
        """The learnt identities (not the names: the names file is their home) for the state file."""
        nodes: dict[str, dict[str, dict[str, str]]] = {}
        for (gw, node), info in sorted(self.nodes.items()):
            if info:
                nodes.setdefault(str(gw), {})[str(node)] = dict(info)
        return {"version": 1, "gateways": {str(g): a for g, a in sorted(self.gateways.items())},
                "nodes": nodes}

    def load_json(self, doc: object) -> int:
        """Learn what a state file holds; returns how many entries were unusable (and skipped)."""
        if not isinstance(doc, dict) or doc.get("version") != 1:
            raise ValueError("not a version 1 tigo-execd registry")
        bad = 0
        gateways, nodes = doc.get("gateways"), doc.get("nodes")
        for gw_key, address in (gateways.items() if isinstance(gateways, dict) else ()):
            gw = parse_id(gw_key)
            if gw is None or not (isinstance(address, str) and _HEX16.fullmatch(address)):
                bad += 1
                continue
            self.learn_gateway(gw, address)
        for gw_key, table in (nodes.items() if isinstance(nodes, dict) else ()):
            gw = parse_id(gw_key)
            for node_key, info in (table.items() if isinstance(table, dict) else ()):
                node = parse_id(node_key)
                if gw is None or node is None or not isinstance(info, dict):
                    bad += 1
                    continue
                address = info.get("node_addr")
                address = address if isinstance(address, str) and _HEX16.fullmatch(address) else None
                barcode = valid_barcode(info.get("barcode"))
                if not (address or barcode):
                    bad += 1
                    continue
                self.learn_node(gw, node, address, barcode)
        return bad


# Transitional, for merging only: convert.py (another helper's file) still imports the old name.
# The lead switches convert.py to address_hex_from_json and deletes this line.
