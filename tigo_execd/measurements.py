"""The measurements tigo-execd writes, named once: the dashboard, the health instance's confs and
users' queries read them, so they never change (docs/metrics.md lists their tags and fields)."""

from __future__ import annotations

POWER_REPORT = "tigo_power_report"  # one line per optimizer report (`run`; its --measurement)
INGEST = "tigo_ingest"              # `run`'s self-metrics
HEALTH = "tigo_health"              # the watchdog's verdict, one line per check
NODE_HEALTH = "tigo_node_health"    # the watchdog: one line per silent optimizer
PANEL_DAY = "tigo_panel_day"       # the watchdog: one line per panel and day (faults' panel days)
HA_CONFIG = "tigo_ha_config"        # `homeassistant`: one discovery config per entity (to MQTT only)
HA_STATE = "tigo_ha_state"          # `homeassistant`: one state per panel and for the site (MQTT only)
HA_IMAGE = "tigo_ha_image"          # `homeassistant --layout`: the roof SVG, an image entity (MQTT only)
