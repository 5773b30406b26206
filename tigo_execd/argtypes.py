"""The argparse types the commands share: numbers in a range, an optional number, RFC 3339 times.

A value they refuse becomes a usage error (exit 64) whose message says what is wanted, the same
wording in every command.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from datetime import UTC, datetime

from tigo_execd.clock import NS, parse_timestamp


def _float(text: str) -> float | None:
    """The finite number the text spells, else None (nan and inf are no settings)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def number(low: float | None = None, high: float | None = None, *, above: bool = False,
           unit: str = "") -> Callable[[str], float]:
    """A finite number of at least `low` (more than `low` with `above`) and at most `high`."""
    of = f"of {unit} " if unit else ""
    if low is not None and high is not None:
        wanted = f"{of}from {low:g} to {high:g}" if not above else f"{of}above {low:g} and up to {high:g}"
    elif low is not None:
        wanted = f"{of}above {low:g}" if above else f"{of}{low:g} or more"
    else:
        wanted = f"{of}up to {high:g}" if high is not None else of.strip()

    def parse(text: str) -> float:
        value = _float(text)
        if value is None or (low is not None and (value <= low if above else value < low)) or \
                (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text!r} is not a number {wanted}".rstrip())
        return value

    return parse


def optional_number(text: str) -> float | None:
    """Empty means "not set", so a Telegraf conf can pass "${TIGO_LATITUDE:-}" unconditionally."""
    if not text.strip():
        return None
    value = _float(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number")
    return value


def rfc3339_ns(text: str) -> int:
    """An RFC 3339 time (with Z or an offset) as exact epoch nanoseconds: the converter's parser."""
    try:
        return parse_timestamp(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (RFC 3339 with Z or an offset, e.g. "
                                         f"2024-06-01T00:00:00Z)") from None


def rfc3339(text: str) -> datetime:
    """An RFC 3339 time as an aware datetime (UTC)."""
    ns = rfc3339_ns(text)
    return datetime.fromtimestamp(ns // NS, UTC).replace(microsecond=ns % NS // 1000)
