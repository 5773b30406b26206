"""Diagnostics on stderr the way Telegraf's execd wants them.

Every line carries a level prefix (`E! `, `W! `, `I! `, `D! `), otherwise Telegraf logs it as an
error. Messages given a `key` are rate-limited: the first one of a window is printed, the rest are
counted and the count is reported with the next one, so a bad line per second for hours stays a
handful of log lines. Keys are `family:detail`; at most MAX_KEYS kinds are tracked, beyond that
new kinds share one window per family, so a flood of ever new kinds (a key made from hostile
text) neither grows memory nor silences the other families.
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable
from typing import TextIO

LEVELS = {"error": 0, "warn": 1, "info": 2, "debug": 3}
PREFIX = {0: "E! ", 1: "W! ", 2: "I! ", 3: "D! "}
MAX_MESSAGE = 2000  # Telegraf stops reading stderr for good after a 64 KiB line
MAX_KEYS = 256      # kinds remembered at once: keys built from hostile input must not grow memory


class Log:
    """Level-filtered, prefixed, rate-limited stderr logger."""

    def __init__(self, level: str = "info", stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic, window: float = 60.0) -> None:
        self.level = LEVELS[level]
        self.stream = stream
        self.clock = clock
        self.window = window
        self._seen: dict[str, tuple[float, int]] = {}  # key -> (window start, suppressed count)

    def set_level(self, level: str) -> None:
        self.level = LEVELS[level]

    def emit(self, level: int, msg: str, key: str | None = None) -> None:
        if level > self.level:
            return
        if key is not None:
            now = self.clock()
            if key not in self._seen and len(self._seen) >= MAX_KEYS:
                self.report_suppressed()  # forget the kinds whose window has passed
                if len(self._seen) >= MAX_KEYS:  # still full: one window per family of kinds
                    key = "*" + key.split(":", 1)[0] if ":" in key else "*"
            start, suppressed = self._seen.get(key, (None, 0))
            if start is not None and now - start < self.window:
                self._seen[key] = (start, suppressed + 1)
                return
            self._seen[key] = (now, 0)
            if suppressed:
                msg = f"{msg} ({suppressed} more like this in the last {self.window:.0f} s)"
        self.write(PREFIX[level] + msg)

    def write(self, text: str) -> None:
        """Write one already-prefixed line; newlines inside become ' | ' so no line loses its prefix."""
        text = text.replace("\r", "").replace("\n", " | ")
        if len(text) > MAX_MESSAGE:
            text = text[:MAX_MESSAGE] + "..."
        stream = self.stream or sys.stderr
        try:
            stream.write(text + "\n")
            stream.flush()
        except (OSError, ValueError):
            pass  # stderr gone: nothing better to do with a diagnostic

    def report_suppressed(self) -> None:
        """Print the counts of rate-limited messages whose window has passed without a repeat."""
        now = self.clock()
        for key, (start, suppressed) in list(self._seen.items()):
            if now - start >= self.window:
                del self._seen[key]
                if suppressed:
                    self.debug(f"{suppressed} more messages of kind {key!r} were suppressed")

    def error(self, msg: str, key: str | None = None) -> None:
        self.emit(0, msg, key)

    def warn(self, msg: str, key: str | None = None) -> None:
        self.emit(1, msg, key)

    def info(self, msg: str, key: str | None = None) -> None:
        self.emit(2, msg, key)

    def debug(self, msg: str, key: str | None = None) -> None:
        self.emit(3, msg, key)


log = Log()


def install_excepthook() -> None:
    """Print an unexpected traceback as E! lines instead of unprefixed text."""

    def hook(exc_type, exc, tb) -> None:  # type: ignore[no-untyped-def]
        for chunk in traceback.format_exception(exc_type, exc, tb):
            for line in chunk.rstrip("\n").split("\n"):
                log.write("E! " + line)

    sys.excepthook = hook
