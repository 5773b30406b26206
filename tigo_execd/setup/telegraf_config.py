"""Telegraf's config rules, as Telegraf 1.38+ applies them when it loads its files.

`${VAR}` substitution only inside TOML strings, unknown option names refused (the names per plugin
ship in tigo_execd/data/telegraf-plugin-options.json, read from Telegraf's source,
https://github.com/influxdata/telegraf), and which metrics reach an output through its filters.
"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from tigo_execd import measurements

MEASUREMENT = measurements.POWER_REPORT
TIGO_METRICS = (MEASUREMENT, measurements.INGEST)  # what `tigo-execd run` gives the main Telegraf
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def substitute(text: str, env: Mapping[str, str]) -> str:
    """Telegraf's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err} in one string.

    An unset ${VAR} without a default stays as written (Telegraf keeps undeclared references).
    """

    def one(m: re.Match[str]) -> str:
        name, op, arg = m[1], m[2], m[3] or ""
        value = env.get(name)
        missing = value is None or (op is not None and op.startswith(":") and value == "")
        if op in (":-", "-"):
            return arg if missing else str(value)
        if op in (":?", "?") and missing:
            raise ValueError(f"environment variable {name}: {arg or 'not set'}")
        return m[0] if value is None else value

    return _ENV_REF.sub(one, text)


def substitute_strings(value: Any, env: Mapping[str, str]) -> Any:
    """Substitute inside every string value of a parsed TOML document (and nowhere else)."""
    if isinstance(value, str):
        return substitute(value, env)
    if isinstance(value, list):
        return [substitute_strings(v, env) for v in value]
    if isinstance(value, dict):
        return {k: substitute_strings(v, env) for k, v in value.items()}
    return value


def load_conf(path: Path, env: Mapping[str, str]) -> dict[str, Any]:
    """One Telegraf config file, parsed and substituted; ValueError says what Telegraf would."""
    try:
        doc: dict[str, Any] = substitute_strings(tomllib.loads(path.read_text()), env)
    except (OSError, ValueError) as exc:  # TOML, UTF-8 or ${VAR:?error}
        raise ValueError(f"error loading config file {path}: {exc}") from None
    return doc


def known_options() -> dict[str, list[str]]:
    """Option names per plugin that Telegraf accepts (any other stops it at start-up)."""
    text = resources.files("tigo_execd").joinpath("data/telegraf-plugin-options.json").read_text()
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


def unknown_options(kind: str, table: Mapping[str, Any], known: Mapping[str, list[str]]) -> list[str]:
    """The option names of one plugin table that Telegraf would reject (listed sub-tables too)."""
    bad = []
    for key, value in table.items():
        if key not in known[kind]:
            bad.append(key)
        elif isinstance(value, dict) and f"{kind}.{key}" in known:
            bad += [f"{key}.{sub}" for sub in unknown_options(f"{kind}.{key}", value, known)]
    return bad


def plugins(doc: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """("inputs.execd", table) for every plugin table of a parsed config file."""
    for top in ("inputs", "outputs", "processors", "aggregators"):
        section = doc.get(top)
        for name, tables in section.items() if isinstance(section, dict) else ():
            for table in tables if isinstance(tables, list) else [tables]:
                if isinstance(table, dict):  # anything else: not a plugin table, Telegraf refuses it
                    yield f"{top}.{name}", table


def command_of(table: Mapping[str, Any]) -> list[str]:
    """An execd plugin's `command` list as strings (empty when it is not a list)."""
    command = table.get("command")
    return [str(a) for a in command] if isinstance(command, list) else []


def header_lines(path: Path, kind: str) -> list[int]:
    """The line numbers of each `[[kind]]` header in a config file, in order."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return []
    header = re.compile(rf"^[ \t]*\[\[[ \t]*{re.escape(kind)}[ \t]*\]\]", re.MULTILINE)
    return [text.count("\n", 0, m.start()) + 1 for m in header.finditer(text)]


def tigo_metrics_sent(table: Mapping[str, Any]) -> list[str]:
    """The Tigo metrics an output receives without having asked for them.

    Telegraf's metric filter (models/filter.go in https://github.com/influxdata/telegraf): an
    output with no filter gets every metric; `namepass` (globs on the metric name) keeps only
    those matching, `namedrop` removes those matching. An output that selects its metrics itself
    (namepass, tagpass or metricpass) is taken at its word; otherwise whatever namedrop does not
    remove reaches it. Globs are matched like fnmatch (`*`, `?`, `[...]`), which covers the
    glob library Telegraf uses except its `{a,b}` alternatives.
    """
    if any(table.get(key) for key in ("namepass", "tagpass", "metricpass")):
        return []
    drops = table.get("namedrop")
    drops = [str(g) for g in drops] if isinstance(drops, list) else []
    return [m for m in TIGO_METRICS if not any(fnmatch.fnmatchcase(m, g) for g in drops)]
