"""Waiting on a condition with a timeout: the one way tests wait, never a sleep in hope."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

POLL = 0.05  # seconds between two looks at a condition nothing announces

Message = str | Callable[[], str]  # a callable is evaluated at the failure, to show the state then


def _pauses(predicate: Callable[[], object], timeout: float, message: Message) -> Iterator[float]:
    """The waits between two looks at `predicate` until it holds; fails at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout:g} s waiting for {text}")
        yield min(remaining, POLL)


def wait_until(predicate: Callable[[], object], timeout: float, message: Message,
               pause: Callable[[float], None] = time.sleep) -> None:
    """Return once `predicate()` is true, fail with `message` after `timeout` s. `pause(seconds)`
    waits between two looks and may return early when something happened (a child's output)."""
    for seconds in _pauses(predicate, timeout, message):
        pause(seconds)


async def wait_until_async(predicate: Callable[[], object], timeout: float, message: Message) -> None:
    """wait_until inside a coroutine: the event loop runs on between two looks."""
    for seconds in _pauses(predicate, timeout, message):
        await asyncio.sleep(seconds)
