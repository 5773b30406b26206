"""taptap's output cut into lines: the one line limit and the one splitter every reader uses.

A line is whatever ends in a newline, however the pipe delivered it: in one read or in a hundred,
so the outcome never depends on chunking (asyncio's StreamReader.readline refuses lines over its
64 KiB buffer limit, and whether a long line crosses it depends on how the pipe cut it).

The limit: the fork prints a site's identities as one infrastructure report line of about 66 bytes
per optimizer; the largest site a CCA serves (7 TAPs x 300 optimizers, registry.MAX_NODES allows
more) is about 140 kB. MAX_LINE is 1 MiB, seven times that. A longer line cannot be taptap's: it is
dropped whole as it streams (memory stays bounded), counted once, and reading goes on after its end.
"""

from __future__ import annotations

from collections.abc import Callable

MAX_LINE = 1 << 20


class LineSplitter:
    """Complete lines (without their newline) from chunks of bytes; lines over `limit` bytes are
    dropped and handed to `too_long` once each (with the bytes seen when the limit was crossed)."""

    def __init__(self, too_long: Callable[[int], None], limit: int = MAX_LINE) -> None:
        self.limit = limit
        self.too_long = too_long
        self._parts: list[bytes] = []  # the line so far: joined once, when its newline comes
        self._size = 0
        self._dropping = False         # inside a line already over the limit: skip to its end

    def feed(self, chunk: bytes) -> list[bytes]:
        """The lines this chunk completes; the rest waits for the next chunk."""
        lines = chunk.split(b"\n")
        tail = lines.pop()
        if lines:
            if self._dropping:  # the end of a dropped line
                del lines[0]
                self._dropping = False
            elif self._parts:
                lines[0] = b"".join((*self._parts, lines[0]))
            self._parts, self._size = [], 0
            # only a line joined from earlier chunks, or one in a chunk longer than the limit, can
            # be over it: the common chunk costs no scan
            if (lines and len(lines[0]) > self.limit) or len(chunk) > self.limit:
                lines = [line for line in lines if self._fits(line)]
        if tail and not self._dropping:
            self._parts.append(tail)
            self._size += len(tail)
            if self._size > self.limit:
                self.too_long(self._size)
                self._parts, self._size, self._dropping = [], 0, True
        return lines

    def _fits(self, line: bytes) -> bool:
        if len(line) <= self.limit:
            return True
        self.too_long(len(line))
        return False

    def rest(self) -> bytes:
        """At the end of the input: the last line if it had no newline (b"" if none, or dropped)."""
        rest = b"" if self._dropping else b"".join(self._parts)
        self._parts, self._size, self._dropping = [], 0, False
        return rest
