"""Telegraf's environment as systemd starts it with the shipped confs, pointed at this checkout,
the fake taptap and a test InfluxDB."""

from __future__ import annotations

import os
from pathlib import Path

from support.paths import DATA
from support.proc import FAKE_TAPTAP

SAMPLE = DATA / "taptap-upstream.jsonl"


def telegraf_env(tigo_execd_bin: Path, influx_url: str, db: str, state: Path,
                 **extra: str) -> dict[str, str]:
    """Telegraf's environment under systemd: /etc/default/telegraf's variables, STATE_DIRECTORY
    from the unit's drop-in (systemd/telegraf.service.d/tigo-execd.conf), plus the fake taptap's knobs."""
    return {"PATH": os.environ["PATH"], "TIGO_EXECD": str(tigo_execd_bin), "STATE_DIRECTORY": str(state),
            "TIGO_SOURCE": "cmd:" + " ".join(FAKE_TAPTAP) + " observe --serial /dev/null",
            "FAKE_TAPTAP_LINES": str(SAMPLE), "FAKE_TAPTAP_THEN": "sleep",
            "TIGO_CLOCK_CHECK": "off",  # the fake replays 2024 samples; test_clock covers the check
            "INFLUX_URL": influx_url, "INFLUX_DB": db, **extra}
