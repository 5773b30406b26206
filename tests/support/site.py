"""A generated solar site for the panel-fault tests and bench: gateways, strings, weather, faults.

Days of weather (sunny, passing clouds, overcast, a snow day where the whole array drops), panels
of slightly different strength on two gateways, a TS4-A-S mix (voltage_out 0, no current_out), and
faults injected on chosen panels the way their physics goes: a shorted bypass diode takes a third
of the voltage at the same current, dirt takes current all day, shade takes power at the same
hours every day, a hot optimizer runs hotter, a dead module reports 0 W, a weak radio loses
reports. Written as InfluxDB line protocol in the schema of tigo_power_report (docs/metrics.md),
one report per panel every `period_s`, with the gateway's shared timestamp.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from tigo_execd.influx import Influx

DAY0 = 1781481600        # 2026-06-15T00:00:00Z, a Monday
LATITUDE, LONGITUDE = 48.14, 11.58
SUNRISE_H, SUNSET_H = 3.25, 19.25  # UTC, Munich in June
WEATHER = ("sunny", "clouds", "sunny", "overcast", "sunny", "snow", "sunny")


@dataclass(frozen=True)
class Fault:
    """An injected condition: `kind` as `tigo-execd faults` should name it, `size` its strength
    (the factor or the degrees), active from `day` (and within `hours` of UTC when given)."""

    kind: str
    size: float = 0.0
    day: int = 0
    hours: tuple[float, float] | None = None
    until_day: int = 10_000


@dataclass(frozen=True)
class SitePanel:
    gateway: int
    node: int
    panel: str
    string: str
    strength: float      # share of the nominal 320 W peak
    monitor_only: bool   # TS4-A-S: voltage_out 0
    temp_offset: float

    @property
    def barcode(self) -> str:
        return f"4-{self.gateway % 100:02d}{self.node:04X}Z"


@dataclass
class Site:
    panels: list[SitePanel]
    days: int = 7
    weather: tuple[str, ...] = WEATHER
    period_s: int = 60
    faults: dict[tuple[int, int], Fault] = field(default_factory=dict)
    stop: dict[int, float] = field(default_factory=dict)        # gateway -> time (s) its reports end
    # (gateway, node) -> (new gateway, new node, from time s): the CCA re-enumerates
    renumber: dict[tuple[int, int], tuple[int, int, float]] = field(default_factory=dict)
    clock_jump: tuple[float, float, float] | None = None  # reports in [from, to) s stamped + shift s
    seed: int = 7

    @property
    def end_s(self) -> int:
        return DAY0 + self.days * 86400

    def names_csv(self) -> str:
        return "".join(f"{p.gateway},{p.node},{p.panel},{p.string}\n" for p in self.panels)

    def lines(self) -> Iterator[str]:
        rnd = random.Random(self.seed)
        for day in range(self.days):
            weather = self.weather[day % len(self.weather)]
            clouds = [rnd.choice((1.0, 1.0, 0.35, 0.5)) for _ in range(24 * 12)]  # per 5 minutes
            for t in range(DAY0 + day * 86400, DAY0 + (day + 1) * 86400, self.period_s):
                hour = (t - DAY0) % 86400 / 3600
                x = (hour - SUNRISE_H) / (SUNSET_H - SUNRISE_H)
                if not 0 < x < 1:
                    continue
                sun = math.sin(math.pi * x) ** 1.3
                factor = {"sunny": 1.0, "clouds": clouds[int(hour * 12)], "overcast": 0.18,
                          "snow": 0.03}[weather]
                for p in self.panels:
                    if t >= self.stop.get(p.gateway, math.inf):
                        continue
                    line = self._report(rnd, p, t, day, hour, sun * factor, sun)
                    if line:
                        yield line

    def _report(self, rnd: random.Random, p: SitePanel, t: int, day: int, hour: float, light: float,
                clear: float) -> str | None:
        gw, node = p.gateway, p.node
        moved = self.renumber.get((gw, node))
        if moved and t >= moved[2]:
            gw, node = moved[0], moved[1]
        fault = self.faults.get((p.gateway, p.node))
        if fault and not (fault.day <= day < fault.until_day and
                          (fault.hours is None or fault.hours[0] <= hour < fault.hours[1])):
            fault = None
        kind = fault.kind if fault else ""
        if kind == "comms" and rnd.random() < fault.size:  # type: ignore[union-attr]
            return None
        power = 320 * p.strength * light * rnd.uniform(0.985, 1.015)
        vin = (30.5 + 3.5 * min(1.0, light * 4)) * rnd.uniform(0.995, 1.005)
        temp = 18 + 30 * clear + p.temp_offset + rnd.uniform(-0.5, 0.5)
        if kind == "bypass_diode":
            vin *= fault.size  # type: ignore[union-attr]
            power *= fault.size  # type: ignore[union-attr]
        elif kind in ("underperforming", "shaded"):
            power *= fault.size  # type: ignore[union-attr]
            if kind == "shaded":
                vin *= 0.67     # the shaded substring's diode conducts
        elif kind == "hot":
            temp += fault.size * min(1.0, light * 3)  # type: ignore[union-attr]
        elif kind == "no_power":
            power, vin = 0.0, 39.5
        vin = round(vin * 20) / 20
        current = round(power / vin * 200) / 200
        power = round(vin * current, 3)
        vout = 0.0 if p.monitor_only else round(vin * 0.98, 1)
        fields = (f"voltage_in_v={vin},voltage_out_v={vout},current_in_a={current},power_w={power},"
                  f"duty_cycle=1,temperature_c={round(temp, 1)},rssi={rnd.randint(110, 150)}i")
        if vout:
            fields += f",current_out_a={round(power / vout, 4)}"
        if self.clock_jump and self.clock_jump[0] <= t < self.clock_jump[1]:
            t += int(self.clock_jump[2])
        return (f"tigo_power_report,barcode={p.barcode},gateway_id={gw},node_id={node},src=tigo "
                f"{fields} {t * 1_000_000_000}")

    def write(self, db: Influx, batch: int = 20_000) -> int:
        """Write every report to `db`; returns how many."""
        count, chunk = 0, []
        for line in self.lines():
            chunk.append(line)
            if len(chunk) >= batch:
                db.write(("\n".join(chunk) + "\n").encode())
                count, chunk = count + len(chunk), []
        if chunk:
            db.write(("\n".join(chunk) + "\n").encode())
        return count + len(chunk)


def panels(gateways: dict[int, dict[str, int]], seed: int = 3) -> list[SitePanel]:
    """Panels for {gateway: {string: how many}}; node ids from 2 per gateway, every third panel
    of a gateway a TS4-A-S, strengths within +-2.5 %."""
    rnd = random.Random(seed)
    out = []
    for gw, strings in gateways.items():
        node = 2
        for string, count in strings.items():
            for k in range(count):
                out.append(SitePanel(gw, node, f"{string[0].upper()}{k + 1}", string,
                                     rnd.uniform(0.975, 1.025), node % 3 == 0, rnd.uniform(-2, 2)))
                node += 1
    return out


def standard(faults: dict[tuple[int, int], Fault] | None = None, **kw: object) -> Site:
    """24 panels: gateway 4609 with strings east and west (8 each), gateway 4610 with south (8)."""
    return Site(panels({4609: {"east": 8, "west": 8}, 4610: {"south": 8}}), faults=faults or {},
                **kw)  # type: ignore[arg-type]


# what the faulty standard site has, and what `faults` must say about it: kind, severity
INJECTED = {
    (4609, 3): Fault("bypass_diode", 0.66, day=1),
    (4609, 5): Fault("underperforming", 0.72),
    (4609, 12): Fault("shaded", 0.3, hours=(5.0, 7.0)),
    (4609, 14): Fault("hot", 18.0),
    (4610, 4): Fault("no_power", day=4, hours=(10.0, 12.5), until_day=5),
    (4610, 7): Fault("comms", 0.5),
}
SEVERITY = {"shaded": "info"}
