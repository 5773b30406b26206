"""`tigo-execd heal` run in this process (tigo_execd.cli.main), at its edges: the settling time, the
window's start rounded to the hour, batches, what the summary says and what a dry run or InfluxDB's
refusals leave written. In-process so that mutation testing (scripts/mutation.sh) reaches heal.py;
tests/test_heal.py runs the command as a child process."""

from __future__ import annotations

import time

from support.heal_journal import HOUR, NOW, NOW_NS, NS, T0, expected, journal_of, reports, stored
from support.servers import free_port
from tigo_execd import cli, exitcodes
from tigo_execd.health import heal

SETTLED = NOW_NS - heal.SETTLE_NS  # a report must be older than this


def run_heal(db, journal, *args: str, url: str | None = None) -> int:
    return cli.main(["heal", "--journal", str(journal), "--influx-url", url or db.url, "--db", db.db,
                     "--now", NOW, *args])


def one_report(ts: int, node: int = 1) -> list[bytes]:
    return reports(hours=1, nodes=node, per_hour=1, start=ts - 123_456_789)[-1:]


def test_a_report_is_healed_once_it_is_older_than_the_settling_time(influx_db, tmp_path, capsys, logged):
    at_edge, older = one_report(SETTLED, 1), one_report(SETTLED - 1, 2)
    assert run_heal(influx_db, journal_of(tmp_path / "j", at_edge + older)) == 0
    assert stored(influx_db) == expected(older)
    assert capsys.readouterr().out.splitlines()[-1] == "restored 1 reports (1 lines written)"


def test_the_window_starts_at_the_whole_hour_before_since(influx_db, tmp_path, capsys, logged):
    hour = T0 + HOUR  # 10:00
    before, inside = one_report(hour - 1, 1), one_report(hour, 2)
    assert run_heal(influx_db, journal_of(tmp_path / "j", before + inside), "--since",
                    "2026-11-20T10:59:59Z") == 0
    assert stored(influx_db) == expected(inside)
    assert run_heal(influx_db, tmp_path / "j", "--days", str((NOW_NS - hour + 1) / (24 * HOUR))) == 0
    assert stored(influx_db) == expected(before + inside)  # 09:59:59.999999999 is in 09:00's hour
    assert "heal: comparing" in logged.getvalue()


def test_the_summary_says_what_was_missing_hour_by_hour(influx_db, tmp_path, capsys, logged):
    lines = reports(hours=2, nodes=2, per_hour=3)
    influx_db.write(b"".join(lines[:6]))  # the first hour is complete
    journal = journal_of(tmp_path / "j", lines)
    assert run_heal(influx_db, journal, "--dry-run") == 0
    assert capsys.readouterr().out.splitlines() == [
        f"journal {journal}: 2 files, 12 reports from 2026-11-20T09:00:00Z to 2026-11-20T10:40:00Z",
        f"compared 4 optimizer-hours with InfluxDB database '{influx_db.db}': 1 hours lack reports",
        "  2026-11-20T10:00:00Z tigo_power_report: 6 reports missing",
        "would restore 6 reports (6 lines written if not a dry run)"]
    assert stored(influx_db) == expected(lines[:6])  # a dry run writes nothing
    assert "would restore 6 reports" in logged.getvalue()
    assert run_heal(influx_db, journal) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "restored 6 reports (6 lines written)"
    assert stored(influx_db) == expected(lines)


def test_more_than_a_batch_is_written_whole(influx_db, tmp_path, capsys, logged):
    lines = reports(hours=1, nodes=30, per_hour=200)  # 6,000 lines: two batches
    assert len(lines) > heal.BATCH_LINES
    assert run_heal(influx_db, journal_of(tmp_path / "j", lines)) == 0
    assert sorted(stored(influx_db)) == expected(lines)
    n = len(lines)
    assert capsys.readouterr().out.splitlines()[-1] == f"restored {n} reports ({n} lines written)"


def test_influxdb_down_writes_nothing_and_says_what_to_check(influx_db, tmp_path, capsys, logged):
    assert run_heal(influx_db, journal_of(tmp_path / "j", reports(hours=1)),
                    url=f"http://127.0.0.1:{free_port()}") == exitcodes.UNAVAILABLE
    assert capsys.readouterr().out == ""
    assert "check that InfluxDB runs" in logged.getvalue()
    assert stored(influx_db) == []


def test_points_older_than_the_retention_policy_are_a_warning_and_the_rest_is_written(
        influxd, influx_db, tmp_path, capsys, logged):
    influxd.raw_query(f'CREATE RETENTION POLICY "hour" ON "{influx_db.db}" DURATION 1h REPLICATION 1 DEFAULT')
    now = time.time_ns() // NS * NS
    old, recent = one_report(now - 3 * HOUR, 1), one_report(now - 10 * 60 * NS, 2)
    journal = journal_of(tmp_path / "j", old + recent)
    assert cli.main(["heal", "--journal", str(journal), "--influx-url", influx_db.url, "--db", influx_db.db,
                     "--days", "1"]) == 0
    assert "W! heal: InfluxDB kept only part of a batch" in logged.getvalue()
    assert stored(influx_db) == expected(recent)
