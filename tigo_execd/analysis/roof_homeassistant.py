"""The roof picture as a Home Assistant MQTT `image` entity of the site device (issue 22).

Home Assistant's MQTT image (homeassistant/components/mqtt/image.py, since 2023.7) subscribes to
exactly one of `image_topic`, whose payload is the picture's bytes (`content_type`, default
image/jpeg; Home Assistant only checks the `image/` prefix, so image/svg+xml is served as it is),
or `url_topic`, whose payload is a URL Home Assistant fetches. tigo-execd serves no URL, so the
SVG itself is the payload: a `tigo_ha_image` line whose `topic` tag is BASE/site and whose `roof`
field is the SVG, which the health instance's Telegraf publishes raw and retained to
BASE/site/roof (outputs.mqtt with layout "field"). Line protocol has no newline inside a string:
lineproto turns the SVG's newlines into spaces, which SVG ignores between elements.

`layout --format homeassistant` prints the config and the picture once; `homeassistant --layout`
prints the config with its others and the picture through `RoofImage`, at most once a minute
(the picture shows the minute it was drawn, so it changes every minute), the layout file read
again when it changes and its tokens resolved against the reports each time (a panel that starts
reporting may make a token known).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tigo_execd import lineproto, measurements
from tigo_execd.analysis import roof_svg
from tigo_execd.analysis.roof import Roof, drawn, read_roof
from tigo_execd.clock import NS
from tigo_execd.identity import layout as layout_file
from tigo_execd.identity.layout import Drawing, LayoutError
from tigo_execd.influx import Influx
from tigo_execd.log import log

FIELD = "roof"
EVERY_NS = 60 * NS  # the picture is drawn and sent at most once a minute
CONTENT_TYPE = "image/svg+xml"
DISCOVERY_PREFIX = "homeassistant"  # the homeassistant command's defaults
TOPIC_BASE = "tigo"
ID_PREFIX = "tigo"
Fields = dict[str, lineproto.Field | None]


def image_topic(topic_base: str) -> str:
    return f"{topic_base}/site/{FIELD}"


def config(discovery_prefix: str, id_prefix: str, topic_base: str) -> tuple[str, Fields]:
    """The image entity's discovery topic and config fields (abbreviated keys, as the conf maps them)."""
    object_id = f"{id_prefix}_site_roof"
    return (f"{discovery_prefix}/image/{object_id}/config",
            {"uniq_id": object_id, "name": "Roof", "ic": "mdi:solar-panel-large",
             "img_t": image_topic(topic_base), "cont_type": CONTENT_TYPE, "dev_ids": f"{id_prefix}_site"})


def image_line(topic_base: str, svg: str, now_ns: int) -> str:
    """The picture as the line the health instance's image output publishes."""
    return lineproto.line(measurements.HA_IMAGE, {"topic": f"{topic_base}/site"}, {FIELD: svg}, now_ns) or ""


def render(roof: Roof) -> str:
    """`layout --format homeassistant`: the config and the picture as `homeassistant --layout`
    prints them with its default prefixes."""
    topic, fields = config(DISCOVERY_PREFIX, ID_PREFIX, TOPIC_BASE)
    return (lineproto.line(measurements.HA_CONFIG, {"topic": topic}, fields) or "") + image_line(
        TOPIC_BASE, roof_svg.render(roof), roof.now_ns)


@dataclass
class RoofImage:
    """The Roof image of `homeassistant --layout FILE`, one minute after another."""

    path: Path
    drawing: Drawing | None = None
    version: tuple[int, int] | None = None   # the file's (mtime_ns, size) when read
    told: list[str] | None = None            # the problems last logged, not to repeat them
    sent_ns: int | None = None               # when the picture was last sent

    def line(self, db: Influx, target: str, topic_base: str, now_ns: int) -> str:
        """The tigo_ha_image line when one is due, else ""; raises InfluxError."""
        if self.sent_ns is not None and 0 <= now_ns - self.sent_ns < EVERY_NS:
            return ""
        try:
            layout, _, last = drawn(db, target, self._drawing(), now_ns)
        except LayoutError as exc:
            self._tell(exc.problems)
            return ""
        self._tell([])
        self.sent_ns = now_ns
        return image_line(topic_base, roof_svg.render(read_roof(db, target, layout, "power", now_ns, last)),
                          now_ns)

    def _drawing(self) -> Drawing:
        """The file parsed, read again when its mtime or size changed; raises LayoutError."""
        try:
            st = os.stat(self.path)
            version = (st.st_mtime_ns, st.st_size)
        except OSError:
            version = None
        if self.drawing is None or version is None or version != self.version:
            self.drawing, self.version = None, version
            self.drawing = layout_file.read(self.path)
        return self.drawing

    def _tell(self, problems: list[str]) -> None:
        """Each set of problems once (E! lines); that the picture is back, once (I!)."""
        if self.told is not None and problems == self.told:
            return
        for problem in problems:
            log.error(f"homeassistant: {problem}")
        if problems:
            log.error("homeassistant: no Roof picture until the layout file is fixed")
        elif self.told:
            log.info("homeassistant: the layout file is fine again: the Roof picture is published")
        self.told = problems
