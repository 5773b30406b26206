"""The roof picture as a Home Assistant MQTT `image` entity of the site device (issue 22).

Home Assistant's MQTT image (homeassistant/components/mqtt/image.py, since 2023.7) subscribes to
exactly one of `image_topic`, whose payload is the picture's bytes (`content_type`, default
image/jpeg; Home Assistant only checks the `image/` prefix, so image/svg+xml is served as it is),
or `url_topic`, whose payload is a URL Home Assistant fetches. tigo-execd serves no URL, so the
SVG itself is the payload: a `tigo_ha_image` line whose `topic` tag is BASE/site and whose `roof`
field is the SVG, which the health instance's Telegraf publishes raw and retained to
BASE/site/roof (outputs.mqtt with layout "field"). Line protocol has no newline inside a string:
lineproto turns the SVG's newlines into spaces, which SVG ignores between elements.

The discovery config names the site device by its identifier only: Home Assistant adds the entity
to the device the other site entities describe. `homeassistant --layout` prints both lines every
minute the picture changed; `layout --format homeassistant` prints them once.
"""

from __future__ import annotations

from tigo_execd import lineproto, measurements
from tigo_execd.analysis import roof_svg
from tigo_execd.analysis.roof import Roof

FIELD = "roof"
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
