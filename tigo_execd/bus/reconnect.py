"""When a live feed is reopened and how loudly each change of state is told.

A port that is missing, refused or silent is retried with backoff (MIN_DELAY doubling to MAX_DELAY,
back to MIN_DELAY once bytes flowed). Each problem is logged once at W! (E! for permission and busy,
which need a person) and its repeats at D!, so a feed unplugged for a night is a handful of lines;
a silent converter is reopened quietly until it sends bytes again.
"""

from __future__ import annotations

import asyncio

from tigo_execd.log import log

MIN_DELAY, MAX_DELAY = 1.0, 30.0
SILENT = "silent"   # the reason a feed ends when no byte came for the silence timeout
NEEDS_A_PERSON = ("permission", "busy")  # open failures that retrying alone will not cure


class Reconnect:
    """The state of one live feed's reopening: the next delay and the problem still in effect."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.delay = MIN_DELAY
        self.trouble = ""  # the problem last logged at W!/E! and still in effect
        self.opened_before = False

    def open_failed(self, kind: str, message: str) -> None:
        """The feed could not be opened; `kind` tells one problem from another (feed.explain)."""
        say = log.debug if kind == self.trouble else log.error if kind in NEEDS_A_PERSON else log.warn
        say(f"{message} (retrying, at most every {MAX_DELAY:g} s)")
        self.trouble = kind

    def opened(self) -> bool:
        """The feed is open; True when it was open before (a reconnect)."""
        again, self.opened_before = self.opened_before, True
        say = log.debug if self.trouble == SILENT else log.info
        say(f"{self.label} open{' again' if again else ''}: relaying the bus to taptap")
        if self.trouble != SILENT:
            self.trouble = ""
        return again

    def ended(self, reason: str, got_bytes: bool, silence_timeout: float) -> None:
        """The open feed failed, closed or went silent (`reason` SILENT) after relaying bytes or not."""
        if got_bytes:
            self.delay = MIN_DELAY
            if self.trouble == SILENT:
                self.trouble = ""
        if reason == SILENT:
            say = log.debug if self.trouble == SILENT else log.warn
            say(f"no byte from {self.label} for {silence_timeout:g} s: reopening it "
                f"(a hung converter or adapter?)")
        else:
            log.warn(f"lost {self.label}: {reason}; reopening", key=f"lost:{self.label}")
        self.trouble = reason if reason == SILENT else "lost"

    async def wait(self) -> None:
        """Sleep the current delay, then double it (up to MAX_DELAY) for the next time."""
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, MAX_DELAY)
