"""The roof as an SVG picture (`tigo-execd layout --format svg`, and Home Assistant's image).

Pure text, no dependency: the faces to scale as roof.plan() places them, each panel a rectangle
with its name and value, filled by roof.Roof.colour(); a black triangle marks a current fault (a
shape, so it needs no colour to be seen), grey is silent, and a caption says when it is night.
Every panel's rectangle carries data-panel="GATEWAY/NODE" and data-value (the number it is
coloured by, "" when silent), so scripts and tests can read the picture.
"""

from __future__ import annotations

import time
from xml.sax.saxutils import escape, quoteattr

from tigo_execd.analysis.roof import GREY, NIGHT, SCALE, SILENCE_NS, Box, Roof, plan
from tigo_execd.clock import NS

PX_PER_MM = 0.06          # a 1134 mm wide panel is 68 px
HEAD, FOOT, PAD = 44.0, 56.0, 16.0
FONT = 12.0
CHAR_W = 0.6              # a sans-serif character is about this many font sizes wide
TITLES = {"power": "Power", "energy_today": "Energy today", "faults": "Fault kinds"}


def render(roof: Roof) -> str:
    p = plan(roof.layout)
    width = p.width * PX_PER_MM + 2 * PAD
    height = HEAD + p.height * PX_PER_MM + FOOT
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
           f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="DejaVu Sans, Arial, sans-serif" '
           f'data-metric="{roof.metric}">',
           f"<title>{escape(_caption(roof))}</title>",
           f'<rect width="{width:.0f}" height="{height:.0f}" fill="#ffffff"/>',
           _text(PAD, 26, _caption(roof), 15, "#000000", anchor="start", weight="bold")]
    for face, box in p.faces:
        b = _px(box)
        title = face.name + "".join(f" · {k} {v:g}°" for k, v in (("azimuth", face.azimuth),
                                                                   ("tilt", face.tilt)) if v is not None)
        out.append(f'<g data-face={quoteattr(face.name)}>')
        out.append(f'<rect x="{b.x:.1f}" y="{b.y:.1f}" width="{b.w:.1f}" height="{b.h:.1f}" rx="4" '
                   f'fill="#f4f4f4" stroke="#b0b0b0"/>')
        out.append(_text(b.x + 8, b.y + 19, title, 13, "#000000", anchor="start"))
        out.append("</g>")
    for face, spot, box in p.panels:
        b = _px(box)
        v = roof.value(spot)
        fill = roof.colour(face, spot)
        ink = _ink(fill)
        value = "" if v.value is None else f"{v.value:g}"
        fault = f" data-fault={quoteattr(v.kinds)}" if v.kinds else ""
        out.append(f'<g><rect data-panel="{spot.panel_id}" data-value="{value}"{fault} '
                   f'data-label={quoteattr(spot.label)} x="{b.x:.1f}" y="{b.y:.1f}" width="{b.w:.1f}" '
                   f'height="{b.h:.1f}" fill="{fill}" stroke="#ffffff" stroke-width="1.5"/>')
        cx = b.x + b.w / 2
        out.append(_text(cx, b.y + b.h * 0.36, spot.label, FONT, ink, fit=b.w - 6))
        out.append(_text(cx, b.y + b.h * 0.64, v.text, FONT, ink, fit=b.w - 6))
        if spot.panel_id and spot.label != spot.panel_id:  # where to find it on the bus as well
            out.append(_text(cx, b.y + b.h * 0.88, spot.panel_id, FONT - 3, ink, fit=b.w - 6))
        if v.kinds:
            r, t = b.x + b.w - 3, b.y + 3
            out.append(f'<polygon points="{r:.1f},{t:.1f} {r - 18:.1f},{t:.1f} {r:.1f},{t + 18:.1f}" '
                       f'fill="#000000" stroke="#ffffff" stroke-width="1"><title>'
                       f'{escape(v.kinds)}</title></polygon>')
        out.append("</g>")
    out += _legend(roof, HEAD + p.height * PX_PER_MM + 14)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _px(box: Box) -> Box:
    return Box(PAD + box.x * PX_PER_MM, HEAD + box.y * PX_PER_MM, box.w * PX_PER_MM, box.h * PX_PER_MM)


def _caption(roof: Roof) -> str:
    when = time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(roof.now_ns // NS))
    text = f"{TITLES[roof.metric]}, {when}"
    if roof.newest_ns is None:
        return f"{text}: no panel has reported in the last days"
    if roof.night:
        since = time.strftime("%Y-%m-%d %H:%M", time.localtime(roof.newest_ns // NS))
        return f"{text}: night, no panel has reported since {since}"
    return text


def _legend(roof: Roof, y: float) -> list[str]:
    stops = "".join(f'<stop offset="{i / (len(SCALE) - 1):g}" stop-color="{c}"/>'
                    for i, c in enumerate(SCALE))
    low, high, what = (("many", "none", "fault kinds") if roof.metric == "faults"
                       else ("0 %", "100 %", "of the best panel of its face"))
    x = PAD
    return ['<defs><linearGradient id="scale">' + stops + "</linearGradient></defs>",
            f'<rect x="{x}" y="{y:.1f}" width="160" height="14" fill="url(#scale)"/>',
            _text(x, y + 30, low, 11, "#000000", anchor="start"),
            _text(x + 160, y + 30, high, 11, "#000000", anchor="end"),
            _text(x + 168, y + 8, what, 11, "#000000", anchor="start"),
            f'<rect x="{x + 360}" y="{y:.1f}" width="14" height="14" fill="{GREY}"/>',
            _text(x + 380, y + 12, f"silent over {SILENCE_NS // NS // 60} min", 11, "#000000",
                  anchor="start"),
            f'<rect x="{x + 360}" y="{y + 20:.1f}" width="14" height="14" fill="{NIGHT}"/>',
            _text(x + 380, y + 32, "nothing to compare (night)", 11, "#000000", anchor="start"),
            f'<polygon points="{x + 580},{y:.1f} {x + 562},{y:.1f} {x + 580},{y + 18:.1f}" '
            'fill="#000000"/>',
            _text(x + 586, y + 12, "current fault", 11, "#000000", anchor="start")]


def _text(x: float, y: float, text: str, size: float, ink: str, anchor: str = "middle",
          weight: str = "normal", fit: float | None = None) -> str:
    squeeze = ""
    if fit is not None and len(text) * size * CHAR_W > fit:
        squeeze = f' textLength="{fit:.1f}" lengthAdjust="spacingAndGlyphs"'
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size:g}" fill="{ink}" text-anchor="{anchor}" '
            f'font-weight="{weight}" dominant-baseline="middle"{squeeze}>{escape(text)}</text>')


def _ink(fill: str) -> str:
    """Black on light fills, white on dark ones (WCAG relative luminance)."""
    r, g, b = (int(fill[k:k + 2], 16) / 255 for k in (1, 3, 5))
    lum = sum(w * (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4)
              for w, c in zip((0.2126, 0.7152, 0.0722), (r, g, b)))
    return "#000000" if lum > 0.18 else "#ffffff"
