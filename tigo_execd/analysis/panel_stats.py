"""Per panel, per time slot aggregates of the power reports, computed by InfluxDB.

The fault rules compare each panel with its peers slot by slot, so they need means per slot, never
the points themselves. InfluxDB computes them (GROUP BY time(), one query per day of the window, so
no answer grows with the window), and Python keeps one 4-byte float per panel, field and slot: 30
days of 100 panels in 10-minute slots is about 12 MB.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tigo_execd import influx
from tigo_execd.influx import Influx

SLOT_S = 600           # one slot: 10 minutes, 30 reports of one optimizer (one every 20 s)
DAY_S = 86400
REPORT_PERIOD_S = 20   # a TS4 reports every 20 s while its panel has light
# field name in the slot arrays -> InfluxQL aggregate over the reports (schema: docs/metrics.md)
AGGREGATES = {
    "n": 'count("power_w")',
    "vin": 'mean("voltage_in_v")',
    "cur": 'mean("current_in_a")',
    "p": 'mean("power_w")',
    "t": 'mean("temperature_c")',
    "tmax": 'max("temperature_c")',
    "rssi": 'mean("rssi")',
}
NAME_TAGS = ("barcode", "panel", "string")


@dataclass(frozen=True)
class Window:
    """The slots judged: [start_s, end_s) in SLOT_S steps; days start at `day_origin_s` + k days
    (local solar midnight when the longitude is known, else UTC midnight)."""

    start_s: int
    end_s: int
    day_origin_s: int

    @property
    def slots(self) -> int:
        return (self.end_s - self.start_s) // SLOT_S

    def slot_time(self, i: int) -> int:
        return self.start_s + i * SLOT_S

    def day_of(self, i: int) -> int:
        return (self.slot_time(i) - self.day_origin_s) // DAY_S

    def slot_of_day(self, i: int) -> int:
        return (self.slot_time(i) - self.day_origin_s) % DAY_S // SLOT_S

    def day_start(self, day: int) -> int:
        return self.day_origin_s + day * DAY_S

    def days(self) -> Iterator[tuple[int, int, int]]:
        """(day, first slot, end slot) of every day the window touches."""
        i = 0
        while i < self.slots:
            day = self.day_of(i)
            end = min(self.slots, (self.day_start(day + 1) - self.start_s) // SLOT_S)
            yield day, i, end
            i = end


def make_window(end_s: int, days: float, longitude: float | None) -> Window:
    """The `days` before `end_s`, cut to whole slots."""
    end = end_s - end_s % SLOT_S
    start = end - int(days * DAY_S) // SLOT_S * SLOT_S
    offset = 0 if longitude is None else round(-longitude * 240 / SLOT_S) * SLOT_S  # solar midnight
    origin = (start - offset) // DAY_S * DAY_S + offset
    return Window(start, end, origin)


@dataclass
class Panel:
    """One optimizer (gateway, node) and its slot aggregates; `n` 0 = no report in the slot."""

    gateway_id: int
    node_id: int
    barcode: str | None = None
    panel: str | None = None
    string: str | None = None
    values: dict[str, array[float]] = field(default_factory=dict)

    @property
    def key(self) -> tuple[int, int]:
        return self.gateway_id, self.node_id

    def label(self) -> str:
        """How a person finds it on the roof: the panel name, else the barcode, else the ids."""
        return self.panel or self.barcode or f"{self.gateway_id}/{self.node_id}"


def _rows(series: list[dict[str, Any]]) -> Iterator[tuple[dict[str, str], dict[str, Any]]]:
    for s in series:
        for values in s.get("values", []):
            yield s.get("tags", {}), dict(zip(s["columns"], values))


def _ids(tags: dict[str, str]) -> tuple[int, int] | None:
    gw, node = tags.get("gateway_id", ""), tags.get("node_id", "")
    ok = gw.isascii() and gw.isdigit() and node.isascii() and node.isdigit()
    return (int(gw), int(node)) if ok else None


def _ns(seconds: int) -> int:
    return seconds * 1_000_000_000


def _new_panel(key: tuple[int, int], slots: int) -> Panel:
    nan = array("f", [math.nan]) * slots
    return Panel(*key, values={name: array("f", [0.0]) * slots if name == "n" else array("f", nan)
                               for name in AGGREGATES})


def read(db: Influx, target: str, window: Window,
         names: dict[str | tuple[int, int], dict[str, str]] | None = None) -> list[Panel]:
    """Every panel that reported in the window with its slot aggregates; names from the names file
    (by barcode, else by ids) win over the `panel`/`string` tags stored with the reports."""
    where = f"time >= {_ns(window.start_s)} AND time < {_ns(window.end_s)}"
    panels: dict[tuple[int, int], Panel] = {}
    newest: dict[tuple[int, int], int] = {}
    tags_q = db.query(f'SELECT last("power_w") FROM {target} WHERE {where} GROUP BY "gateway_id", '
                      f'"node_id", {", ".join(map(influx.ident, NAME_TAGS))}', epoch="s")
    for tags, row in _rows(tags_q):  # one series per tag combination: the newest one wins
        key = _ids(tags)
        if key is None:
            continue
        panel = panels.setdefault(key, _new_panel(key, window.slots))
        if row["time"] >= newest.get(key, -1):
            newest[key] = row["time"]
            for tag in NAME_TAGS:
                setattr(panel, tag, tags.get(tag) or getattr(panel, tag))
    for p in panels.values():
        named = (names or {}).get(p.barcode or "") or (names or {}).get(p.key)
        if named:
            p.panel, p.string = named.get("panel") or p.panel, named.get("string") or p.string
    selects = ", ".join(f"{agg} AS {influx.ident(name)}" for name, agg in AGGREGATES.items())
    for _, first, end in window.days():
        span = f"time >= {_ns(window.slot_time(first))} AND time < {_ns(window.slot_time(end))}"
        answer = db.query(f'SELECT {selects} FROM {target} WHERE {span} GROUP BY time({SLOT_S}s), '
                          f'"gateway_id", "node_id" fill(none)', epoch="s")
        _store(panels, window, _rows(answer))
    return sorted((p for p in panels.values() if any(p.values["n"])), key=lambda p: p.key)


def _store(panels: dict[tuple[int, int], Panel], window: Window,
           rows: Iterable[tuple[dict[str, str], dict[str, Any]]]) -> None:
    for tags, row in rows:
        key = _ids(tags)
        panel = panels.get(key) if key else None
        i = (row["time"] - window.start_s) // SLOT_S
        if panel is None or not 0 <= i < window.slots or not row.get("n"):
            continue
        for name in AGGREGATES:
            value = row.get(name)
            if value is not None:
                panel.values[name][i] = value
