"""Exit codes of every tigo-execd command, in one table: scripts, systemd and Telegraf read them.

0 is done; 1 and 2 are only ever the verdicts of checks (1: watchdog --once, faults, doctor;
2: watchdog --once); a failure of a command itself uses the BSD sysexits.h value of its kind, or
128 + the signal that interrupted it, so no failure can be mistaken for a verdict. A command fails
by raising Failure (or a subclass that sets `code`, as influx.py's errors do): cli.main prints its
one `E! ` line and exits with its code, so the same failure has the same code and words in every
command. TABLE is the one home of the codes: each command's --help and
docs/reference/exit-codes.md are made from it.
"""

from __future__ import annotations

from dataclasses import dataclass

OK = 0            # done; a check: OK
WARN = 1          # a check: WARN (watchdog --once), warn findings (faults), something failed (doctor)
CRIT = 2          # a check: CRIT (watchdog --once)
USAGE = 64        # EX_USAGE: bad command line or settings
DATAERR = 65      # EX_DATAERR: bad data in an input file (a names file, a barcode)
NOINPUT = 66      # EX_NOINPUT: an input cannot be opened (names file, journal, replay or --jsonl file)
UNAVAILABLE = 69  # EX_UNAVAILABLE: InfluxDB or the MQTT broker cannot be reached
SOFTWARE = 70     # EX_SOFTWARE: InfluxDB rejected a query, or the database does not exist
CANTCREAT = 73    # EX_CANTCREAT: an output file cannot be written (layout --output)
NOPERM = 77       # EX_NOPERM: InfluxDB refused the credentials or the right asked for
SIGINT = 130      # 128 + SIGINT: interrupted (Ctrl-C) before the command finished its job
SIGTERM = 143     # 128 + SIGTERM: terminated before the command finished its job

CHECKS = ("watchdog", "faults", "doctor")
INFLUX = ("nodes", "watchdog", "faults", "rollup", "heal", "homeassistant", "layout")  # not doctor


@dataclass(frozen=True)
class Row:
    code: int
    meaning: str
    commands: tuple[str, ...] = ()  # () = every command

    def applies(self, command: str) -> bool:
        return not self.commands or command in self.commands


TABLE = (
    Row(OK, "done (a check: OK)"),
    Row(WARN, "a check's verdict: WARN (watchdog --once), warn findings (faults), a check failed "
              "(doctor)", CHECKS),
    Row(CRIT, "a check's verdict: CRIT (watchdog --once)", ("watchdog",)),
    Row(USAGE, "usage: a bad option or value, an InfluxDB URL without http://, a port out of range"),
    Row(DATAERR, "bad data in an input file (a names file that is not UTF-8, a malformed barcode, "
                 "a layout file's mistakes)", ("barcode", "faults", "layout")),
    Row(NOINPUT, "an input cannot be opened (names file, layout file, journal, --jsonl or --replay "
                 "file) or holds no reports", ("run", "faults", "heal", "rollup", "layout")),
    Row(UNAVAILABLE, "InfluxDB (or the MQTT broker) cannot be reached, within --timeout/--retry-for",
        INFLUX),
    Row(SOFTWARE, "InfluxDB rejected a query, or the database does not exist", INFLUX),
    Row(CANTCREAT, "an output file cannot be written (--output)", ("layout",)),
    Row(NOPERM, "InfluxDB refused the credentials (INFLUX_USER, INFLUX_PASS) or a right", INFLUX),
    Row(SIGINT, "interrupted by SIGINT (Ctrl-C) before it finished"),
    Row(SIGTERM, "terminated by SIGTERM before it finished"),
)


class Failure(Exception):
    """A command cannot do its job: its message is the one `E! ` line, `code` the exit code."""

    code = SOFTWARE

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


def rows(command: str) -> list[Row]:
    return [row for row in TABLE if row.applies(command)]


def epilog(command: str) -> str:
    """The end of a command's --help: its exit codes."""
    return "Exit codes: " + "; ".join(f"{r.code} {r.meaning}" for r in rows(command)) + \
        " (all commands: docs/reference/exit-codes.md)."
