"""The tests' own support code, checked where a mistake would silently weaken other tests: the
taptap line builder against taptap's sample output (tests/data), and how wait_until fails."""

from __future__ import annotations

import asyncio

import pytest

from support.paths import DATA
from support.taptap_lines import infrastructure_report, power_report, stamp
from support.wait import wait_until, wait_until_async

GW_ADDR = "04:C0:5B:30:00:02:BE:16"
NODE2_ADDR, NODE3_ADDR = "04:C0:5B:40:00:A2:34:6F", "04:C0:5B:40:00:A2:34:71"


def sample(name: str, number: int) -> bytes:
    return (DATA / name).read_bytes().splitlines()[number - 1]


def test_builder_writes_upstream_reports_as_taptap_does():
    assert power_report(fork=False) == sample("taptap-upstream.jsonl", 1)
    assert power_report(2, timestamp="2024-08-24T09:17:21.696402-05:00", fork=False,
                        gateway_address=GW_ADDR, node_address=NODE2_ADDR, barcode="4-A2346FZ",
                        voltage_in=31.2, voltage_out=30.9, current=6.71, temperature=27.4,
                        rssi=139) == sample("taptap-upstream.jsonl", 9)


def test_builder_writes_fork_reports_as_taptap_does():
    assert power_report(2, timestamp="2025-04-03T19:19:42.862954593+02:00") == \
        sample("taptap-fork.jsonl", 3)
    version = "Mgate Version G8.59\rJul  6 2020\r16:51:51\rGW-H158.4.3S0.12\r"
    assert infrastructure_report(
        {4609: {2: {"address": NODE2_ADDR, "barcode": "4-A2346FZ"},
                3: {"address": NODE3_ADDR, "barcode": "4-A23471V"}}},
        {4609: {"address": GW_ADDR, "version": version}}) == sample("taptap-fork.jsonl", 1)


def test_builder_leaves_out_what_is_given_as_ellipsis():
    assert power_report(fork=False, timestamp=..., rssi=...) == (
        b'{"gateway":{"id":4609},"node":{"id":116},"voltage_in":30.6,"voltage_out":30.2,'
        b'"current":6.94,"dc_dc_duty_cycle":1.0,"temperature":26.8}')


@pytest.mark.parametrize("digits, text", [(9, "2024-08-24T14:16:41.686961123Z"),
                                          (6, "2024-08-24T14:16:41.686961Z"),
                                          (0, "2024-08-24T14:16:41Z")])
def test_stamp_is_utc_rfc3339_with_the_digits_asked(digits, text):
    assert stamp(1_724_509_001_686_961_123, digits) == text


def test_wait_until_fails_naming_what_it_waited_for_and_the_state_then():
    items: list[int] = []
    with pytest.raises(AssertionError, match=r"^timed out after 0.2 s waiting for 3 items \(have 0\)$"):
        wait_until(lambda: len(items) >= 3, 0.2, lambda: f"3 items (have {len(items)})")
    wait_until(lambda: True, 0, "a condition true at once")  # no wait, no failure


def test_wait_until_async_lets_the_loop_run_while_it_waits():
    async def scenario() -> None:
        done = asyncio.Event()
        asyncio.get_running_loop().call_later(0.1, done.set)
        await wait_until_async(done.is_set, 5, "the timer")
        with pytest.raises(AssertionError, match="waiting for never"):
            await wait_until_async(lambda: False, 0.1, "never")

    asyncio.run(scenario())
