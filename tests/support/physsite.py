"""Physical test sites for the panel-fault tests, on pvlib (https://pvlib-python.readthedocs.io).

The weather is pvlib's bundled typical-year file of Greensboro NC (TMY3 723170, hourly); the sun's
position, each roof face's plane-of-array irradiance, the module's temperature (SAPM) and its
single-diode curve (a CEC module of pvlib's bundled database) are pvlib's. Between the hours of the
file, broken clouds pass in seconds (a random cloud field with the hour's share of the sun
blocked), and each optimizer reports every 20-30 s at its own phase, so two nodes see a passing
cloud at different moments. A TS4-A-O bucks (voltage_out below voltage_in) when its panel is
weaker than the string's current; a TS4-A-S reports voltage_out 0.

Conditions are injected as their physics goes: a shorted bypass diode takes one of three cell
substrings out (series resistance, shunt resistance and diode voltage x 2/3: voltage x 2/3 at the
same current); soiling lets less light in; a chimney shades one substring at some sun positions,
and the module then works at the better of bypassing that substring or running it at the shaded
current; a module without air behind it runs hotter (SAPM insulated back instead of open rack); an
open output leaves the module at its open-circuit voltage, 0 W; a weak radio loses reports.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pvlib
from scipy.interpolate import RegularGridInterpolator
from scipy.signal import lfilter
from scipy.special import ndtr

from support.servers import InfluxServer
from tigo_execd.influx import Influx

WEATHER = Path(pvlib.__file__).parent / "data" / "723170TYA.CSV"  # Greensboro NC, typical year
LATITUDE, LONGITUDE = 36.10, -79.95
MODULE = "Canadian_Solar_Inc__CS6K_300MS"   # 60 cells, three substrings, ~32 V / 9.3 A at MPP
# the first day (UTC) of each season's week, chosen from the file's daily clearness
SEASONS = {"summer": "2026-07-07", "june-clouds": "2026-06-01", "winter": "2026-12-01",
           "overcast": "2026-12-25"}
SAPM = pvlib.temperature.TEMPERATURE_MODEL_PARAMETERS["sapm"]
AIRY = SAPM["open_rack_glass_polymer"]        # on rails, air behind the module
STUFFY = SAPM["insulated_back_glass_polymer"]  # no air behind it
CLOUD_S = 40.0          # a passing cloud's time scale, seconds
ROOF_S = 2.0            # a cloud edge crosses the roof in this many seconds
FROST_KWH = 0.25        # frost melts once the face has had this much sun since dawn (kWh/m2)
# the injected condition -> what `tigo-execd faults` must say: kind, severity
EXPECT = {"diode": ("bypass_diode", "warn"), "soiling": ("underperforming", "warn"),
          "chimney": ("shaded", "info"), "stuffy": ("hot", "warn"), "open": ("no_power", "warn"),
          "radio": ("comms", "warn")}


@dataclass(frozen=True)
class Face:
    name: str
    azimuth: float           # degrees from north, clockwise
    tilt: float
    horizon: float = 0.0     # the sun's beam is blocked below this elevation (the next row of houses)


@dataclass(frozen=True)
class Condition:
    """`kind` a key of EXPECT; from `day` (and `hour` UTC) on. chimney: `sun` = (azimuth from,
    azimuth to, elevation below which) the beam on one substring is blocked; soiling: `size` the
    share of light lost; radio: the share of reports lost."""

    kind: str
    day: int = 0
    hour: float = 0.0
    size: float = 0.0
    sun: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class Node:
    gateway: int
    node: int
    face: Face
    string: str
    monitor_only: bool = False  # TS4-A-S

    @property
    def barcode(self) -> str:
        return f"4-{self.gateway % 100:02d}{self.node:04X}P"


@dataclass(frozen=True)
class Site:
    name: str
    nodes: tuple[Node, ...]
    season: str = "summer"
    days: int = 7
    conditions: tuple[tuple[tuple[int, int], Condition], ...] = ()
    seed: int = 1

    @property
    def start_s(self) -> int:
        return int(pd.Timestamp(SEASONS[self.season], tz="UTC").timestamp())

    @property
    def end_s(self) -> int:
        return self.start_s + self.days * 86400

    @property
    def now(self) -> str:
        return pd.Timestamp(self.end_s, unit="s", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")

    def names_csv(self) -> str:
        """A names file naming each node's string (its face unless the site says otherwise)."""
        return "".join(f"{n.gateway},{n.node},{n.face.name[0].upper()}{n.node},{n.string}\n"
                       for n in self.nodes)

    def expected(self) -> dict[tuple[int, int], set[tuple[str, str]]]:
        return {key: {EXPECT[c.kind]} for key, c in self.conditions}

    def with_conditions(self, **by_node: Condition) -> Site:
        """A copy with conditions, keyed "gateway_node"."""
        extra = tuple((tuple(map(int, k.split("_"))), c) for k, c in by_node.items())
        return Site(self.name, self.nodes, self.season, self.days,
                    self.conditions + extra, self.seed)  # type: ignore[arg-type]


def roof(gateway: int, faces: dict[Face, int], first_node: int = 2, monitor_every: int = 0,
         strings: dict[str, str] | None = None) -> tuple[Node, ...]:
    """Nodes of one gateway: `faces` {face: panels}; every `monitor_every`-th node a TS4-A-S."""
    out, node = [], first_node
    for face, count in faces.items():
        for _ in range(count):
            out.append(Node(gateway, node, face, (strings or {}).get(face.name, face.name),
                            bool(monitor_every) and node % monitor_every == 0))
            node += 1
    return tuple(out)


# ------------------------------------------------------------------ weather and sun

@functools.cache
def _weather() -> pd.DataFrame:
    data, _ = pvlib.iotools.read_tmy3(str(WEATHER), coerce_year=2026, map_variables=True)
    data.index = data.index.tz_convert("UTC") - pd.Timedelta(minutes=30)  # values: the hour before
    clear = pvlib.location.Location(LATITUDE, LONGITUDE).get_clearsky(data.index)
    data["blocked"] = np.where(clear["dni"] > 50, 1 - np.clip(data["dni"] / clear["dni"].clip(lower=1), 0, 1),
                               0.0)
    return data


@dataclass
class Sky:
    """Per minute of the window: the sun, each face's beam and diffuse light, air and wind; per
    second: whether the sun is out."""

    t0: int
    elevation: np.ndarray
    azimuth: np.ndarray
    beam: dict[str, np.ndarray]
    diffuse: dict[str, np.ndarray]
    air: np.ndarray
    wind: np.ndarray
    sun_out: np.ndarray
    frost_day: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))


def sky(site: Site, rng: np.random.Generator) -> Sky:
    minutes = site.days * 1440
    times = pd.date_range(pd.Timestamp(site.start_s, unit="s", tz="UTC") + pd.Timedelta(seconds=30),
                          periods=minutes, freq="min")
    w = _weather()
    cols = w[["dhi", "temp_air", "wind_speed", "blocked"]]
    hourly = cols.reindex(cols.index.union(times)).interpolate("time").loc[times]
    sun = pvlib.solarposition.get_solarposition(times, LATITUDE, LONGITUDE)
    clear = pvlib.location.Location(LATITUDE, LONGITUDE).get_clearsky(times, solar_position=sun)
    dhi = np.minimum(hourly["dhi"].to_numpy(), clear["ghi"].to_numpy())
    faces = {n.face for n in site.nodes}
    beam, diffuse = {}, {}
    for f in faces:
        poa = pvlib.irradiance.get_total_irradiance(
            f.tilt, f.azimuth, sun["apparent_zenith"], sun["azimuth"], clear["dni"],
            clear["dni"] * np.cos(np.radians(sun["apparent_zenith"])).clip(0) + dhi, dhi, albedo=0.2)
        beam[f.name] = np.where(sun["elevation"] > f.horizon, poa["poa_direct"].fillna(0), 0.0)
        diffuse[f.name] = poa["poa_diffuse"].fillna(0).to_numpy()
    # the cloud field: correlated noise made uniform; the sun is out where it beats the hour's
    # share of blocked sun (so each hour keeps its direct light on average)
    a = np.exp(-1 / CLOUD_S)
    noise = lfilter([np.sqrt(1 - a * a)], [1, -a], rng.standard_normal(site.days * 86400 + 60))
    blocked = np.repeat(hourly["blocked"].to_numpy(), 60)
    sun_out = ndtr(noise) >= np.append(blocked, np.full(60, blocked[-1]))  # + the roof's crossing
    night_min = w["temp_air"].resample("D").min()
    frost = np.array([night_min.get(pd.Timestamp(site.start_s + d * 86400, unit="s", tz="UTC").floor("D"),
                                    9.0) < 0 for d in range(site.days)])
    return Sky(site.start_s, sun["elevation"].to_numpy(), sun["azimuth"].to_numpy(), beam, diffuse,
               hourly["temp_air"].to_numpy(), hourly["wind_speed"].to_numpy(), sun_out, frost)


# ------------------------------------------------------------------ the panels

@functools.lru_cache(maxsize=1)
def _cec() -> pd.Series:
    return pvlib.pvsystem.retrieve_sam("CECMod")[MODULE]


@dataclass
class Reports:
    """One row per report, in time order."""

    time_ms: np.ndarray
    node: np.ndarray        # index into site.nodes
    vin: np.ndarray
    vout: np.ndarray
    cur: np.ndarray
    power: np.ndarray
    duty: np.ndarray
    temp: np.ndarray
    rssi: np.ndarray


GRID_E = np.arange(0.0, 1401.0, 5.0)      # W/m2
GRID_T = np.arange(-25.0, 101.0, 1.0)      # degC


@functools.cache
def _curves(substrings: int) -> dict[str, RegularGridInterpolator]:
    """The module's maximum power point and open-circuit voltage over a grid of effective
    irradiance and cell temperature (pvlib's CEC single-diode model, solved once), with
    `substrings` of its three cell substrings working: the others' bypass diodes conduct, which
    takes their share of Rs, Rsh and the diode voltage out (voltage x 2/3 at the same current)."""
    m = _cec()
    e, t = np.meshgrid(np.maximum(GRID_E, 0.1), GRID_T, indexing="ij")
    il, i0, rs, rsh, nvth = pvlib.pvsystem.calcparams_cec(
        e.ravel(), t.ravel(), m["alpha_sc"], m["a_ref"], m["I_L_ref"], m["I_o_ref"], m["R_sh_ref"],
        m["R_s"], m["Adjust"])
    k = substrings / 3
    out = pvlib.pvsystem.singlediode(il, i0, rs * k, rsh * k, nvth * k)
    return {key: RegularGridInterpolator((GRID_E, GRID_T), np.asarray(out[key]).reshape(e.shape))
            for key in ("p_mp", "v_mp", "i_mp", "v_oc")}


def _module(effective: np.ndarray, temp_cell: np.ndarray, substrings: int = 3) -> dict[str, np.ndarray]:
    points = np.column_stack([np.clip(effective, 0, GRID_E[-1]), np.clip(temp_cell, GRID_T[0], GRID_T[-1])])
    return {key: f(points) for key, f in _curves(substrings).items()}


def generate(site: Site) -> Reports:
    rng = np.random.default_rng(site.seed)
    s = sky(site, rng)
    conditions = dict(site.conditions)
    parts = []
    for idx, n in enumerate(site.nodes):
        period = rng.uniform(20, 30)
        t = site.start_s + rng.uniform(0, period) + np.arange(0, site.days * 86400 / period) * period
        t = t[t < site.end_s]
        minute = ((t - site.start_s) // 60).astype(int)
        t, minute = t[s.elevation[minute] > 0], minute[s.elevation[minute] > 0]
        c = conditions.get((n.gateway, n.node))
        since = site.start_s + (c.day * 86400 + c.hour * 3600 if c else 0)
        on = (t >= since) if c else np.zeros(len(t), bool)
        lag = rng.uniform(0, ROOF_S)
        out = s.sun_out[((t - site.start_s) + lag).astype(int)]
        beam, diffuse = s.beam[n.face.name][minute], s.diffuse[n.face.name][minute]
        light = beam * out + diffuse
        day = ((t - site.start_s) // 86400).astype(int)
        if s.frost_day.any():  # frost until the face has had FROST_KWH, a little unevenly
            dawn_wh = np.cumsum((s.beam[n.face.name] + s.diffuse[n.face.name]).reshape(site.days, 1440),
                                axis=1).ravel() / 60 / 1000
            melt = FROST_KWH * rng.uniform(0.9, 1.1, site.days)
            light = np.where(s.frost_day[day] & (dawn_wh[minute] < melt[day]), light * 0.15, light)
        # the module's temperature follows the light of the last minutes (thermal mass)
        alpha = np.exp(-1 / 6)
        face_light = lfilter([1 - alpha], [1, -alpha], s.beam[n.face.name] * 0.7 + s.diffuse[n.face.name])
        params = STUFFY if c and c.kind == "stuffy" else AIRY
        t_mod_all = pvlib.temperature.sapm_module(face_light, s.air, s.wind, params["a"], params["b"])
        t_mod = np.where(on, t_mod_all[minute], pvlib.temperature.sapm_module(
            face_light, s.air, s.wind, AIRY["a"], AIRY["b"])[minute]) + rng.normal(0, 0.7)
        t_cell = t_mod + light / 1000 * params["deltaT"]
        strength = rng.uniform(0.985, 1.015)
        reference = _module(light, t_cell)          # a healthy module here: the string's current
        eff = light * strength                       # the module's own light-generated current
        if c and c.kind == "soiling":
            eff = np.where(on, eff * (1 - c.size), eff)
        mpp = _module(eff, t_cell)
        if c and c.kind == "diode":
            short = _module(eff, t_cell, substrings=2)
            mpp = {k: np.where(on, short[k], v) for k, v in mpp.items()}
        if c and c.kind == "chimney":
            az_lo, az_hi, below = c.sun
            az, el = s.azimuth[minute], s.elevation[minute]
            hit = on & (az >= az_lo) & (az <= az_hi) & (el < below) & (beam * out > 0)
            bypassed = _module(light * strength, t_cell, substrings=2)
            dim = _module(diffuse * strength, t_cell)
            better = np.where(bypassed["p_mp"] >= dim["p_mp"], 1, 0).astype(bool)
            for k in mpp:
                mpp[k] = np.where(hit, np.where(better, bypassed[k], dim[k]), mpp[k])
        vin, cur, power = mpp["v_mp"], mpp["i_mp"], mpp["p_mp"]
        if c and c.kind == "open":
            vin, cur, power = np.where(on, mpp["v_oc"], vin), np.where(on, 0.0, cur), np.where(on, 0.0, power)
        keep = np.ones(len(t), bool)
        if c and c.kind == "radio":
            keep = ~(on & (rng.random(len(t)) < c.size))
        string_current = np.maximum(reference["i_mp"], 0.01)
        vout = np.minimum(vin * 0.99, power * 0.99 / string_current)
        vout = np.where(power > 0, vout, 0.0)
        duty = np.where(vin > 0, vout / np.maximum(vin, 1e-9), 0.0)
        if n.monitor_only:
            vout, duty = np.zeros(len(t)), np.zeros(len(t))
        rssi = np.clip(rng.normal(135 - (25 if c and c.kind == "radio" else 0), 6, len(t)), 0, 255)
        parts.append((t[keep], np.full(keep.sum(), idx), vin[keep], vout[keep], cur[keep], power[keep],
                      duty[keep], t_mod[keep], rssi[keep]))
    cols = [np.concatenate(col) for col in zip(*parts)]
    order = np.argsort(cols[0], kind="stable")
    return Reports((cols[0][order] * 1000).astype(np.int64), *(col[order] for col in cols[1:]))


def lines(site: Site) -> Iterator[str]:
    """The reports in the schema of tigo_power_report (docs/metrics.md), as the ingest writes them."""
    r = generate(site)
    tags = [f"tigo_power_report,barcode={n.barcode},gateway_id={n.gateway},node_id={n.node},src=tigo"
            for n in site.nodes]
    step = 100_000  # rows turned into Python numbers at a time
    for k in range(0, len(r.time_ms), step):
        part = slice(k, k + step)
        rounded = [np.round(x[part], d).tolist() for x, d in ((r.vin, 2), (r.vout, 2), (r.cur, 3),
                                                              (r.power, 2), (r.duty, 3), (r.temp, 1))]
        for t, i, vin, vout, cur, p, duty, temp, rssi in zip(
                r.time_ms[part].tolist(), r.node[part].tolist(), *rounded, r.rssi[part].astype(int).tolist()):
            out = f",current_out_a={round(p * 0.99 / vout, 3)}" if vout else ""
            yield (f"{tags[i]} voltage_in_v={vin},voltage_out_v={vout},current_in_a={cur},power_w={p},"
                   f"duty_cycle={duty},temperature_c={temp},rssi={rssi}i{out} {t * 1_000_000}")


def write(db: Influx, site: Site, slice_lines: int = 60_000) -> int:
    """Every report of the site into `db`, one request per slice; returns how many."""
    count, chunk = 0, []
    for line in lines(site):
        chunk.append(line)
        if len(chunk) == slice_lines:
            db.write(("\n".join(chunk) + "\n").encode())
            count, chunk = count + len(chunk), []
    if chunk:
        db.write(("\n".join(chunk) + "\n").encode())
    return count + len(chunk)


_written: dict[tuple[str, Site], Influx] = {}


def database(server: InfluxServer, site: Site) -> Influx:
    """The site written once per test session into a database of its own on `server`: tests of
    several modules share it (written in seconds, read many times)."""
    key = (server.url, site)
    if key not in _written:
        name = f"phys{os.getpid()}_{len(_written)}"
        server.raw_query(f'CREATE DATABASE "{name}"')
        _written[key] = server.client(name)
        write(_written[key], site)
    return _written[key]
