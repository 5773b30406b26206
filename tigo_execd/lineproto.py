"""InfluxDB line protocol, written so that neither Telegraf's parser nor InfluxDB 1.x rejects a line.

Tag values and string fields may come from the RS-485 bus (anyone can write on it) or from files a
person edits, so they are treated as hostile: control characters are removed (line protocol has no
escape for a newline in a tag), a backslash in a tag value becomes `/` (a backslash before an escaped
character would change how the rest of the line parses), `,`, `=` and space are escaped, and an
empty value means "no tag". Non-finite floats are never written.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
Field = bool | int | float | str


def measurement(name: str) -> str:
    """Escape a measurement name; raise ValueError for one no parser would take back intact."""
    if not name or _CONTROL.search(name) or "\\" in name or name.startswith("#"):
        raise ValueError(f"invalid measurement name {name!r}: it must be non-empty, must not start "
                         "with '#' and must not contain control characters or backslashes")
    return name.replace(",", "\\,").replace(" ", "\\ ")


def tag_value(value: str) -> str | None:
    """Escape a tag key or value; None when nothing is left to write."""
    value = _CONTROL.sub("", value).replace("\\", "/")
    if not value:
        return None
    return value.replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def string_field(value: str) -> str:
    """A quoted string field: only `\\` and `\"` are escapes; newlines become spaces."""
    value = _CONTROL.sub(" ", value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{value}"'


def field_value(value: Field) -> str | None:
    """Format one field value by its Python type; None for a float that is NaN or infinite."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    return string_field(str(value))


def line(name: str, tags: Mapping[str, str], fields: Mapping[str, Field | None],
         ts_ns: int | None = None) -> str | None:
    """One complete line (with its newline), tags sorted; None when no field is left to write."""
    parts = [measurement(name)]
    for key in sorted(tags):
        k, v = tag_value(key), tag_value(tags[key])
        if k and v:
            parts.append(f"{k}={v}")
    out = []
    for key, value in fields.items():
        k = tag_value(key)
        v = None if value is None else field_value(value)
        if k and v is not None:
            out.append(f"{k}={v}")
    if not out:
        return None
    text = ",".join(parts) + " " + ",".join(out)
    return f"{text} {ts_ns}\n" if ts_ns is not None else text + "\n"
