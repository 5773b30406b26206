"""Every documented watchdog threshold (docs/reference/watchdog.md) at a value other than its default,
through the command line, and on both sides of its exact edge: a default moved, an option ignored or
a `<=` turned into `<` fails here."""

from __future__ import annotations

from support.watchdog_check import MIN, MUNICH, NOON, fleet, health, ingest_rows, ns, report


def write(db, lines: list[str]) -> None:
    db.write("".join(lines).encode())


def test_node_silence_min_counts_a_node_silent_only_past_its_edge(influx_db):
    now = ns(NOON)
    just_over = 10 + 1 / 60_000  # one millisecond past 10 min
    write(influx_db, fleet(now, {1: 0.5, 2: 10.0, 3: just_over}) + ingest_rows("taptap-cmd", now))
    fields, nodes = health(influx_db, *MUNICH, "--node-silence-min", "10")
    assert (fields["status"], fields["reason"]) == ("WARN", "nodes_silent")
    assert (fields["nodes_reporting"], fields["nodes_silent"]) == (2, 1)
    assert fields["silent_nodes"] == "4609/3 (4-A3Z)"
    assert "for over 10 min" in fields["message"]
    assert [n.tags["node_id"] for n in nodes] == ["3"]
    fields, nodes = health(influx_db, *MUNICH)  # the default, 30 min: nobody is silent
    assert (fields["reason"], fields["nodes_silent"], nodes) == ("healthy", 0, [])


def test_day_lag_min_is_the_daylight_limit(influx_db):
    now = ns(NOON)
    write(influx_db, fleet(now, {1: 5.0, 2: 5.0}) + ingest_rows("taptap-cmd", now))
    fields, _ = health(influx_db, *MUNICH, "--day-lag-min", "5")
    assert (fields["status"], fields["reason"]) == ("OK", "healthy")
    fields, _ = health(influx_db, *MUNICH, "--day-lag-min", "4.9")
    assert (fields["status"], fields["reason"]) == ("CRIT", "stale_data")
    assert "limit 4.9 min" in fields["message"]


def test_max_lag_min_is_the_limit_without_a_location(influx_db):
    now = ns(NOON)
    write(influx_db, fleet(now, {1: 60.0}) + ingest_rows("taptap-cmd", now))
    fields, _ = health(influx_db, "--max-lag-min", "60")
    assert (fields["status"], fields["reason"]) == ("OK", "healthy")
    fields, _ = health(influx_db, "--max-lag-min", "59")
    assert (fields["status"], fields["reason"]) == ("CRIT", "stale_data")
    assert "limit 59 min" in fields["message"]


def test_day_elevation_above_the_sun_makes_noon_a_night(influx_db):
    now = ns(NOON)  # the sun is about 65 deg high
    write(influx_db, fleet(now, {1: 120.0}) + ingest_rows("taptap-cmd", now))
    fields, _ = health(influx_db, *MUNICH)
    assert fields["reason"] == "stale_data"
    fields, _ = health(influx_db, *MUNICH, "--day-elevation", "70")
    assert (fields["status"], fields["reason"]) == ("OK", "night")
    assert "below 70 deg" in fields["message"]


def test_inventory_days_is_how_far_back_a_node_is_expected(influx_db):
    now = ns(NOON)
    write(influx_db, fleet(now, {1: 0.5, 2: 0.5}) + [report(4609, 9, now - 3 * 1440 * MIN, "4-A9Z")]
          + ingest_rows("taptap-cmd", now))
    fields, _ = health(influx_db, *MUNICH)
    assert (fields["nodes_expected"], fields["silent_nodes"]) == (3, "4609/9 (4-A9Z)")
    fields, _ = health(influx_db, *MUNICH, "--inventory-days", "2")
    assert (fields["nodes_expected"], fields["reason"]) == (2, "healthy")


def test_ingest_window_min_is_how_long_taptap_must_be_down(influx_db):
    now = ns(NOON)
    write(influx_db, fleet(now, {1: 0.5}) + ingest_rows("taptap-cmd", now, 12)
          + ingest_rows("taptap-cmd", now, 3, taptap_running=0))  # the last 3 minutes: down
    fields, _ = health(influx_db, *MUNICH)
    assert fields["reason"] == "healthy"
    fields, _ = health(influx_db, *MUNICH, "--ingest-window-min", "3")
    assert (fields["status"], fields["reason"]) == ("CRIT", "taptap_not_running")
    assert "for over 3.0 min" in fields["message"]  # under 10 min: one decimal


def test_ingest_measurement_names_where_the_self_metrics_are(influx_db):
    now = ns(NOON)
    moved = [line.replace("tigo_ingest,", "bus_ingest,", 1)
             for line in ingest_rows("taptap-cmd", now, taptap_running=0)]
    write(influx_db, fleet(now, {1: 0.5}) + moved)
    fields, _ = health(influx_db, *MUNICH)
    assert fields["reason"] == "healthy"
    fields, _ = health(influx_db, *MUNICH, "--ingest-measurement", "bus_ingest")
    assert fields["reason"] == "taptap_not_running"
