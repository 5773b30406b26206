"""Raw bus captures: `--record FILE` appends the bus bytes as they come, `--replay FILE` feeds
such a file (or `taptap peek-bytes --raw` output) through taptap again."""

from __future__ import annotations

import io
import os

from tigo_execd.log import log


class ReplayFile:
    """`--replay FILE`: a raw capture, at the bus's own pace or as fast as taptap reads."""

    name = "replay"

    def __init__(self, path: str, paced: bool) -> None:
        self.file = open(path, "rb")  # noqa: SIM115 -- open now, to fail now with the OS's reason
        self.label, self.paced = path, paced


class Recorder:
    """`--record FILE`: append the raw bus bytes, moving a full FILE to FILE.1 (one older file kept)."""

    def __init__(self, path: str, max_bytes: int) -> None:
        self.path, self.max_bytes = path, max_bytes
        self._file = self._open()
        self.size = self._file.tell()

    def _open(self) -> io.FileIO:
        """Unbuffered: the capture is complete at any moment (the file lives as long as we do)."""
        return open(self.path, "ab", buffering=0)

    def write(self, data: bytes) -> None:
        try:
            if self.size and self.size + len(data) > self.max_bytes:
                self._file.close()
                os.replace(self.path, self.path + ".1")
                self._file = self._open()
                self.size = 0
            self._file.write(data)
            self.size += len(data)
        except OSError as exc:
            log.error(f"cannot write the capture {self.path}: {exc.strerror}", key="record")

    def close(self) -> None:
        self._file.close()
