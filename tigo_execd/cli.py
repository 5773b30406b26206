"""The `tigo-execd` command: one subcommand per job, each defined in the module that does it.

SUBCOMMANDS maps each command to its module, which has `register(subparsers)` to add the command's
parser and set `func(args) -> int`. Only the module of the command being run is imported, so
`run` starts fast. Usage errors exit exitcodes.USAGE, never a code a health check could mean.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import TypeAlias

from tigo_execd import __version__, exitcodes
from tigo_execd.log import LEVELS, install_excepthook, log

SUBCOMMANDS = {"run": "ingest.run", "barcode": "identity.barcode", "nodes": "analysis.nodes",
               "watchdog": "health.watchdog", "ports": "bus.ports", "doctor": "setup.doctor",
               "faults": "analysis.faults", "rollup": "analysis.rollup", "heal": "health.heal",
               "homeassistant": "health.homeassistant", "layout": "analysis.roof"}


class Parser(argparse.ArgumentParser):
    """argparse with Telegraf's E! prefix and exitcodes.USAGE for usage errors."""

    def error(self, message: str) -> None:  # type: ignore[override]
        log.write(f"E! {self.prog}: {message} (see: {self.prog} --help)")
        sys.exit(exitcodes.USAGE)


Subparsers: TypeAlias = "argparse._SubParsersAction[Parser]"  # what each module's register() gets


def add_log_level(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", choices=list(LEVELS), default="info",
                        help="how much to write to stderr (default: info)")


def build_parser(argv: list[str]) -> Parser:
    parser = Parser(prog="tigo-execd", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"tigo-execd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    wanted = [argv[0]] if argv and argv[0] in SUBCOMMANDS else list(SUBCOMMANDS)
    for command in wanted:
        importlib.import_module(f"tigo_execd.{SUBCOMMANDS[command]}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    install_excepthook()
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    log.set_level(getattr(args, "log_level", "info"))
    try:
        return int(args.func(args) or exitcodes.OK)
    except KeyboardInterrupt:
        return exitcodes.OK
