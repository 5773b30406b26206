"""`tigo-execd run` as an asyncio child with the fake taptap behind the bridge: its output collected
as it comes and waited on, and the taptap starts the fake recorded."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from support.paths import DATA, ROOT
from support.proc import FAKE_TAPTAP_SCRIPT, tigo_execd_argv

BUS = (DATA / "taptap-upstream.jsonl").read_bytes()   # 10 power reports, 2138 bytes
PREFIXES = ("E! ", "W! ", "I! ", "D! ")


class Run:
    """`tigo-execd run` as an asyncio child, its output collected as it comes and waited on."""

    def __init__(self, *args: str, prefix: list[str] | None = None, env: dict | None = None) -> None:
        # --clock-check off: the bus carries the 2024/2025 samples (test_clock covers the check)
        self.argv = [*(prefix or []), *tigo_execd_argv("run", "--state-file", "", "--clock-check",
                                                       "off", *args)]
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.out = self.err = b""
        self.changed = asyncio.Condition()

    async def __aenter__(self) -> Run:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=self.env, cwd=ROOT)
        self.readers = [asyncio.create_task(self._collect(self.proc.stdout, "out")),
                        asyncio.create_task(self._collect(self.proc.stderr, "err"))]
        return self

    async def __aexit__(self, *exc) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        await asyncio.gather(*self.readers)

    async def _collect(self, stream: asyncio.StreamReader, name: str) -> None:
        while data := await stream.read(1 << 16):
            async with self.changed:
                setattr(self, name, getattr(self, name) + data)
                self.changed.notify_all()

    async def wait(self, predicate, timeout: float = 10.0, what: str = "condition") -> None:
        async with self.changed:
            try:
                await asyncio.wait_for(self.changed.wait_for(predicate), timeout)
            except TimeoutError:
                raise AssertionError(f"timed out waiting for {what}; stdout={self.out[-1500:]!r} "
                                     f"stderr={self.err[-3000:]!r}") from None

    async def wait_err(self, text: bytes, timeout: float = 10.0) -> None:
        await self.wait(lambda: text in self.err, timeout, f"{text!r} on stderr")

    async def wait_reports(self, count: int, timeout: float = 10.0) -> None:
        await self.wait(lambda: len(self.reports()) >= count, timeout, f"{count} reports")

    async def wait_stats(self, *fields: str, timeout: float = 10.0) -> str:
        """The first tigo_ingest line (after those already seen) that has all `fields`."""
        def found() -> bool:
            return any(all(f in line for f in fields) for line in self.stats())
        await self.wait(found, timeout, f"a tigo_ingest line with {fields}")
        return next(line for line in self.stats() if all(f in line for f in fields))

    def reports(self) -> list[str]:
        return [l for l in self.out.decode().splitlines() if l.startswith("tigo_power_report,")]

    def stats(self) -> list[str]:
        return [l for l in self.out.decode().splitlines() if l.startswith("tigo_ingest,")]

    async def finish(self, timeout: float = 5.0) -> int:
        await asyncio.wait_for(self.proc.wait(), timeout)
        await asyncio.gather(*self.readers)
        assert all(l.startswith(PREFIXES) for l in self.err.decode().splitlines()), self.err
        assert all(l.startswith(("tigo_power_report,", "tigo_ingest,"))
                   for l in self.out.decode().splitlines()), self.out  # clean line protocol
        assert b"Traceback" not in self.err
        return self.proc.returncode

    async def stop(self) -> float:
        """Close stdin as Telegraf does; returns how long the exit took."""
        t0 = time.monotonic()
        self.proc.stdin.close()
        assert await self.finish() == 0
        return time.monotonic() - t0


def fake_taptap(tmp_path: Path) -> str:
    """A `taptap` wrapper script, as a user's --taptap may be, exec'ing the fake."""
    path = tmp_path / "taptap"
    path.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE_TAPTAP_SCRIPT} \"$@\"\n")
    path.chmod(0o755)
    return str(path)


def run_bridge(tmp_path: Path, *args: str, env: dict | None = None, **kw) -> Run:
    """`run` with the fake taptap, frequent stats, debug logs; taptap starts go to tmp_path/starts."""
    return Run(*args, "--taptap", fake_taptap(tmp_path), "--stats-interval", "0.2", "--log-level",
               "debug", env={"FAKE_TAPTAP_STARTS": str(tmp_path / "starts"), **(env or {})}, **kw)


def taptap_starts(tmp_path: Path) -> list[tuple[int, str]]:
    """Each start of the fake taptap under run_bridge: (its pid, its arguments)."""
    path = tmp_path / "starts"
    lines = path.read_text().splitlines() if path.exists() else []
    return [(int(l.split(" ", 1)[0]), l.split(" ", 1)[1]) for l in lines]
