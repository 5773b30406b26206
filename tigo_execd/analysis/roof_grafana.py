"""`tigo-execd layout --format grafana`: the roof as a Grafana Canvas panel for the shipped dashboard.

Grafana's core Canvas panel (Grafana 10 or later) with, per drawn panel, a rectangle placed as in
the SVG (the same `roof.plan` geometry) whose colour is bound to that panel's last power: the query
returns one series per optimizer, aliased `GATEWAY/NODE` (the SVG's `data-panel`), and the
rectangle's background takes the colour the thresholds give that field's last value (the SVG's
viridis scale, in 11 steps). A panel without a report in the last 5 minutes (silent, or night)
has no field: Grafana falls back to the fixed grey. A white strip on each rectangle carries the
panel's name above its power.

The query is the dashboard's own (`"$rp"."$measurement"` and its gateway/node/barcode/panel
variables, like "Current power"), so the panel belongs in grafana/tigo-dashboard.json. Placement
uses the `scale` constraint (left/top/right/bottom in percent of the panel): the roof fills the
panel at any width. Thresholds are percentages of `max` (PEAK_W, the demo's panels' peak): one
number to change for other panels. Checked against Grafana's published types in tests/test_grafana_types.py.
"""

from __future__ import annotations

import json
from typing import Any

from tigo_execd.analysis.energy import FRESH_NS
from tigo_execd.analysis.roof import GREY, Box, Plan, Roof, colour, plan
from tigo_execd.clock import NS

DATASOURCE = {"type": "influxdb", "uid": "${datasource}"}
FRESH = f"{FRESH_NS // (60 * NS)}m"  # the SVG's and Home Assistant's "now": no newer report, grey
TITLE = "Roof"
PEAK_W = 400.0        # the field's max: the thresholds are percentages of it
PANEL_ID = 100        # above the dashboard's ids
WIDTH_PX = 1200       # a full-width panel on a common screen, to size the grid height
GRID_ROW_PX = 38      # Grafana's grid: 30 px rows and 8 px gaps
STEPS = 10            # thresholds every 10 % of max, each the SVG's colour at that fraction
LABEL_SHARE = 0.3     # of a rectangle's height: the name strip on top, the power strip below
QUERY = (
    'SELECT last("power_w") FROM "$rp"."$measurement" WHERE time > ${__to}ms - ' + FRESH
    + ' AND time <= ${__to}ms AND "gateway_id" =~ /^$gateway$/ AND "node_id" =~ /^$node$/'
    ' AND "barcode" =~ /^$barcode$/ AND "panel" =~ /^$panel$/ GROUP BY "gateway_id", "node_id"')
ALIAS = "$tag_gateway_id/$tag_node_id"  # Spot.panel_id; the alias regex stops at "/"


def render(roof: Roof) -> str:
    """`layout --format grafana`: the panel's JSON (Grafana queries the values itself)."""
    return json.dumps(panel(plan(roof.layout)), indent=1, ensure_ascii=False) + "\n"


def panel(drawing: Plan) -> dict[str, Any]:
    """The Canvas panel JSON for the drawing."""
    elements: list[dict[str, Any]] = []
    for face, box in drawing.faces:
        heading = face.name + "".join(f", {k} {v:g}°" for k, v in (("azimuth", face.azimuth),
                                                                   ("tilt", face.tilt)) if v is not None)
        top = min((b.y for f, _, b in drawing.panels if f is face), default=box.y + box.h)
        elements.append(_text(f"face {face.name}", _place(drawing, Box(box.x, box.y, box.w, top - box.y)),
                              {"mode": "fixed", "fixed": heading}, "left", None))
    for _, spot, box in drawing.panels:
        field = spot.panel_id
        name = field or spot.token
        strip = box.h * LABEL_SHARE
        elements.append({
            "type": "rectangle", "name": name, "constraint": {"horizontal": "scale", "vertical": "scale"},
            "placement": _place(drawing, box),
            "background": {"color": {"field": field, "fixed": GREY} if field else {"fixed": GREY}},
            "border": {"color": {"fixed": "#ffffff"}, "width": 1},
            "config": {"align": "center", "valign": "middle"}})
        elements.append(_text(f"{name} name", _place(drawing, Box(box.x, box.y, box.w, strip)),
                              {"mode": "fixed", "fixed": spot.label}, "center", "#ffffffcc"))
        if field:
            elements.append(_text(f"{name} power", _place(drawing, Box(box.x, box.y + box.h - strip, box.w,
                                                                    strip)),
                                  {"mode": "field", "field": field, "fixed": ""}, "center", "#ffffffcc"))
    rows = max(6, round(WIDTH_PX * drawing.height / max(drawing.width, 1.0) / GRID_ROW_PX) + 1)
    steps = [{"color": colour(i / STEPS), "value": None if i == 0 else round(100 * (i - 0.5) / STEPS, 2)}
             for i in range(STEPS + 1)]
    return {
        "type": "canvas", "title": TITLE, "id": PANEL_ID,
        "description": "Each panel where it sits, coloured by its last power (viridis, dark = low, "
                       f"yellow = near {PEAK_W:g} W, the max in the field settings); grey: no report "
                       f"in the {FRESH} before the range end. Made by `tigo-execd layout --format grafana`.",
        "datasource": DATASOURCE,
        "targets": [{"datasource": DATASOURCE, "refId": "A", "rawQuery": True, "query": QUERY,
                     "resultFormat": "time_series", "alias": ALIAS}],
        "fieldConfig": {"defaults": {"unit": "watt", "decimals": 0, "min": 0, "max": PEAK_W,
                                     "color": {"mode": "thresholds"},
                                     "thresholds": {"mode": "percentage", "steps": steps}},
                        "overrides": []},
        "options": {"inlineEditing": False, "panZoom": False, "infinitePan": False,
                    "showAdvancedTypes": False,
                    "root": {"name": TITLE, "type": "frame", "elements": elements}},
        "gridPos": {"x": 0, "y": 0, "w": 24, "h": rows},
    }


def _place(drawing: Plan, box: Box) -> dict[str, float]:
    """The `scale` constraint's placement: distances from the panel's edges in percent."""
    w, h = max(drawing.width, 1.0), max(drawing.height, 1.0)
    return {"left": round(100 * box.x / w, 2), "top": round(100 * box.y / h, 2),
            "right": round(100 * (w - box.x - box.w) / w, 2),
            "bottom": round(100 * (h - box.y - box.h) / h, 2)}


def _text(name: str, placement: dict[str, float], text: dict[str, str], align: str,
          background: str | None) -> dict[str, Any]:
    element: dict[str, Any] = {
        "type": "text", "name": name, "constraint": {"horizontal": "scale", "vertical": "scale"},
        "placement": placement,
        "config": {"text": text, "color": {"fixed": "#000000" if background else "#808080"},
                   "align": align, "valign": "middle"}}
    if background:
        element["background"] = {"color": {"fixed": background}}
    return element
