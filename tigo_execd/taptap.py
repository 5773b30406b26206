"""taptap supervision: spawn it, relay its stderr with Telegraf levels, restart it with backoff.

The plugin itself never exits because taptap did: if Telegraf saw tigo-execd exit it would restart it
every `restart_delay`, losing the bridge and the counters each time. Restarts wait 1 s, doubling to
60 s, and the delay is reset after a child that ran for a healthy minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

from tigo_execd.log import LEVELS, log

INSTALL_HINT = ("install it with `cargo install taptap --locked` (Rust from rustup.rs), "
                "or point --taptap / --taptap-cmd at the binary")
EXIT_MEANING = {
    0: "the TCP peer closed the connection",
    1: "a read error (serial adapter unplugged?)",
    2: "the source could not be opened, or bad arguments",
    3: "the fork gave up after its idle-timeout retries",
    101: "taptap panicked",
}
_STDERR = re.compile(r"\[(\S+)\s+(ERROR|WARN|INFO|DEBUG|TRACE)\s+([^\]]*)\]\s?(.*)")
_LEVEL = {"ERROR": "error", "WARN": "warn", "INFO": "info", "DEBUG": "debug", "TRACE": "debug"}
STARTUP_GRACE = 30.0  # "missing slot clock" is normal in the first seconds after a start
HEALTHY_RUN = 60.0
STOP_GRACE = 1.0      # SIGTERM, then SIGKILL: the whole shutdown must fit in Telegraf's 2 s budget


def cargo_bin(program: str) -> Path:
    """Where `cargo install` puts a program for the current user."""
    return Path.home() / ".cargo" / "bin" / program


def resolve(program: str, path: str | None = None, cargo: bool = True) -> str | None:
    """The executable a program name runs: a path as given, else the first on PATH (or on `path`,
    another PATH), then, when `cargo`, ~/.cargo/bin (where `cargo install` puts taptap)."""
    if os.sep in program:
        return program if os.access(program, os.X_OK) else None
    found = shutil.which(program, path=path)
    if found or not cargo:
        return found
    installed = cargo_bin(program)
    return str(installed) if os.access(installed, os.X_OK) else None


def not_found_message(program: str) -> str:
    if os.sep in program:
        return f"taptap not found or not executable at {program}; {INSTALL_HINT}"
    return (f"{program} not found: looked on PATH ({os.environ.get('PATH', '')}) and in "
            f"{cargo_bin(program).parent}; {INSTALL_HINT}")


class Supervisor:
    """Keeps one taptap child running and yields its stdout as chunks of bytes, across restarts."""

    def __init__(self, argv: list[str], min_delay: float = 1.0, max_delay: float = 60.0) -> None:
        self.argv = argv
        self.min_delay, self.max_delay = min_delay, max_delay
        self.starts = 0
        self.proc: asyncio.subprocess.Process | None = None
        self._stopping = asyncio.Event()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def chunks(self) -> AsyncIterator[bytes]:
        delay = self.min_delay
        while not self._stopping.is_set():
            started = time.monotonic()
            rc = None
            async for chunk in self._run_once():
                yield chunk
            if self.proc is not None:
                rc = self.proc.returncode
            if self._stopping.is_set():
                break
            if time.monotonic() - started >= HEALTHY_RUN:
                delay = self.min_delay
            if rc is not None:
                meaning = EXIT_MEANING.get(rc, f"killed by signal {-rc}" if rc < 0 else "unexpected")
                log.warn(f"taptap exited with code {rc} ({meaning}); restarting in {delay:g} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(delay * 2, self.max_delay)

    async def _run_once(self) -> AsyncIterator[bytes]:
        program = resolve(self.argv[0])
        self.proc = None
        if program is None:
            log.error(not_found_message(self.argv[0]), key="taptap-missing")
            return
        try:
            self.proc = await asyncio.create_subprocess_exec(
                program, *self.argv[1:], stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        except OSError as exc:
            log.error(f"cannot start {program}: {exc}", key="taptap-missing")
            return
        self.starts += 1
        log.info(f"started taptap (pid {self.proc.pid}): {' '.join(self.argv)}")
        relay = asyncio.create_task(relay_stderr(self.proc.stderr, time.monotonic()))
        assert self.proc.stdout is not None
        try:
            while chunk := await self.proc.stdout.read(1 << 16):
                yield chunk
            await self.proc.wait()
        finally:
            await self._terminate()
            await relay

    async def _terminate(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        try:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), STOP_GRACE)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        except ProcessLookupError:
            await proc.wait()

    def retire(self) -> None:
        """Let the running child finish on its own (a replay is over) but start no other one."""
        self._stopping.set()

    async def stop(self) -> None:
        """Stop for good: SIGTERM (SIGKILL after a grace period); chunks() ends after the last output."""
        self._stopping.set()
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(proc.wait()), STOP_GRACE)
            except TimeoutError:
                proc.kill()


async def relay_stderr(stream: asyncio.StreamReader | None, started: float) -> None:
    """taptap's env_logger lines (`[ts LEVEL target] msg`) -> our log with the level mapped."""
    if stream is None:
        return
    while True:
        try:
            raw = await stream.readline()
        except ValueError:  # a line over the StreamReader limit: skip it
            continue
        if not raw:
            return
        text = raw.decode("utf-8", "replace").rstrip()
        if not text:
            continue
        m = _STDERR.fullmatch(text)
        if m is None:
            log.error(f"taptap: {text}", key="taptap:" + text[:40])
            continue
        level, target, msg = _LEVEL[m.group(2)], m.group(3).strip(), m.group(4)
        if level == "error" and "missing slot clock" in msg and time.monotonic() - started < STARTUP_GRACE:
            level = "debug"
        log.emit(LEVELS[level], f"taptap[{target}]: {msg}", key=f"taptap:{target}:{msg[:40]}")
