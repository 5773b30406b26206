#!/usr/bin/env python3
"""A stand-in for taptap (which cannot be built here), faithful to taptap as the source of upstream
(https://github.com/willglynn/taptap) and of the fork (https://github.com/litinoveweedle/taptap) shows it.

Covers: the `observe` CLI of each build (FAKE_TAPTAP_BUILD): upstream's `--serial PORT`,
`--tcp HOST [--port N]`; the fork's `--reconnect-*`/`--keepalive-*` options (accepted, and
`--reconnect-delay` used) and its state file, `--persistent-file FILE` in 0.2.0 and `--state-file FILE`
from 0.2.5; an option the build lacks is a usage error, as clap makes it. `--version` and
`observe --help` answer as clap prints them (help texts after the builds' argument definitions).
Infrastructure reports (`"event_type":"infrastructure_report"` lines) as each build prints them: the
fork 0.2.5+ prints them only when it has a state file (its observer returns before printing when there
is none), keeps the latest in that file and prints it again at its next start; 0.2.0 prints them
with or without `--persistent-file` (twice per change with one). Usage errors (exit 2), a source
that cannot be opened (exit 2, env_logger-style ERROR on stderr), line-buffered compact JSON on stdout,
env_logger stderr lines (`[ts LEVEL target] msg`), the normal "missing slot clock" error after start,
a TCP peer closing (exit 0, upstream; the fork reconnects after `--reconnect-delay` seconds, 5 by
default, instead), a read error (exit 1), and a panic (exit 101, Rust's message).
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
  FAKE_TAPTAP_BUILD   `upstream` (default: willglynn/taptap 0.1.1 and git HEAD), `fork-0.2.0`
                      (--persistent-file) or `fork` (litinoveweedle/taptap 0.2.5+, --state-file)
  FAKE_TAPTAP_PIECE   write each line in pieces of this many bytes, flushed one by one, as a writer
                      slower than its reader (Rust's stdout writes a line longer than its buffer
                      straight to the pipe, which takes at most what it has room for)
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

BUILD = os.environ.get("FAKE_TAPTAP_BUILD", "upstream")
VERSION = {"upstream": "0.1.1", "fork-0.2.0": "0.2.0", "fork": "0.2.6"}[BUILD]
# observe's options with their help, as clap lists them: (option, value name, help)
UPSTREAM_OPTIONS = [
    ("--serial", "SERIAL-PORT", "The name of the serial port (try `taptap list-serial-ports`)"),
    ("--tcp", "DESTINATION", "The IP or hostname which is providing serial-over-TCP service"),
    ("--port", "PORT", "[default: 7160]"),
]
FORK_OPTIONS = [
    ("--serial", "SERIAL-PORT", "The name of the serial port (try `taptap list-serial-ports`) of the "
     "Modbus-to-serial device (mutually exclusive to --tcp)"),
    ("--tcp", "DESTINATION", "The IP or hostname of the device which is providing Modbus-over-TCP "
     "service"),
    ("--port", "PORT NUMBER", "If --tcp is specified, the port to which to connect [default: 502]"),
    ("--reconnect-timeout", "SECONDS", "The time after which connection is re-established if no "
     "data is received in seconds (0 for no timeout) [default: 60]"),
    ("--reconnect-retry", "INT", "The number of times to retry reconnecting before giving up (0 "
     "for infinite retries) [default: 0]"),
    ("--reconnect-delay", "SECONDS", "The delay between reconnect attempts in seconds [default: 5]"),
    ("--keepalive-idle", "SECONDS", "If --tcp is specified, the idle time in seconds before "
     "keepalive probes are sent [default: 30]"),
    ("--keepalive-interval", "SECONDS", "If --tcp is specified, the interval between individual "
     "keepalive probes in seconds [default: 10]"),
    ("--keepalive-count", "SECONDS", "If --tcp is specified, the number of unacknowledged TCP probes "
     "before the connection is considered dead [default: 5]"),
]
STATE_OPTION = {"upstream": None, "fork-0.2.0": "--persistent-file", "fork": "--state-file"}[BUILD]
OPTIONS = UPSTREAM_OPTIONS if BUILD == "upstream" else [
    *FORK_OPTIONS, (STATE_OPTION, "FILE", "Path of the JSON file to provide persistent storage for "
                    "the infrastructure topology data")]


def log(level: str, target: str, msg: str) -> None:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    sys.stderr.write(f"[{now} {level:<5} {target}] {msg}\n")
    sys.stderr.flush()


def usage(msg: str) -> None:
    sys.stderr.write(f"error: {msg}\n\nUsage: taptap observe <--serial <SERIAL>|--tcp <TCP>>\n")
    sys.exit(2)


def observe_help() -> None:
    width = max(len(f"{name} <{value}>") for name, value, _ in OPTIONS) + 2
    rows = [f"      {f'{name} <{value}>':<{width}}{text}" for name, value, text in OPTIONS]
    sys.stdout.write("Observe the system, extracting data as it runs\n\nUsage: taptap observe [OPTIONS] "
                     "<--serial <SERIAL-PORT>|--tcp <DESTINATION>>\n\nOptions:\n" + "\n".join(rows)
                     + f"\n  {'-h, --help':<{width + 4}}Print help\n"
                     f"  {'-V, --version':<{width + 4}}Print version\n")
    sys.exit(0)


def parse(argv: list[str]) -> dict[str, str]:
    if argv[:1] in (["--version"], ["-V"]):
        print(f"taptap {VERSION}")
        sys.exit(0)
    if not argv or argv[0] not in ("observe", "peek-bytes", "peek-frames", "peek-activity",
                                   "list-serial-ports"):
        usage("unrecognized subcommand")
    if argv[0] == "observe" and ("--help" in argv or "-h" in argv):
        observe_help()
    opts: dict[str, str] = {"command": argv[0]}
    it = iter(argv[1:])
    for arg in it:
        if arg in {name for name, _, _ in OPTIONS}:
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
    line = line if line.endswith(b"\n") else line + b"\n"
    piece = int(os.environ.get("FAKE_TAPTAP_PIECE", "0")) or len(line)
    try:
        for i in range(0, len(line), piece):
            sys.stdout.buffer.write(line[i:i + piece])
            sys.stdout.buffer.flush()
            if piece < len(line):
                time.sleep(0.001)  # the reader takes each piece before the next is written
    except BrokenPipeError:  # Rust ignores SIGPIPE and panics on the failed write
        sys.stderr.write("thread 'main' panicked at library/std/src/io/stdio.rs:1117:9:\n"
                         "failed printing to stdout: Broken pipe (os error 32)\n")
        os._exit(101)


def report(line: bytes, opts: dict[str, str]) -> None:
    """Print a line as this build prints it: infrastructure reports depend on the state file."""
    try:
        infrastructure = json.loads(line).get("event_type") == "infrastructure_report"
    except (ValueError, AttributeError):
        infrastructure = False
    if not infrastructure or BUILD == "upstream":
        out(line)
        return
    state = opts.get(STATE_OPTION[2:]) if STATE_OPTION else None
    if BUILD == "fork-0.2.0":
        out(line)  # printed before the write is tried, and again after it succeeded
    if state:
        tmp = Path(state).with_suffix(".tmp")
        tmp.write_bytes(line.rstrip(b"\n") + b"\n")
        tmp.rename(state)
        out(line)


def load_state(opts: dict[str, str]) -> None:
    """At start, the fork prints the infrastructure report of the state file it loads."""
    state = opts.get(STATE_OPTION[2:]) if STATE_OPTION else None
    if state and os.path.isfile(state):
        log("INFO", "taptap::observer", f"persistent state successfully loaded from persistent file "
            f"{state}")
        out(Path(state).read_bytes())
    elif BUILD != "upstream" and not state:
        log("INFO", "taptap::observer", "persistent file is not specified, will not keep persistent "
            "state")


def open_source(opts: dict[str, str]):
    """A binary stream of bus bytes, or exit 2 as taptap does when the source cannot be opened."""
    log("INFO", "taptap", "opening source connection...")
    try:
        if "serial" in opts:
            return open(opts["serial"], "rb", buffering=0)
        default_port = "7160" if BUILD == "upstream" else "502"
        sock = socket.create_connection((opts["tcp"], int(opts.get("port", default_port))), timeout=5)
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
    load_state(opts)
    source = open_source(opts) if then == "read" else None
    log("ERROR", "taptap::observer", "discarding power report from gateway GatewayID(0x1201) "
        "due to missing slot clock: no slot clock for gateway")
    delay = float(os.environ.get("FAKE_TAPTAP_DELAY", "0"))
    if os.environ.get("FAKE_TAPTAP_LINES"):
        with open(os.environ["FAKE_TAPTAP_LINES"], "rb") as f:
            for line in f:
                report(line, opts)
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
        if not data and BUILD != "upstream" and "tcp" in opts:  # the fork reconnects
            log("WARN", "taptap", "source closed; reconnecting")
            time.sleep(float(opts.get("reconnect-delay", "5")))
            source, buf = open_source(opts), b""
            continue
        if not data:
            log("INFO", "taptap", "source closed")
            sys.exit(0)
        buf += data
        *lines, buf = buf.split(b"\n")
        for line in lines:
            if line.strip():
                report(line, opts)


if __name__ == "__main__":
    main()
