"""Environment variables in Telegraf config files, substituted the way Telegraf does it.

Written for the Telegraf harness from Telegraf's source, not from tigo_execd (which checks the same
files on users' machines: the stand-in must not share its rules). Sources:
https://github.com/influxdata/telegraf/blob/master/config/envvar.go (substituteEnvironmentStrict,
the replacement function that keeps what it cannot substitute),
https://github.com/influxdata/telegraf/blob/master/config/config.go (parseConfig: BOM, comments,
then strict substitution) and the template package Telegraf calls,
https://github.com/compose-spec/compose-go/blob/v1.20.2/template/template.go.

What Telegraf does (strict handling, its default since 1.37, influxdata/telegraf#17966):
- The file is parsed as TOML first; only string values are substituted (basic, literal and
  multi-line strings, also inside arrays and inline tables), never keys, numbers or booleans, and
  never comments. A reference written outside a string is therefore a TOML syntax error.
- `$$` is a literal `$`. `$NAME` and `${NAME}` (NAME: a letter or `_`, then letters, digits, `_`)
  are the variable's value when it is set, even to ""; when it is unset the text stays as written.
- `${NAME:-word}` word when NAME is unset or empty, `${NAME-word}` only when unset;
  `${NAME:+word}` word when NAME is set and not empty (else its value, "" when unset),
  `${NAME+word}` word when set; `${NAME:?word}` and `${NAME?word}` stop loading with "required
  variable NAME is missing a value: word" (unset or empty, resp. unset only).
  The word is itself substituted, by the template package's own rules: an unset variable there is
  "", and a `${` not followed by a name makes the whole outer reference stay as written.
- Anything else after `$` (`$1`, `${1}`, a lone `$`) stays as written.
- A quirk kept on purpose: the pattern is greedy, so once a reference with an operator is found,
  the rest of that line of the string (up to its last `}`) is substituted by the template
  package's rules too: in "${A:-x}/${B}" an unset B becomes "", not "${B}".
Not emulated: --non-strict-env-handling (substitution in the whole text before parsing) and
--old-env-behavior (the pre-1.27 pattern).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from typing import Any

_NAME = r"[_a-z][_a-z0-9]*"
_PATTERN = re.compile(r"\$(?:(?P<escaped>\$)|(?P<named>" + _NAME + r")|\{(?:(?P<braced>" + _NAME
                      + r"(?::?[-+?](?:.*))?)\}|(?P<invalid>)))", re.IGNORECASE)
_BRACED = re.compile(r"(" + _NAME + r")(:?[-+?])?(.*)", re.IGNORECASE)
_BOM = "\ufeff"


class MissingVariable(ValueError):
    """A `${NAME:?word}` or `${NAME?word}` whose variable is missing: Telegraf does not start."""


class _InvalidTemplate(Exception):
    """A `$` not followed by a reference: the template package's error, kept as text by Telegraf."""


def substitute(text: str, env: Mapping[str, str]) -> str:
    """One TOML string value after Telegraf's substitution."""
    return _PATTERN.sub(lambda m: _telegraf_replacement(m[0], env), text)


def load(data: str, env: Mapping[str, str]) -> dict[str, Any]:
    """A config file's text parsed as Telegraf parses it: TOML first, then its strings substituted.
    Raises tomllib.TOMLDecodeError or MissingVariable."""
    return _walk(tomllib.loads(data.removeprefix(_BOM)), env)


def _walk(value: Any, env: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return substitute(value, env)
    if isinstance(value, dict):
        return {k: _walk(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, env) for v in value]
    return value


def _telegraf_replacement(match: str, env: Mapping[str, str]) -> str:
    """Telegraf's replacement function: what cannot be substituted stays as written."""
    try:
        value, applied = _replace(match, env)
    except _InvalidTemplate:
        return match
    return value if applied else match


def _template_substitute(text: str, env: Mapping[str, str]) -> str:
    """The template package's own rules (unset is "", a malformed reference an error)."""
    return _PATTERN.sub(lambda m: _replace(m[0], env)[0], text)


def _replace(match: str, env: Mapping[str, str]) -> tuple[str, bool]:
    """One match: (replacement, whether a value was found or an operator applied)."""
    close = _first_closing_brace(match)
    rest = ""
    if close >= 0:
        match, rest = match[:close + 1], match[close + 1:]
    groups = _PATTERN.match(match)
    assert groups is not None  # every match starts with `$`
    if groups["escaped"]:
        return "$", True
    name = groups["named"] or groups["braced"]
    if not name:
        raise _InvalidTemplate(match)
    if groups["braced"]:
        name, op, word = _BRACED.fullmatch(name).groups()  # type: ignore[union-attr]
        if op:
            return _operator(name, op, _template_substitute(word, env), env) + \
                _template_substitute(rest, env), True
    return env.get(name, ""), name in env


def _operator(name: str, op: str, word: str, env: Mapping[str, str]) -> str:
    value = env.get(name)
    if op in (":-", "-"):
        return word if value is None or (op == ":-" and value == "") else value
    if op in (":+", "+"):
        return word if value is not None and (op == "+" or value != "") else (value or "")
    if value is None or (op == ":?" and value == ""):
        reason = f": {word}" if word else ""
        raise MissingVariable(f"required variable {name} is missing a value{reason}")
    return value


def _first_closing_brace(text: str) -> int:
    """Index of the `}` closing the first `${`, counting nested `${`; -1 when there is none."""
    depth, i = 0, 0
    while i < len(text):
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        if text.startswith("${", i):
            depth += 1
            i += 1
        i += 1
    return -1
