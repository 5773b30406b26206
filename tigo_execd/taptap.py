"""taptap supervision: spawn it, relay its stderr with Telegraf levels, restart it with backoff.

The plugin itself never exits because taptap did: if Telegraf saw tigo-execd exit it would restart it
every `restart_delay`, losing the bridge and the counters each time. Restarts wait 1 s, doubling to
60 s, and the delay is reset after a child that ran for a healthy minute.

What a build can do is asked of the program itself (`taptap observe --help`), never guessed from a
version number: the fork names barcodes only in its infrastructure reports, and from 0.2.5 prints
them only when it has a state file (`--state-file`); 0.2.0 prints them anyway and keeps its node
tables across restarts with `--persistent-file`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from tigo_execd.linesplit import LineSplitter
from tigo_execd.log import LEVELS, log

INSTALL_HINT = ("install it with `cargo install taptap --locked` (Rust from rustup.rs), "
                "or point --taptap / --taptap-cmd at the binary")
# What `taptap observe` means by its exit codes (read from both builds' source); any other
# command's code is only a number
OBSERVE_EXIT = {
    1: "a read error on its source (see its E! line above)",
    2: "it could not open its source, or refused its arguments (see its lines above)",
    3: "the fork gave up after its --reconnect-retry attempts",
    101: "taptap panicked (see the E! taptap: lines above)",
}
# The state-file option of each build that has one: the fork from 0.2.5, the fork 0.2.0
STATE_OPTIONS = ("--state-file", "--persistent-file")
STATE_FILE = "taptap-state.json"  # its name in tigo-execd's state directory
PROBE_TIMEOUT = 10.0
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


def state_option(observe_help: str) -> str | None:
    """The state-file option a build's `taptap observe --help` lists, None when it has none."""
    for option in STATE_OPTIONS:
        if re.search(rf"(?<![\w-]){option}(?![\w-])", observe_help):
            return option
    return None


def build_family(observe_help: str) -> str:
    """Which line of taptap a build belongs to, by the options its `observe --help` lists."""
    option = state_option(observe_help)
    if option == "--state-file":
        return "the fork (litinoveweedle/taptap) 0.2.5 or later"
    if option == "--persistent-file":
        return "the fork (litinoveweedle/taptap) 0.2.0"
    if re.search(r"--reconnect-delay(?![\w-])", observe_help):
        return "the fork (litinoveweedle/taptap) before 0.2.0"
    return "upstream (willglynn/taptap)"


def has_state_option(argv: list[str]) -> bool:
    """Whether a taptap command line already passes a state file (`--opt FILE` or `--opt=FILE`)."""
    return any(arg.split("=", 1)[0] in STATE_OPTIONS for arg in argv)


def state_file_need(option: str) -> str:
    """What a taptap command line without its state file loses (run and doctor say it)."""
    if option == "--state-file":
        return (f"this taptap prints no infrastructure report without {option}, so no barcode "
                f"ever reaches the reports")
    return (f"without {option} this taptap forgets its node tables when it restarts (it relearns "
            f"them only when the CCA next reads them, maybe a day later)")


async def probe_state_option(command: list[str]) -> str | None:
    """Ask a taptap program which state-file option it has (`command` is the program and its
    arguments up to `observe`); None when none, or when it cannot say."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *command, "--help", stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    except OSError:
        return None
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), PROBE_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return None
    return state_option(out.decode("utf-8", "replace"))


def exit_reason(argv: list[str], rc: int) -> str:
    """Why a taptap command ended, from what is known: the signal that killed it, or what
    `taptap observe` means by its code; a code of any other command is only a number."""
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    if "observe" not in argv[1:]:
        return "it ended" if rc == 0 else "see its lines above"
    if rc == 0:  # upstream's observe ends with its input; the fork reconnects instead
        return "its TCP source closed the connection" if "--tcp" in argv else "its input ended"
    return OBSERVE_EXIT.get(rc, "a code taptap does not document")


def not_found_message(program: str) -> str:
    if os.sep in program:
        return f"taptap not found or not executable at {program}; {INSTALL_HINT}"
    return (f"{program} not found: looked on PATH ({os.environ.get('PATH', '')}) and in "
            f"{cargo_bin(program).parent}; {INSTALL_HINT}")


class Supervisor:
    """Keeps one taptap child running and yields its stdout as chunks of bytes, across restarts.

    With `state_file`, a `taptap observe` command that passes no state file of its own gets one when
    the program lists a state-file option (`pass_state_file`, for the command tigo-execd builds), or
    a warning saying what to add (a user's command line is theirs). `context` says what else is known
    when taptap exits (the bus feed's state)."""

    def __init__(self, argv: list[str], min_delay: float = 1.0, max_delay: float = 60.0,
                 state_file: Path | None = None, pass_state_file: bool = False,
                 context: Callable[[], str] | None = None) -> None:
        self.argv = argv
        self.min_delay, self.max_delay = min_delay, max_delay
        self.state_file, self.pass_state_file = state_file, pass_state_file
        self.context = context
        self.starts = 0
        self.proc: asyncio.subprocess.Process | None = None
        self._stopping = asyncio.Event()
        self._probed: dict[tuple[str, int], str | None] = {}  # (program, mtime) -> state option
        self._advised = False

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
                known = exit_reason(self.argv, rc) + (f"; {self.context()}" if self.context else "")
                log.warn(f"taptap exited with code {rc} ({known}); restarting in {delay:g} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(delay * 2, self.max_delay)

    async def _run_once(self) -> AsyncIterator[bytes]:
        program = resolve(self.argv[0])
        self.proc = None
        if program is None:
            log.error(not_found_message(self.argv[0]), key="taptap-missing")
            return
        argv = await self._with_state_file(program)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                program, *argv[1:], stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        except OSError as exc:
            log.error(f"cannot start {program}: {exc}", key="taptap-missing")
            return
        self.starts += 1
        log.info(f"started taptap (pid {self.proc.pid}): {' '.join(argv)}")
        relay = asyncio.create_task(relay_stderr(self.proc.stderr, time.monotonic()))
        assert self.proc.stdout is not None
        try:
            while chunk := await self.proc.stdout.read(1 << 16):
                yield chunk
            await self.proc.wait()
        finally:
            await self._terminate()
            await relay

    async def _with_state_file(self, program: str) -> list[str]:
        """The command line to start: with a state file when this build has the option for one."""
        if self.state_file is None or "observe" not in self.argv[1:] or has_state_option(self.argv):
            return self.argv
        command = [program, *self.argv[1:self.argv.index("observe", 1) + 1]]
        try:
            key = (program, os.stat(program).st_mtime_ns)
        except OSError:
            return self.argv
        if key not in self._probed:  # asked once per program, again when it is replaced
            self._probed[key] = await probe_state_option(command)
        option = self._probed[key]
        if option is None:
            return self.argv
        if not self.pass_state_file:
            if not self._advised:
                log.warn(f"--taptap-cmd passes no state file: {state_file_need(option)}: add "
                         f"`{option} {self.state_file}` to the taptap command")
                self._advised = True
            return self.argv
        try:
            # at most 0755 even under umask 0, as for the registry next to it
            self.state_file.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        except OSError as exc:
            log.warn(f"cannot create {self.state_file.parent} ({exc.strerror}): taptap runs "
                     f"without {option}", key="taptap-state")
            return self.argv
        return [*self.argv, option, str(self.state_file)]

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
    lines = LineSplitter(lambda size: log.warn(f"skipped a line of {size}+ bytes on taptap's stderr",
                                               key="taptap-long-stderr"))
    while chunk := await stream.read(1 << 16):
        for raw in lines.feed(chunk):
            relay_stderr_line(raw, started)
    relay_stderr_line(lines.rest(), started)


def relay_stderr_line(raw: bytes, started: float) -> None:
    """One stderr line of the taptap started at `started` (monotonic) to our log."""
    text = raw.decode("utf-8", "replace").rstrip()
    if not text:
        return
    m = _STDERR.fullmatch(text)
    if m is None:
        log.error(f"taptap: {text}", key="taptap:" + text[:40])
        return
    level, target, msg = _LEVEL[m.group(2)], m.group(3).strip(), m.group(4)
    if level == "error" and "missing slot clock" in msg and time.monotonic() - started < STARTUP_GRACE:
        level = "debug"
    log.emit(LEVELS[level], f"taptap[{target}]: {msg}", key=f"taptap:{target}:{msg[:40]}")
