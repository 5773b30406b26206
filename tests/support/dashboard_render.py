"""Draws what the dashboard's main panels show, from the results of its own queries, with matplotlib.

This is a rendering of the query results (for the README and for a person checking the tests), not a
Grafana screenshot: Grafana is not part of the test setup.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt

Series = list[dict[str, Any]]


GAP_MS = 600000  # the dashboard's spanNulls/insertNulls: longer gaps (nights) are not bridged


def _xy(series: dict[str, Any], column: int = 1) -> tuple[list[datetime], list[float]]:
    """Times and values with NaN where Grafana breaks the line: nulls, and gaps longer than GAP_MS."""
    xs, ys, prev = [], [], None
    for v in series["values"]:
        if prev is not None and v[0] - prev > GAP_MS:
            xs.append(datetime.fromtimestamp((prev + 1) / 1000, UTC))
            ys.append(float("nan"))
        xs.append(datetime.fromtimestamp(v[0] / 1000, UTC))
        ys.append(float("nan") if v[column] is None else v[column])
        prev = v[0]
    return xs, ys


def _label(series: dict[str, Any]) -> str:
    t = series.get("tags", {})
    return f"{t.get('gateway_id')}/{t.get('node_id')} {t.get('barcode', '')}".strip()


def _axis(ax, title: str, unit: str) -> None:
    ax.set_title(title, fontsize=10, loc="left")
    ax.set_ylabel(unit)
    ax.xaxis.set_major_locator(mdates.HourLocator(byhour=range(0, 24, 6), tz=UTC))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%d. %H:%M", tz=UTC))
    ax.grid(alpha=0.3)


def _plot(ax, series: dict[str, Any], label: str, column: int = 1, **style) -> None:
    ax.plot(*_xy(series, column), label=label, **{"lw": 0.9, **style})


def _lines(ax, results: Series, title: str, unit: str, legend: bool = True) -> None:
    for s in results:
        _plot(ax, s, _label(s))
    _axis(ax, title, unit)
    if legend:
        ax.legend(fontsize=6, ncol=2, loc="upper left")


def render(panels: dict[str, list[Series]], path: Path) -> Path:
    """panels: panel title -> per target, the InfluxDB series (epoch ms) of the dashboard's queries."""
    fig, axes = plt.subplots(3, 2, figsize=(15, 11), constrained_layout=True)
    fig.suptitle("tigo-execd dashboard: its InfluxQL queries run against a synthetic day "
                 "(rendered with matplotlib, not a Grafana screenshot)", fontsize=11)

    ax = axes[0][0]
    total = panels["Total power"][0][0]
    raw = panels["Raw sum of power_w (debug)"][0][0]
    _plot(ax, raw, "raw sum of power_w per bucket (debug panel)", lw=0.6, color="0.7")
    _plot(ax, total, "Total power", lw=1.4, color="tab:orange")
    now = panels["Current power"][0][0]["values"][0][1]
    _axis(ax, f"Total power (current {now:.0f} W)", "W")
    ax.legend(fontsize=7, loc="upper left")

    ax = axes[0][1]
    per_node = sorted(panels["Energy today per node"][0], key=lambda s: sum(v[1] or 0 for v in s["values"]))
    ax.barh([_label(s) for s in per_node], [sum(v[1] or 0 for v in s["values"]) for s in per_node],
            color="tab:green")
    today = sum(v[1] or 0 for v in panels["Energy today"][0][0]["values"])
    days = panels["Energy per day"][0][0]["values"]
    ax.set_title(f"Energy today per node (total {today:.2f} kWh; per day: "
                 + ", ".join(f"{v[1]:.2f}" for v in days if v[1]) + " kWh)", fontsize=10, loc="left")
    ax.set_xlabel("kWh")
    ax.tick_params(labelsize=7)

    _lines(axes[1][0], panels["Power per node"][0], "Power per node (gateway/node barcode)", "W")
    _lines(axes[1][1], panels["RSSI"][0], "RSSI per node (raw 0-255)", "rssi", legend=False)
    _lines(axes[2][0], panels["Reports per node per minute"][0], "Reports per node per minute (expected 3)",
           "reports/min", legend=False)
    ax = axes[2][1]
    _axis(ax, "Ingest (tigo_ingest) per minute, health (tigo_health)", "per min")
    for s in panels["Ingest"][0]:
        for col in range(1, len(s["columns"])):
            _plot(ax, s, s["columns"][col], col)
    health = panels["Health"][0][0]
    ax2 = ax.twinx()
    ax2.step(*_xy(health), where="post", color="tab:red", lw=0.8, label="health code (0 OK, 1 WARN, 2 CRIT)")
    ax2.set_ylim(-0.2, 2.2)
    ax2.set_yticks([0, 1, 2], ["OK", "WARN", "CRIT"])
    ax.legend(fontsize=7, loc="upper left")
    ax2.legend(fontsize=7, loc="upper right")

    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
