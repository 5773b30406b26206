"""A child process with non-blocking stdout/stderr capture, for tests that watch it while it runs."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

from support.paths import ROOT, TESTS
from support.wait import wait_until

FAKE_TAPTAP_SCRIPT = TESTS / "support" / "fake_taptap.py"
FAKE_TAPTAP = [sys.executable, str(FAKE_TAPTAP_SCRIPT)]  # the fake taptap's command line


def tigo_execd_argv(*args: str) -> list[str]:
    """The command line that runs this checkout's tigo-execd."""
    return [sys.executable, "-m", "tigo_execd", *args]


class Child:
    def __init__(self, argv: list[str], env: dict[str, str] | None = None,
                 stdin: int | None = subprocess.PIPE) -> None:
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=full_env, cwd=ROOT)
        self.out = b""
        self.err = b""
        self.sel = selectors.DefaultSelector()
        for stream in (self.proc.stdout, self.proc.stderr):
            os.set_blocking(stream.fileno(), False)
            self.sel.register(stream, selectors.EVENT_READ)

    def pump(self, timeout: float) -> None:
        """Collect whatever output arrives within `timeout` (returns early when something came)."""
        for key, _ in self.sel.select(timeout):
            data = key.fileobj.read()
            if not data:
                self.sel.unregister(key.fileobj)
                continue
            if key.fileobj is self.proc.stdout:
                self.out += data
            else:
                self.err += data

    def wait_for(self, predicate, timeout: float = 10.0, what: str = "condition") -> None:
        """Collect output until `predicate()` holds; the failure shows the output's tail."""
        def pause(seconds: float) -> None:
            if self.sel.get_map():
                self.pump(seconds)
            else:
                time.sleep(seconds)  # both pipes closed: only the predicate can change

        wait_until(predicate, timeout,
                   lambda: f"{what}; stdout={self.out[-2000:]!r} stderr={self.err[-3000:]!r}", pause)

    def wait_stdout(self, text: bytes, timeout: float = 10.0) -> None:
        self.wait_for(lambda: text in self.out, timeout, f"{text!r} on stdout")

    def wait_stderr(self, text: bytes, timeout: float = 10.0) -> None:
        self.wait_for(lambda: text in self.err, timeout, f"{text!r} on stderr")

    def finish(self, timeout: float = 10.0) -> int:
        """Wait for exit, collecting all output; returns the exit code."""
        self.wait_for(lambda: self.proc.poll() is not None and not self.sel.get_map(), timeout,
                      "exit")
        return self.proc.returncode

    def close_stdin(self) -> None:
        self.proc.stdin.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stdout_lines(self) -> list[str]:
        return self.out.decode().splitlines()

    def stderr_lines(self) -> list[str]:
        return self.err.decode().splitlines()


def pid_alive(pid: int) -> bool:
    """True while a process exists and is not a zombie."""
    return process_state(pid) not in ("", "Z")


def _children_by_parent() -> dict[int, list[int]]:
    """Each process's children, zombies included, read from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        children.setdefault(parent, []).append(int(stat.parent.name))
    return children


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid`, zombies included: an unreaped child is one too."""
    return _children_by_parent().get(pid, [])


def descendants(pid: int) -> set[int]:
    """Every process below `pid`, zombies included."""
    by_parent = _children_by_parent()
    found, todo = set(), [pid]
    while todo:
        for child in by_parent.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def connected_to(pid: int, port: int) -> bool:
    """Whether process `pid` holds an open TCP socket to loopback `port` (a request in flight,
    since the InfluxDB client opens one connection per request): its socket inodes in
    /proc/PID/fd matched against /proc/PID/net/tcp."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes and int(fields[2].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def stop_between_requests(proc: subprocess.Popen, port: int, timeout: float = 30.0) -> None:
    """SIGSTOP `proc` at a moment when it has no request to `port` in flight (stopped, then looked
    at; continued and stopped again at once while one is), so a server stopped next sees no query
    of it. Fails if `proc` ends first."""
    def stopped() -> bool:
        state = process_state(proc.pid)
        assert state not in ("", "Z"), f"pid {proc.pid} ended before it could be held"
        return state == "T"

    def stopped_idle() -> bool:
        proc.send_signal(signal.SIGSTOP)
        wait_until(stopped, 5, f"pid {proc.pid} to stop", pause=lambda _: time.sleep(0.001))
        if not connected_to(proc.pid, port):
            return True
        proc.send_signal(signal.SIGCONT)
        return False

    wait_until(stopped_idle, timeout, f"a moment without a request to port {port}",
               pause=lambda _: None)  # look again at once: the next idle moment may be short


def process_state(pid: int) -> str:
    """The one-letter state of /proc/PID/stat (R, S, T, Z, ...), "" once the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return ""
