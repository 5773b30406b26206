"""What each panel made today, as the Grafana dashboard computes it, for every reader alike.

Home Assistant's energy sensors (health/homeassistant.py) and the roof picture (`tigo-execd layout
--metric energy_today`, analysis/roof.py) show the same number as the dashboard: a sum over
5-minute buckets of the mean power, from local midnight. It is here, in the analysis wing, so that
both may import it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tigo_execd import influx
from tigo_execd.clock import NS
from tigo_execd.influx import Influx

BUCKET_NS = 5 * 60 * NS   # the dashboard's (and the rollups') energy buckets
WH_DIVISOR = 12000        # mean W x 5 min = W / 12 Wh = W / 12000 kWh, as the dashboard writes it
SETTLE_NS = 60 * NS       # a bucket is summed once it ended this long ago (reports arrive late)
PROVISIONAL_REPORTS = 16  # a 5-minute bucket holds 15 reports (one per 20 s), rarely 16
FRESH_NS = 5 * 60 * NS    # a newer report is "now"; an older one reads 0 W (asleep or silent)


@dataclass
class EnergyToday:
    """kWh per (gateway, node) since local midnight: the dashboard's sum over 5-minute buckets.

    Buckets that ended over SETTLE_NS ago are summed once, as the dashboard sums them. The newer
    ones (at most two) count each report as a tenth of its bucket, sum / max(count, 10) instead of
    the mean: reports come every 20 s, 9 to a bucket, so this never exceeds what the bucket adds
    once complete, and grows with every report. Hence energy today never goes down, a restart
    reads the same number back from InfluxDB, and it trails the dashboard by under a tenth of
    the newest buckets. `published` also holds the highest value sent today, in case a bucket
    holds more reports (or some arrive over a minute late).
    """

    day_start_ns: int = -1
    summed_to_ns: int = 0
    settled: dict[tuple[str, str], float] = field(default_factory=dict)
    published: dict[tuple[str, str], float] = field(default_factory=dict)

    def advance(self, db: Influx, target: str, now_ns: int) -> None:
        """Bring it up to now_ns from `target` (influx.target of the power reports)."""
        midnight = local_midnight_ns(now_ns)
        if midnight != self.day_start_ns:
            self.day_start_ns, self.summed_to_ns, self.settled, self.published = midnight, midnight, {}, {}
        end = (now_ns - SETTLE_NS) // BUCKET_NS * BUCKET_NS
        if end > self.summed_to_ns:
            window = f"time >= {self.summed_to_ns} AND time < {end}"
            for key, row in _by_node(db.query(
                    f'SELECT sum("p") AS "p" FROM (SELECT mean("power_w") AS "p" FROM '
                    f'{target} WHERE {window} GROUP BY time(5m), '
                    f'"gateway_id", "node_id" fill(none)) WHERE {window} GROUP BY "gateway_id", "node_id"')):
                self.settled[key] = self.settled.get(key, 0.0) + max(0.0, row["p"] or 0.0) / WH_DIVISOR
            self.summed_to_ns = end
        recent: dict[tuple[str, str], float] = {}
        for key, row in _by_node(db.query(
                f'SELECT sum("power_w") AS "s", count("power_w") AS "n" FROM '
                f"{target} WHERE time >= {self.summed_to_ns} AND "
                f'time <= {now_ns} GROUP BY time(5m), "gateway_id", "node_id" fill(none)')):
            share = max(0.0, row["s"] or 0.0) / max(row["n"] or 0, PROVISIONAL_REPORTS)
            recent[key] = recent.get(key, 0.0) + share / WH_DIVISOR
        for key in self.settled.keys() | recent.keys():
            value = self.settled.get(key, 0.0) + recent.get(key, 0.0)
            self.published[key] = max(self.published.get(key, 0.0), value)


def _by_node(series: list[dict[str, Any]]) -> Iterator[tuple[tuple[str, str], dict[str, Any]]]:
    for tags, row in influx.rows(series):
        yield (tags.get("gateway_id", ""), tags.get("node_id", "")), row


def local_midnight_ns(now_ns: int) -> int:
    """The start of the local day (TZ, or /etc/localtime) holding now, DST included."""
    t = time.localtime(now_ns // NS)
    return int(time.mktime((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0, 0, 0, -1))) * NS
