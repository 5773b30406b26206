"""The soak (tests/bench/soak.py) in CI size: 20,000 reports over the serial bridge, through the
shipped tigo.conf in the Telegraf harness, into the session's InfluxDB, with taptap SIGKILLed twice
and the adapter unplugged and replugged once. TIGO_SOAK_REPORTS=N runs it with N reports instead.
"""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from support.paths import TESTS

sys.path.insert(0, str(TESTS / "bench"))

import soak

REPORTS = int(os.environ.get("TIGO_SOAK_REPORTS", "20000"))
pytestmark = pytest.mark.slow


def test_soak_every_report_stored_exactly_once_across_kills_and_unplugs(influxd, influx_db):
    plan = soak.Plan(REPORTS, kills=2, unplugs=1, sample_every=1.0, stall=20.0)
    r = asyncio.run(soak.soak(plan, influxd.url, influx_db.db))
    summary = soak.report(r)
    assert r.kills == 2 and r.unplugs == 1, summary
    # no loss, no duplicate: Telegraf parsed each report once, InfluxDB holds each distinct point
    assert (r.sent, r.received, r.stored) == (REPORTS, REPORTS, REPORTS), summary
    assert len(r.pids) == 1, summary  # tigo-execd itself never exited
    st = r.stats  # what tigo-execd says about the same run
    assert (st["reports"], st["taptap_starts"], st["source_reconnects"]) == (REPORTS, 3, 1), summary
    assert st["bus_bytes_dropped"] == 0 and st["lines_invalid"] == 0, summary
    assert st["bus_bytes"] == r.bus_bytes, summary
    assert r.problems == [], summary
    assert max(s.children for s in r.samples) <= 1, summary
    assert r.samples[-1].fds <= r.samples[0].fds + 2, summary
