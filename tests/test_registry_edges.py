"""registry.py at its edges, each case one that a changed token would get wrong (scripts/mutation.sh
found them): the ranges of ids and address bytes, when `generation` moves (the converter's tag
cache), which repeated warnings are rate-limited, and what a damaged state file still gives."""

from __future__ import annotations

import pytest

from tigo_execd.identity import registry
from tigo_execd.identity.registry import MAX_NODES, Registry, address_hex_from_json, id_sort_key, parse_id

TIGO = "04c05b4000a2346f"   # barcode 4-A2346FZ
OTHER = "0011223344556677"  # not Tigo's prefix: no barcode


@pytest.mark.parametrize("value, want", [
    ([4, 0xC0, 0x5B, 0x40, 0, 0xA2, 0x34, 255], "04c05b4000a234ff"),
    ([4, 0xC0, 0x5B, 0x40, 0, 0xA2, 0x34, 256], None),
    ([4, 0xC0, 0x5B, 0x40, 0, 0xA2, 0x34], None),           # seven bytes
    ([300] * 8, None), ([True] * 8, None), (["4"] * 8, None),
])
def test_address_from_json_takes_eight_bytes_only(value, want):
    assert address_hex_from_json(value) == want


@pytest.mark.parametrize("text, want", [
    ("0", 0), ("000", 0), ("0000001", 1), ("000000000065535", 65535), ("65535", 65535),
    ("65536", None), ("100000", None), ("-1", None), ("", None), ("²", None),
])
def test_ids_are_16_bit_decimals_leading_zeros_allowed(text, want):
    assert parse_id(text) == want


def test_ids_sort_as_numbers_then_other_text():
    assert sorted(["10", "x", "2", "1", "0002"], key=id_sort_key) == ["1", "2", "0002", "10", "x"]
    assert id_sort_key("7") == (7, "")


def test_generation_counts_each_change_and_nothing_else():
    reg = Registry()
    changes: list[int] = []
    reg.on_change = lambda: changes.append(reg.generation)
    assert reg.generation == 0
    reg.learn_gateway(4609, "04c05b3000000001")
    reg.learn_gateway(4609, "04c05b3000000001")  # again: no change
    reg.learn_gateway(4609, None)                # nothing known: keeps the address
    assert (reg.gateways, reg.generation) == ({4609: "04c05b3000000001"}, 1)
    reg.learn_node(4609, 2, TIGO, None)
    reg.learn_node(4609, 2, TIGO, None)
    reg.learn_node(4609, 2, None, "4-A2346FZ")
    reg.learn_node(4609, 2, TIGO, "4-A2346FZ")
    assert reg.generation == 2 and changes == [1, 2]
    reg.set_names({(4609, 2): {"panel": "A1"}})  # new tags, nothing for the state file
    assert reg.generation == 3 and changes == [1, 2]
    assert reg.tags(4609, 2) == {"node_addr": TIGO, "barcode": "4-A2346FZ", "panel": "A1",
                                 "gateway_addr": "04c05b3000000001"}


def test_an_address_and_a_barcode_given_together_are_kept_as_given():
    reg = Registry()
    reg.learn_node(1, 2, OTHER, "4-A2346FZ")
    assert reg.tags(1, 2) == {"node_addr": OTHER, "barcode": "4-A2346FZ"}


def test_an_address_change_without_barcodes_is_said(logged):
    reg = Registry()
    reg.learn_node(1, 2, OTHER, None)
    reg.learn_node(1, 2, "0011223344556688", None)
    assert logged.getvalue() == ("W! gateway 1 node 2: node_addr changed from 0011223344556677 to "
                                 "0011223344556688 (the CCA re-enumerated its nodes); tags follow the new "
                                 "mapping\n")


def test_repeated_warnings_are_rate_limited_per_node(logged):
    reg = Registry()
    reg.learn_node(1, 2, OTHER, None)
    reg.learn_node(1, 2, "0011223344556688", None)
    reg.learn_node(1, 2, "0011223344556699", None)  # the same node again within the window
    [line] = logged.getvalue().splitlines()
    assert "gateway 1 node 2: node_addr changed" in line


def test_beyond_max_nodes_nothing_is_learnt_and_it_is_said_once(logged, monkeypatch):
    monkeypatch.setattr(registry, "MAX_NODES", 3)
    reg = Registry()
    for node in range(1, 6):
        reg.learn_node(1, node, f"00112233445566{node:02x}", None)
    assert sorted(reg.nodes) == [(1, 1), (1, 2), (1, 3)]
    assert logged.getvalue() == ("W! over 3 optimizers known: not learning gateway 1 node 4 (no real bus "
                                 "has that many; is something else writing on it?)\n")
    assert MAX_NODES == 4096


def test_a_damaged_state_file_gives_what_it_still_holds():
    reg = Registry()
    bad = reg.load_json({"version": 1,
                         "gateways": {"x": "04c05b3000000001", "70000": "04c05b3000000001",
                                      "4609": "04c05b3000000001"},
                         "nodes": {"4609": {"2": {"barcode": "4-A2346FZ"},
                                            "3": {"node_addr": "zz", "barcode": "4-A23471V"},
                                            "4": {"node_addr": OTHER, "barcode": "4-A2346FZ"},
                                            "5": {"node_addr": "zz"}, "6": []},
                                   "4610": ["not", "a", "table"]}})
    assert bad == 4  # two gateways, node 5 (nothing usable), node 6
    assert reg.gateways == {4609: "04c05b3000000001"}
    assert reg.nodes[4609, 2] == {"node_addr": TIGO, "barcode": "4-A2346FZ"}
    assert reg.nodes[4609, 3] == {"node_addr": "04c05b4000a23471", "barcode": "4-A23471V"}
    assert reg.nodes[4609, 4] == {"node_addr": OTHER, "barcode": "4-A2346FZ"}
    assert Registry().load_json({"version": 1, "gateways": ["a"], "nodes": "b"}) == 0
    with pytest.raises(ValueError, match=r"^not a version 1 tigo-execd registry$"):
        Registry().load_json({"version": 2})
