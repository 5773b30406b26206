"""The `tigo-execd` command: one subcommand per job, each defined in the module that does it.

SUBCOMMANDS maps each command to its module, which has `register(subparsers)` to add the command's
parser and set `func(args) -> int`. Only the module of the command being run is imported, so
`run` starts fast. Usage errors exit exitcodes.USAGE, never a code a health check could mean.

main() is the one place where a failure becomes an exit code: a command raises exitcodes.Failure
(influx.py's errors are ones) and main prints its one `E! ` line and returns its code; SIGINT and
SIGTERM before the command finished give 130 and 143. Both signals stay blocked while the modules
are imported (a KeyboardInterrupt raised inside a C extension's import, orjson's, can crash the
interpreter), then are handled: a signal that came meanwhile is acted on at once.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import signal
import sys
from types import FrameType
from typing import Any, TypeAlias

from tigo_execd import __version__, exitcodes
from tigo_execd.log import LEVELS, install_excepthook, log

SUBCOMMANDS = {"run": "ingest.run", "barcode": "identity.barcode", "nodes": "analysis.nodes",
               "watchdog": "health.watchdog", "ports": "bus.ports", "doctor": "setup.doctor",
               "faults": "analysis.faults", "rollup": "analysis.rollup", "heal": "health.heal",
               "homeassistant": "health.homeassistant", "layout": "analysis.roof"}


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


class Parser(argparse.ArgumentParser):
    """argparse with Telegraf's E! prefix and exitcodes.USAGE for usage errors; no abbreviations
    (`--day` is not taken for `--days`: an option added later would change what it means)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)
        self.commands: dict[str, Parser] = {}  # the top-level parser's subcommands

    def unknown(self, extra: list[str]) -> None:
        """Usage error for arguments no option takes, with the closest option of this command."""
        options = [o for action in self._actions for o in action.option_strings]
        first = next((a.split("=", 1)[0] for a in extra if a.startswith("-")), "")
        close = difflib.get_close_matches(first, options, 1) if first else []
        self.error(f"unrecognized arguments: {' '.join(extra)}"
                   + (f" (did you mean {close[0]}?)" if close else ""))

    def error(self, message: str) -> None:  # type: ignore[override]
        log.write(f"E! {self.prog}: {message} (see: {self.prog} --help)")
        sys.exit(exitcodes.USAGE)


Subparsers: TypeAlias = "argparse._SubParsersAction[Parser]"  # what each module's register() gets


def add_log_level(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", choices=list(LEVELS), default="info",
                        help="how much to write to stderr (default: info)")


def waiting_for_telegraf(command: str, once: str) -> None:
    """One I! line when a command that acts on each newline from Telegraf (inputs.execd, signal =
    "STDIN") is started in a terminal, where it would look hung."""
    if sys.stdin.isatty():
        log.info(f"{command}: waiting for a newline on stdin, which Telegraf sends each interval "
                 f"(inputs.execd, signal = \"STDIN\"); press Enter for a check, or use --once: it "
                 f"{once} now and exits")


def build_parser(argv: list[str]) -> Parser:
    parser = Parser(prog="tigo-execd", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"tigo-execd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    wanted = [argv[0]] if argv and argv[0] in SUBCOMMANDS else list(SUBCOMMANDS)
    for command in wanted:
        importlib.import_module(f"tigo_execd.{SUBCOMMANDS[command]}").register(sub)
    for command, p in sub.choices.items():
        p.epilog = exitcodes.epilog(command)
    parser.commands = sub.choices
    return parser


def parse(parser: Parser, argv: list[str]) -> argparse.Namespace:
    """parse_args, but an unknown argument is reported by the subcommand's parser, which names it."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        parser.commands.get(getattr(args, "command", ""), parser).unknown(extra)
    return args


class Terminated(Exception):
    """SIGTERM arrived before the command finished."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    """The command line's exit code. Called in-process (tests), it leaves the signal handlers and
    mask as it found them; `entry` and __main__ keep the signals blocked until the process exits."""
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    handlers = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    install_excepthook()
    argv = sys.argv[1:] if argv is None else argv
    command = "tigo-execd"
    try:
        parser = build_parser(argv)  # imports the command's module
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _terminate)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        args = parse(parser, argv)
        command = f"{command} {args.command}"
        log.set_level(getattr(args, "log_level", "info"))
        return int(args.func(args) or exitcodes.OK)
    except exitcodes.Failure as exc:
        log.error(f"{command}: {exc}")
        return exc.code
    except KeyboardInterrupt:
        log.error(f"{command}: interrupted (SIGINT) before it finished")
        return exitcodes.SIGINT
    except Terminated:
        log.error(f"{command}: terminated (SIGTERM) before it finished")
        return exitcodes.SIGTERM
    finally:  # the code is decided: a signal now waits for the caller's mask
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def entry() -> None:
    """The `tigo-execd` console script: SIGINT and SIGTERM blocked before the command's modules
    are imported and until the process exits with the code main() decided."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    sys.exit(main())
