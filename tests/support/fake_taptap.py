#!/usr/bin/env python3
"""A stand-in for taptap (which cannot be built here), faithful to taptap as the source of upstream
(https://github.com/willglynn/taptap) and of the fork (https://github.com/litinoveweedle/taptap) shows it.

Covers: the `observe` CLI of upstream and fork (`--serial PORT`, `--tcp HOST [--port N]`, the fork's
extra `--reconnect-*`/`--state-file` options are accepted and ignored), usage errors (exit 2), a source
that cannot be opened (exit 2, env_logger-style ERROR on stderr), line-buffered compact JSON on stdout,
env_logger stderr lines (`[ts LEVEL target] msg`), the normal "missing slot clock" error after start,
a TCP peer closing (exit 0, upstream; with the fork's `--reconnect-delay S` it reconnects after S
seconds instead), a read error (exit 1), and a panic (exit 101, Rust's message).
Not covered: decoding real bus bytes. The "bus" carries taptap JSON lines instead: every complete
line read from the serial port or TCP connection is printed as taptap would print that report.

Test knobs (environment):
  FAKE_TAPTAP_LINES   file whose lines are printed first (taptap output to replay)
  FAKE_TAPTAP_DELAY   seconds between those lines (default 0)
  FAKE_TAPTAP_THEN    after the lines: `exit:N` (default when there is no source to read),
                      `sleep` (until a signal), `hang` (ignore SIGTERM and sleep), `panic`,
                      `read` (read the source, the default)
  FAKE_TAPTAP_STARTS  file to which each start appends a line (tests count restarts)
  FAKE_TAPTAP_STDERR  extra text to print on stderr at start (may hold several lines)
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import sys
import time


def log(level: str, target: str, msg: str) -> None:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    sys.stderr.write(f"[{now} {level:<5} {target}] {msg}\n")
    sys.stderr.flush()


def usage(msg: str) -> None:
    sys.stderr.write(f"error: {msg}\n\nUsage: taptap observe <--serial <SERIAL>|--tcp <TCP>>\n")
    sys.exit(2)


def parse(argv: list[str]) -> dict[str, str]:
    if not argv or argv[0] not in ("observe", "peek-bytes", "peek-frames", "peek-activity",
                                   "list-serial-ports"):
        usage("unrecognized subcommand")
    opts: dict[str, str] = {"command": argv[0]}
    it = iter(argv[1:])
    for arg in it:
        if arg in ("--serial", "--tcp", "--port", "--reconnect-timeout", "--reconnect-retry",
                   "--reconnect-delay", "--keepalive-idle", "--keepalive-interval",
                   "--keepalive-count", "--state-file", "--persistent-file"):
            value = next(it, None)
            if value is None:
                usage(f"a value is required for '{arg} <VALUE>' but none was supplied")
            opts[arg[2:]] = value
        elif arg == "--raw":
            opts["raw"] = "1"
        else:
            usage(f"unexpected argument '{arg}' found")
    if opts["command"] == "observe" and ("serial" in opts) == ("tcp" in opts):
        usage("exactly one of --serial or --tcp is required")
    return opts


def out(line: bytes) -> None:
    try:
        sys.stdout.buffer.write(line if line.endswith(b"\n") else line + b"\n")
        sys.stdout.buffer.flush()
    except BrokenPipeError:  # Rust ignores SIGPIPE and panics on the failed write
        sys.stderr.write("thread 'main' panicked at library/std/src/io/stdio.rs:1117:9:\n"
                         "failed printing to stdout: Broken pipe (os error 32)\n")
        os._exit(101)


def open_source(opts: dict[str, str]):
    """A binary stream of bus bytes, or exit 2 as taptap does when the source cannot be opened."""
    log("INFO", "taptap", "opening source connection...")
    try:
        if "serial" in opts:
            return open(opts["serial"], "rb", buffering=0)
        sock = socket.create_connection((opts["tcp"], int(opts.get("port", "7160"))), timeout=5)
        sock.settimeout(None)
        return sock.makefile("rb", buffering=0)
    except OSError as exc:
        log("ERROR", "taptap", f"failed to open source: {exc}")
        sys.exit(2)


def main() -> None:
    opts = parse(sys.argv[1:])
    if os.environ.get("FAKE_TAPTAP_STARTS"):
        with open(os.environ["FAKE_TAPTAP_STARTS"], "a") as f:
            f.write(f"{os.getpid()} {' '.join(sys.argv[1:])}\n")
    if os.environ.get("FAKE_TAPTAP_STDERR"):
        sys.stderr.write(os.environ["FAKE_TAPTAP_STDERR"].rstrip("\n") + "\n")
        sys.stderr.flush()
    then = os.environ.get("FAKE_TAPTAP_THEN", "read")
    source = open_source(opts) if then == "read" else None
    log("ERROR", "taptap::observer", "discarding power report from gateway GatewayID(0x1201) "
        "due to missing slot clock: no slot clock for gateway")
    delay = float(os.environ.get("FAKE_TAPTAP_DELAY", "0"))
    if os.environ.get("FAKE_TAPTAP_LINES"):
        with open(os.environ["FAKE_TAPTAP_LINES"], "rb") as f:
            for line in f:
                out(line)
                if delay:
                    time.sleep(delay)
    if then.startswith("exit:"):
        sys.exit(int(then[5:]))
    if then in ("sleep", "hang"):
        if then == "hang":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            time.sleep(3600)
    if then == "panic":
        sys.stderr.write("thread 'main' panicked at src/observer.rs:42:5:\n"
                         "attempt to subtract with overflow\n"
                         "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n")
        sys.exit(101)
    buf = b""
    while True:
        try:
            data = source.read(4096)
        except OSError as exc:  # e.g. the serial adapter unplugged
            log("ERROR", "taptap", f"read error: {exc}")
            sys.exit(1)
        if not data and "reconnect-delay" in opts and "tcp" in opts:  # the fork: reconnect
            log("WARN", "taptap", "source closed; reconnecting")
            time.sleep(float(opts["reconnect-delay"]))
            source, buf = open_source(opts), b""
            continue
        if not data:
            log("INFO", "taptap", "source closed")
            sys.exit(0)
        buf += data
        *lines, buf = buf.split(b"\n")
        for line in lines:
            if line.strip():
                out(line)


if __name__ == "__main__":
    main()
