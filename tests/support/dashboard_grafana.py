"""What Grafana does to a dashboard's InfluxQL before it reaches InfluxDB, for the dashboard tests.

Grafana (10.x/11.x InfluxQL data source) replaces `$var`, `${var}` and `[[var]]`: a multi-value or
include-All variable becomes its regex-escaped value, several values `(a|b)`, "All" the list of all
options unless the variable has a custom all value (used as it is); other variables are inserted
verbatim. A single-value query variable (the resolution variables `res` and `sfx`) takes its first
option, and "None" (the empty string) when its query returns nothing (Grafana's NONE_VARIABLE_VALUE,
https://github.com/grafana/grafana/blob/main/public/app/features/variables/query/reducer.ts); its query
is run again with the time range (`refresh: 2`, "On time range change") and `${__from}`/`${__to}` in
it become the range's epoch milliseconds, as Grafana's TemplateSrv does for every query
(https://grafana.com/docs/grafana/latest/visualizations/dashboards/variables/global-variables/).
`$timeFilter` becomes `time >= <from>ms and time <= <to>ms`, `$__interval` a duration such
as `3m`, `$__interval_ms` milliseconds, `${__from}`/`${__to}` epoch milliseconds. The interval is the
range divided by the panel's max data points, rounded as Grafana rounds it, and never below the
panel's minimum interval.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from support.paths import ROOT

DASHBOARD = ROOT / "grafana" / "tigo-dashboard.json"
_VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)|\[\[(\w+)\]\]")
_REGEX_SPECIAL = re.compile(r"[\\^$*+?.()|\[\]{}/]")
# Grafana's rangeutil.roundInterval: (upper bound, rounded interval), both in milliseconds
_ROUND = [(15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1500, 1000),
          (3500, 2000), (7500, 5000), (12500, 10000), (17500, 15000), (25000, 20000),
          (45000, 30000), (90000, 60000), (210000, 120000), (450000, 300000), (750000, 600000),
          (1050000, 900000), (1500000, 1200000), (2700000, 1800000), (5400000, 3600000),
          (9000000, 7200000), (16200000, 10800000), (32400000, 21600000), (86400000, 43200000),
          (604800000, 86400000), (1814400000, 604800000), (3628800000, 2592000000)]
_UNITS_MS = {"ms": 1, "s": 1000, "m": 60000, "h": 3600000, "d": 86400000, "w": 604800000}


def load() -> dict:
    return json.loads(DASHBOARD.read_text())


def all_panels(dash: dict) -> list[dict]:
    """Panels including those nested in collapsed rows."""
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def duration_ms(text: str) -> int:
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d|w)", text)
    assert m, f"not a duration: {text!r}"
    return int(m[1]) * _UNITS_MS[m[2]]


def format_duration(ms: int) -> str:
    """Grafana's secondsToHms-style interval text (largest whole unit)."""
    for unit in ("w", "d", "h", "m", "s"):
        if ms % _UNITS_MS[unit] == 0:
            return f"{ms // _UNITS_MS[unit]}{unit}"
    return f"{ms}ms"


def interval_ms(from_ms: int, to_ms: int, panel: dict, max_points: int = 1000) -> int:
    raw = (to_ms - from_ms) / panel.get("maxDataPoints", max_points)
    rounded = next((r for bound, r in _ROUND if raw < bound), 31536000000)
    minimum = duration_ms(panel["interval"]) if panel.get("interval") else 0
    return max(rounded, minimum)


def regex_escape(value: str) -> str:
    return _REGEX_SPECIAL.sub(lambda m: "\\" + m[0], value)


@dataclass
class Var:
    """A template variable's definition and its current selection (None = All)."""
    spec: dict
    options: list[str] = field(default_factory=list)
    selected: list[str] | None = None

    def render(self) -> str:
        if self.spec["type"] != "query":
            return self.selected[0] if self.selected else self.spec["current"]["value"]
        if not self.spec.get("multi"):
            return (self.selected or self.options or [""])[0]
        if self.selected is None and "allValue" in self.spec:
            return self.spec["allValue"]
        values = [regex_escape(v) for v in (self.options if self.selected is None else self.selected)]
        return values[0] if len(values) == 1 else "(" + "|".join(values) + ")"


@dataclass
class Range:
    from_ms: int
    to_ms: int


def interpolate(query: str, variables: dict[str, Var], rng: Range, step_ms: int = 60000) -> str:
    builtins = {"timeFilter": f"time >= {rng.from_ms}ms and time <= {rng.to_ms}ms",
                "__interval": format_duration(step_ms), "__interval_ms": str(step_ms),
                "__from": str(rng.from_ms), "__to": str(rng.to_ms)}

    def sub(m: re.Match) -> str:
        name = m[1] or m[2] or m[3]
        if name in builtins:
            return builtins[name]
        assert name in variables, f"unknown variable ${name} in {query}"
        return variables[name].render()

    return _VAR.sub(sub, query)


def panel_range(panel: dict, dash_range: Range) -> Range:
    """The range a panel queries: its relative-time override `now/d` starts at midnight (UTC here)."""
    if panel.get("timeFrom") == "now/d":
        return Range(dash_range.to_ms - dash_range.to_ms % 86400000, dash_range.to_ms)
    assert "timeFrom" not in panel, panel["timeFrom"]
    return dash_range


def sort_options(values: list[str], sort: int) -> list[str]:
    """Grafana's variable sort: 1 alphabetical, 3 numerical (ascending)."""
    if sort == 3:
        return sorted(values, key=float)
    if sort == 1:
        return sorted(values)
    return values


def resolve_variables(dash, db, rng: Range, **selected: list[str]) -> dict[str, Var]:
    """Variables in dashboard order, each query variable run with the ones before it, as Grafana does."""
    out: dict[str, Var] = {}
    for spec in dash["templating"]["list"]:
        var = Var(spec, selected=selected.get(spec["name"]))
        if spec["type"] == "query":
            series = db.query(interpolate(spec["query"], out, rng))
            values = [row[1] for s in series for row in s["values"]]
            var.options = sort_options(sorted(set(values)), spec["sort"])
        out[spec["name"]] = var
    return out
