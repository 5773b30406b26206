"""`tigo-execd homeassistant`: the site and every panel for Home Assistant, as line protocol.

Runs beside the watchdog in the health Telegraf instance (inputs.execd, `signal = "STDIN"`): each
`\\n` reads InfluxDB back and prints `tigo_ha_config` lines (Home Assistant MQTT discovery configs)
and `tigo_ha_state` lines (retained states); each line's `topic` tag is where it goes, and the
instance's `[[outputs.mqtt]]` turn the fields into the JSON payloads. No MQTT here: a broker that
is down must never touch this process or the data path.

Queries per check, each with a time window ending at the check's now: the newest report per
(gateway, node) over --inventory-days (names, last values), the 5-minute buckets completed since
the previous check and the newest ones (energy today, see analysis/energy.py: the Grafana dashboard's
definition, never lower within a day, the same after a restart); and every KINDS_EVERY_NS the
panels' fault kinds of their newest `tigo_panel_day` (written once a day). A state is printed when it
changed or every --state-every-min; configs at start, when they change (a new panel, a new name)
and again once per --config-every-min, spread over the minutes. With --layout, the roof picture
too (analysis/roof_homeassistant.py: an MQTT image entity of the site device).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tigo_execd import __version__, argtypes, exitcodes, influx, lineproto, measurements
from tigo_execd.analysis.energy import FRESH_NS, EnergyToday
from tigo_execd.analysis.nodes import current_kinds
from tigo_execd.analysis.roof_homeassistant import RoofImage
from tigo_execd.analysis.roof_homeassistant import config as roof_config
from tigo_execd.cli import Subparsers, add_log_level, waiting_for_telegraf
from tigo_execd.clock import NS, iso_utc
from tigo_execd.identity import layout as layout_file
from tigo_execd.identity.registry import id_sort_key
from tigo_execd.influx import Influx, InfluxError
from tigo_execd.log import log

MIN_NS = 60 * NS
KINDS_EVERY_NS = 15 * MIN_NS  # tigo_panel_day changes once a day: no need to ask every minute
_ID = re.compile(r"[A-Za-z0-9_-]+")
Fields = dict[str, lineproto.Field | None]


@dataclass
class Settings:
    influx: Influx
    rp: str
    measurement: str
    discovery_prefix: str   # "" = no discovery configs
    health_topic: str
    topic_base: str
    id_prefix: str
    site_name: str
    inventory_days: float
    node_silence_min: float
    state_every_min: float
    config_every_min: float


@dataclass
class Panel:
    gateway_id: str
    node_id: str
    last_ns: int
    values: dict[str, Any]

    @property
    def key(self) -> tuple[str, str]:
        return self.gateway_id, self.node_id

    @property
    def slug(self) -> str:
        """`4609_2`: ids are decimal text (the converter writes them), so this fits [a-zA-Z0-9_-]."""
        return f"{self.gateway_id}_{self.node_id}"

    @property
    def name(self) -> str:
        """The names file's `panel`, else the barcode, else gateway/node."""
        return str(self.values.get("panel") or self.values.get("barcode")
                   or f"{self.gateway_id}/{self.node_id}")


@dataclass
class Publisher:
    """What was printed, so that unchanged states and configs are not printed every minute."""

    s: Settings
    energy: EnergyToday = field(default_factory=EnergyToday)
    states: dict[str, tuple[Fields, int]] = field(default_factory=dict)
    configs: dict[str, Fields] = field(default_factory=dict)
    roof: RoofImage | None = None  # --layout: the roof picture
    checks: int = 0
    kinds: dict[tuple[str, str], str] = field(default_factory=dict)
    kinds_read_ns: int | None = None
    failure: InfluxError | None = None  # why the last check printed nothing (--once exits with it)

    def check(self, now_ns: int) -> str:
        """One minute's lines; InfluxDB trouble prints nothing (the health sensor says why)."""
        try:
            panels = self._panels(now_ns)
            self.energy.advance(self.s.influx, influx.target(self.s.rp, self.s.measurement), now_ns)
            self._read_kinds(now_ns)
        except InfluxError as exc:
            self.failure = exc
            log.warn(f"homeassistant: no update this minute: {exc}", key="ha_influx")
            return ""
        self.failure = None
        out = []
        refresh_slots = max(1, int(self.s.config_every_min))
        slot = self.checks % refresh_slots
        self.checks += 1
        if self.s.discovery_prefix:
            for topic, fields in self._site_configs():
                out.append(self._config(topic, fields, slot == 0))
            for i, panel in enumerate(panels):
                for topic, fields in self._panel_configs(panel):
                    out.append(self._config(topic, fields, i % refresh_slots == slot))
        out += self._states(panels, now_ns)
        out.append(self._roof_line(now_ns))
        return "".join(line for line in out if line)

    # ------------------------------------------------------------------ reading

    def _panels(self, now_ns: int) -> list[Panel]:
        s = self.s
        window = int(s.inventory_days * 1440 * MIN_NS)
        series = s.influx.query(
            'SELECT last("power_w") AS "power_w", "voltage_in_v", "temperature_c", "rssi", '
            f'"barcode", "panel" FROM {influx.target(s.rp, s.measurement)} '
            f'WHERE time > {now_ns - window} AND time <= {now_ns} GROUP BY "gateway_id", "node_id"')
        panels = [Panel(tags.get("gateway_id", ""), tags.get("node_id", ""), int(row["time"]), row)
                  for tags, row in influx.rows(series)]
        panels = [p for p in panels if _ID.fullmatch(p.slug)]
        return sorted(panels, key=lambda p: (id_sort_key(p.gateway_id), id_sort_key(p.node_id)))

    def _read_kinds(self, now_ns: int) -> None:
        """The panels' current fault kinds, read again after KINDS_EVERY_NS (or a clock step back)."""
        if self.kinds_read_ns is None or not 0 <= now_ns - self.kinds_read_ns < KINDS_EVERY_NS:
            self.kinds = current_kinds(self.s.influx, now_ns)
            self.kinds_read_ns = now_ns

    def _roof_line(self, now_ns: int) -> str:
        """The roof picture when one is due; InfluxDB trouble skips it this minute."""
        try:
            return self.roof.line(self.s.influx, influx.target(self.s.rp, self.s.measurement),
                                  self.s.topic_base, now_ns) if self.roof else ""
        except InfluxError as exc:
            log.warn(f"homeassistant: no roof picture this minute: {exc}", key="ha_influx")
            return ""

    # ------------------------------------------------------------------ states

    def _states(self, panels: list[Panel], now_ns: int) -> list[str | None]:
        newest = max((p.last_ns for p in panels), default=0)
        site_awake = now_ns - newest <= FRESH_NS  # others report: a silent panel is missing
        silence = int(self.s.node_silence_min * MIN_NS)
        out = []
        site_power = 0.0
        for p in panels:
            fresh = now_ns - p.last_ns <= FRESH_NS
            power = round(float(p.values.get("power_w") or 0), 1) if fresh else 0.0
            site_power += power
            fields: Fields = {
                "status": "offline" if site_awake and now_ns - p.last_ns > silence else "online",
                "power_w": power,
                "energy_kwh": round(self.energy.published.get(p.key, 0.0), 3),
                "voltage_in_v": _number(p.values.get("voltage_in_v"), 2) if fresh else 0.0,
                "temperature_c": _number(p.values.get("temperature_c"), 1) if fresh else None,
                "rssi": int(p.values["rssi"]) if fresh and p.values.get("rssi") is not None else None,
                "last_report": iso_utc(p.last_ns),
                "faults": self.kinds.get(p.key) or "none",
            }
            out.append(self._state(f"{self.s.topic_base}/panel/{p.slug}", fields, now_ns))
        site: Fields = {"power_w": round(site_power, 1),
                        "energy_kwh": round(sum(self.energy.published.values()), 3)}
        out.append(self._state(f"{self.s.topic_base}/site", site, now_ns))
        return out

    def _state(self, topic: str, fields: Fields, now_ns: int) -> str | None:
        sent = self.states.get(topic)
        if sent and sent[0] == fields and now_ns - sent[1] < self.s.state_every_min * MIN_NS:
            return None
        self.states[topic] = (fields, now_ns)
        return lineproto.line(measurements.HA_STATE, {"topic": topic}, fields, now_ns)

    # ------------------------------------------------------------------ discovery configs

    def _config(self, topic: str, fields: Fields, refresh: bool) -> str | None:
        if self.configs.get(topic) == fields and not refresh:
            return None
        self.configs[topic] = fields
        return lineproto.line(measurements.HA_CONFIG, {"topic": topic}, fields)

    def _entity(self, component: str, object_id: str, fields: Fields) -> tuple[str, Fields]:
        return (f"{self.s.discovery_prefix}/{component}/{object_id}/config",
                {"uniq_id": object_id, **fields})

    def _device(self, ident: str, name: str, model: str, **extra: str | None) -> Fields:
        return {"dev_ids": ident, "dev_name": name, "dev_mf": "Tigo (read by tigo-execd)",
                "dev_mdl": model, "dev_sw": __version__, **extra}

    def _site_configs(self) -> Iterator[tuple[str, Fields]]:
        s, ident = self.s, f"{self.s.id_prefix}_site"
        dev = self._device(ident, s.site_name, "TS4 site")
        health = {"stat_t": s.health_topic, "exp_aft": 300, **dev}
        yield self._entity("binary_sensor", f"{ident}_problem", {
            "name": "Problem", "dev_cla": "problem",
            "val_tpl": "{{ 'OFF' if value_json.status == 'OK' else 'ON' }}",
            "json_attr_t": s.health_topic,
            "json_attr_tpl": "{{ {'reason': value_json.reason, 'message': value_json.message "
                             "if value_json.status != 'OK' else ''} | tojson }}", **health})
        yield self._entity("sensor", f"{ident}_reason", {
            "name": "Reason", "ic": "mdi:stethoscope", "val_tpl": "{{ value_json.reason }}", **health})
        yield self._entity("sensor", f"{ident}_lag", {
            "name": "Data lag", "unit_of_meas": "min", "dev_cla": "duration", "stat_cla": "measurement",
            "val_tpl": "{{ value_json.lag_min | default('None') }}", **health})
        yield self._entity("sensor", f"{ident}_faults", {  # unknown until the first analysis
            "name": "Panel faults", "ic": "mdi:solar-panel", "stat_cla": "measurement",
            "val_tpl": "{{ value_json.faults | default('None') }}", **health})
        own = {"stat_t": f"{s.topic_base}/site", "exp_aft": self._expire_s(), **dev}
        yield self._entity("sensor", f"{ident}_power", {
            "name": "Power", "unit_of_meas": "W", "dev_cla": "power", "stat_cla": "measurement",
            "val_tpl": "{{ value_json.power_w }}", **own})
        yield self._entity("sensor", f"{ident}_energy_today", {
            "name": "Energy today", "unit_of_meas": "kWh", "dev_cla": "energy",
            "stat_cla": "total_increasing", "val_tpl": "{{ value_json.energy_kwh }}", **own})
        if self.roof:  # the device by its identifier only, as `layout --format homeassistant` prints it
            yield roof_config(s.discovery_prefix, s.id_prefix, s.topic_base)

    def _panel_configs(self, p: Panel) -> Iterator[tuple[str, Fields]]:
        s = self.s
        ident = f"{s.id_prefix}_{p.slug}"
        topic = f"{s.topic_base}/panel/{p.slug}"
        common: Fields = {
            "stat_t": topic, "exp_aft": self._expire_s(), "avty_t": topic,
            "avty_tpl": "{{ value_json.status }}",
            **self._device(ident, p.name, "TS4 optimizer", dev_sn=p.values.get("barcode"),
                           dev_via=f"{s.id_prefix}_site")}
        for key, extra in (
                ("power", {"name": "Power", "unit_of_meas": "W", "dev_cla": "power",
                           "stat_cla": "measurement", "val_tpl": "{{ value_json.power_w }}"}),
                ("energy_today", {"name": "Energy today", "unit_of_meas": "kWh", "dev_cla": "energy",
                                  "stat_cla": "total_increasing",
                                  "val_tpl": "{{ value_json.energy_kwh }}"}),
                ("voltage_in", {"name": "Voltage in", "unit_of_meas": "V", "dev_cla": "voltage",
                                "stat_cla": "measurement", "val_tpl": "{{ value_json.voltage_in_v }}"}),
                ("temperature", {"name": "Temperature", "unit_of_meas": "°C",
                                 "dev_cla": "temperature", "stat_cla": "measurement",
                                 "val_tpl": "{{ value_json.temperature_c | default('None') }}"}),
                ("rssi", {"name": "RSSI", "stat_cla": "measurement", "ent_cat": "diagnostic",
                          "ic": "mdi:signal", "val_tpl": "{{ value_json.rssi | default('None') }}"}),
                ("last_report", {"name": "Last report", "dev_cla": "timestamp", "ent_cat": "diagnostic",
                                 "val_tpl": "{{ value_json.last_report }}"}),
                ("faults", {"name": "Faults", "ic": "mdi:alert-outline",
                            "val_tpl": "{{ value_json.faults | default('None') }}"})):
            yield self._entity("sensor", f"{ident}_{key}", {**extra, **common})

    def _expire_s(self) -> int:
        """Three missed state messages: the health instance is gone."""
        return int(self.s.state_every_min * 60 * 3)


def _number(value: Any, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


def _topic_part(text: str) -> str:
    if "+" in text or "#" in text or text.startswith("/") or text.endswith("/") or "//" in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not a usable MQTT topic (no +, #, empty levels)")
    return text


def _ident(text: str) -> str:
    if not _ID.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r}: only letters, digits, _ and - are allowed")
    return text


def register(sub: Subparsers) -> None:
    p = sub.add_parser("homeassistant",
                       help="Home Assistant discovery and states (Telegraf inputs.execd, STDIN)",
                       description="Read InfluxDB once per line on stdin and print Home Assistant "
                                   "MQTT discovery configs and states as line protocol, for the "
                                   "health Telegraf instance's outputs.mqtt. Credentials: environment "
                                   "INFLUX_USER / INFLUX_PASS.")
    p.add_argument("--once", action="store_true", help="print one check's lines and exit")
    layout_file.add_arguments(p)  # the roof picture, as the site's Roof image
    influx.add_arguments(p)
    p.add_argument("--discovery-prefix", type=lambda t: _topic_part(t) if t else t,
                   default="homeassistant",
                   help="Home Assistant's discovery prefix (default: homeassistant; '' = no discovery)")
    p.add_argument("--health-topic", type=_topic_part, default="tigo/health",
                   help="where the watchdog's status is published (default: tigo/health)")
    p.add_argument("--topic-base", type=_topic_part, default="tigo",
                   help="states go to BASE/site and BASE/panel/GW_NODE (default: tigo)")
    p.add_argument("--id-prefix", type=_ident, default="tigo",
                   help="start of every unique_id and object id (default: tigo)")
    p.add_argument("--site-name", default="Tigo site", help="the site device's name (default: Tigo site)")
    p.add_argument("--inventory-days", type=argtypes.number(0, above=True), default=7.0, metavar="DAYS",
                   help="panels seen in this many days are published (default: 7)")
    p.add_argument("--node-silence-min", type=argtypes.number(0, above=True), default=30.0, metavar="MIN",
                   help="a panel silent this long while others report is unavailable (default: 30)")
    p.add_argument("--state-every-min", type=argtypes.number(0, above=True), default=5.0, metavar="MIN",
                   help="an unchanged state is sent again after this long; entities expire after "
                        "three times this (default: 5)")
    p.add_argument("--config-every-min", type=argtypes.number(0, above=True), default=60.0, metavar="MIN",
                   help="every config is sent again within this period, spread over it (default: 60)")
    p.add_argument("--now", type=argtypes.rfc3339_ns, help=argparse.SUPPRESS)  # tests: a fixed clock
    add_log_level(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    settings = Settings(influx.from_args(args), args.rp, args.measurement, args.discovery_prefix,
                        args.health_topic, args.topic_base, args.id_prefix, args.site_name,
                        args.inventory_days, args.node_silence_min, args.state_every_min,
                        args.config_every_min)
    clock: Callable[[], int] = (lambda: args.now) if args.now is not None else time.time_ns
    publisher = Publisher(settings, roof=RoofImage(args.layout) if args.layout else None)
    if not settings.discovery_prefix:
        log.info("homeassistant: discovery prefix empty: states only, no discovery configs")
    if args.once:
        sys.stdout.write(publisher.check(clock()))
        if publisher.failure:
            raise publisher.failure
        return exitcodes.OK
    waiting_for_telegraf("homeassistant", "prints one check's lines")
    for _ in iter(sys.stdin.buffer.readline, b""):  # one check per "\n" from Telegraf, until EOF
        try:
            sys.stdout.write(publisher.check(clock()))
            sys.stdout.flush()
        except BrokenPipeError:
            return exitcodes.OK
    return exitcodes.OK
