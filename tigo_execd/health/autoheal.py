"""The heal the watchdog runs by itself: no user action and no daemon of its own after an outage.

After every check of the health instance (one a minute) it gives the heal (heal.py) at most
BUDGET_S of work: a pass starts at the first check that reaches InfluxDB after one that did not (an
outage just ended), and otherwise every EVERY_CHECKS checks; a pass over a long journal runs in
slices over several checks (files are summarised once and cached while unchanged), so a minute's
check is delayed by about a second at most. The `tigo_health` line then says when a pass last
finished (`heal_last`) and how many reports the heals of this watchdog restored (`heal_restored`).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator
from pathlib import Path

from tigo_execd import journal, lineproto
from tigo_execd.clock import iso_utc
from tigo_execd.health.heal import SETTLE_NS, Healer, Result
from tigo_execd.influx import Influx, InfluxError
from tigo_execd.journal import HOUR_NS
from tigo_execd.log import log

EVERY_CHECKS = 5        # with Telegraf's 60 s interval: a pass every 5 minutes
BUDGET_S = 1.0          # heal work per check
TIMEOUT_S = 2.0         # per InfluxDB request of the heal: a hung server costs a check little
UNREACHED = {"influx_unreachable", "influx_auth_failed"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--journal", default="auto", metavar="DIR",
                   help="heal InfluxDB from this journal of `tigo-execd run` while checking; "
                        "'auto' = $STATE_DIRECTORY/journal when the service has a state directory "
                        "holding one; 'off' = never (default: auto)")


def from_args(args: argparse.Namespace, client: Influx, rp: str) -> AutoHeal | None:
    """The automatic heal `--journal` asks for, None when off or when there is no journal.
    `auto` looks only in a systemd state directory: a watchdog run by hand heals nothing unasked."""
    if args.journal == "off" or (args.journal == "auto" and not os.environ.get("STATE_DIRECTORY")):
        return None
    directory = journal.default_dir() if args.journal == "auto" else Path(args.journal)
    log.info(f"watchdog: healing InfluxDB from the journal {directory} after outages"
             f"{'' if directory.is_dir() else ' (once tigo-execd run has started it)'}")
    own = Influx(client.url, client.db, client.user, client.password, timeout=TIMEOUT_S)
    return AutoHeal(Healer(directory, own, rp, create_db=True))  # Telegraf creates it anyway


class AutoHeal:
    def __init__(self, healer: Healer) -> None:
        self.healer = healer
        self.checks = 0
        self.restored = 0
        self.last_ns: int | None = None
        self._reached = True
        self._pass: Iterator[None] | None = None
        self._result = Result()

    def after_check(self, reason: str, now_ns: int) -> dict[str, lineproto.Field | None]:
        """Heal for at most BUDGET_S; the heal fields for this check's `tigo_health` line."""
        reached = reason not in UNREACHED
        self.checks += 1
        if not reached:
            self._pass = None  # InfluxDB is gone: start afresh once it is back
        elif self._pass is None and (not self._reached or self.checks % EVERY_CHECKS == 1) \
                and self.healer.dir.is_dir():  # the data instance may not have written yet
            self._result = Result()
            since = now_ns - int(journal.DEFAULT_DAYS * 24 * HOUR_NS)
            self._pass = self.healer.steps(since, now_ns - SETTLE_NS, self._result)
        self._reached = reached
        if self._pass is not None:
            self._work(now_ns)
        return {"heal_restored": self.restored,
                "heal_last": None if self.last_ns is None else iso_utc(self.last_ns)}

    def _work(self, now_ns: int) -> None:
        assert self._pass is not None
        deadline = time.monotonic() + BUDGET_S
        try:
            while time.monotonic() < deadline:
                next(self._pass)
        except StopIteration:
            self._pass = None
            self.last_ns = now_ns
            self.restored += self._result.restored
            if self._result.restored:
                log.info(f"watchdog: healed {self._result.restored} reports in "
                         f"{len(self._result.missing)} hours from the journal")
        except InfluxError as exc:
            self._pass = None
            self.restored += self._result.restored
            log.warn(f"watchdog: heal stopped: {exc}", key="autoheal")
