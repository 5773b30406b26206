"""`tigo-execd heal` and the watchdog's automatic heal, against a real InfluxDB."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from support.heal_journal import HOUR, NOW, NOW_NS, NS, T0, expected, journal_of, reports, stored
from support.proc import tigo_execd_argv
from support.telegraf_harness import parse_line


def heal(db, journal: Path, *args: str, env: dict[str, str] | None = None,
         url: str | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("INFLUX_USER", "INFLUX_PASS")}
    return subprocess.run(tigo_execd_argv("heal", "--journal", str(journal), "--influx-url",
                                          url or db.url, "--db", db.db, "--now", NOW, *args),
                          capture_output=True, text=True, timeout=120, env={**environ, **(env or {})})


def test_heal_restores_exactly_what_is_missing_and_a_second_run_finds_nothing(influx_db, tmp_path):
    lines = reports()
    journal = journal_of(tmp_path / "j", lines)
    hour1 = [x for x in lines if T0 + HOUR <= int(x.rsplit(b" ", 1)[1]) < T0 + 2 * HOUR]
    kept = [x for x in lines if int(x.rsplit(b" ", 1)[1]) < T0 + HOUR]
    kept += [x for x in hour1 if b"node_id=2," not in x] + [x for x in hour1 if b"node_id=2," in x][::2]
    influx_db.write(b"".join(kept))
    missing = len(lines) - len(kept)

    dry = heal(influx_db, journal, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would restore {missing} reports" in dry.stdout
    assert "  2026-11-20T10:00:00Z tigo_power_report: 15 reports missing" in dry.stdout
    assert "  2026-11-20T11:00:00Z tigo_power_report: 120 reports missing" in dry.stdout
    assert len(stored(influx_db)) == len(kept)

    first = heal(influx_db, journal)
    assert first.returncode == 0, first.stderr
    assert f"restored {missing} reports" in first.stdout
    assert "journal " in first.stdout and "3 files" in first.stdout
    assert all(x[:3] in ("I! ", "D! ") for x in first.stderr.splitlines()), first.stderr
    assert stored(influx_db) == expected(lines)  # every report, every value, each once

    second = heal(influx_db, journal)
    assert second.returncode == 0
    assert "nothing to do: InfluxDB holds every report of the journal" in second.stdout


def test_reports_twice_in_the_journal_are_restored_once_and_not_again(influx_db, tmp_path):
    lines = reports(hours=1)
    journal_of(tmp_path / "j", lines)
    journal_of(tmp_path / "j", lines)  # a second file with the same reports
    first = heal(influx_db, tmp_path / "j")
    assert f"restored {len(lines)} reports" in first.stdout, first.stdout + first.stderr
    assert stored(influx_db) == expected(lines)
    assert "nothing to do" in heal(influx_db, tmp_path / "j").stdout


def test_measurement_and_retention_policy_of_the_lines_are_kept(influx_db, influxd, tmp_path):
    influxd.raw_query(f'CREATE RETENTION POLICY "week" ON "{influx_db.db}" DURATION 3000d REPLICATION 1')
    lines = reports(hours=1, measurement="solar power")  # run --measurement "solar power"
    proc = heal(influx_db, journal_of(tmp_path / "j", lines), "--rp", "week")
    assert proc.returncode == 0 and f"restored {len(lines)} reports" in proc.stdout, proc.stderr
    assert stored(influx_db, '"week"."solar power"') == expected(lines)
    assert "nothing to do" in heal(influx_db, tmp_path / "j", "--rp", "week").stdout


def test_young_reports_and_reports_before_since_are_left_alone(influx_db, tmp_path):
    young = reports(hours=1, nodes=1, per_hour=1, start=NOW_NS - 30 * NS - 123_456_789)
    old = reports(hours=1, nodes=1, per_hour=2)
    proc = heal(influx_db, journal_of(tmp_path / "j", old + young), "--since", "2026-11-20T10:00:00Z")
    assert proc.returncode == 0 and "nothing to do" in proc.stdout, proc.stdout
    assert stored(influx_db) == []
    proc = heal(influx_db, tmp_path / "j", "--days", "1")
    assert "restored 2 reports" in proc.stdout  # the young one is still on its way through Telegraf


def test_a_missing_database_is_refused_then_created_with_create_db(influxd, tmp_path):
    db = influxd.client(f"gone{os.getpid()}")
    lines = reports(hours=1, nodes=2, per_hour=3)
    refused = heal(db, journal_of(tmp_path / "j", lines))
    assert refused.returncode == 70, refused.stderr
    assert f"database '{db.db}' does not exist" in refused.stderr and "--create-db" in refused.stderr
    assert db.db.encode() not in influxd.raw_query("SHOW DATABASES")  # a typo creates nothing
    proc = heal(db, tmp_path / "j", "--create-db")
    try:
        assert proc.returncode == 0 and "restored 6 reports" in proc.stdout, proc.stderr
        assert "does not exist: creating it (--create-db)" in proc.stderr
        assert stored(db) == expected(lines)
    finally:
        influxd.raw_query(f'DROP DATABASE "{db.db}"')


def test_unreadable_lines_and_torn_files_do_not_stop_it(influx_db, tmp_path):
    lines = reports(hours=1, nodes=1, per_hour=3)
    journal = journal_of(tmp_path / "j", [b"not line protocol\n", *lines])
    path = sorted(journal.iterdir())[0]  # the reports' hour (the other: the garbage's, by host clock)
    path.write_bytes(path.read_bytes() + b"\x1f\x8b\x08\0garbage")
    proc = heal(influx_db, journal)
    assert proc.returncode == 0 and "restored 3 reports" in proc.stdout, proc.stderr
    assert "1 with a torn end" in proc.stdout
    assert "(1 lines that are not power reports skipped)" in proc.stdout


# InfluxDB unreachable (69) and the other failures every command shares: tests/test_cli_contract.py


def test_refused_credentials_exit_77(influxd_auth, tmp_path):
    db = influxd_auth.client("bms")
    proc = heal(db, journal_of(tmp_path / "j", reports(hours=1)),
                env={"INFLUX_USER": "admin", "INFLUX_PASS": "wrong"})
    assert proc.returncode == 77 and "refused the credentials" in proc.stderr
    proc = heal(db, tmp_path / "j", "--dry-run", "--create-db",
                env={"INFLUX_USER": "admin", "INFLUX_PASS": "adminpw"})
    assert proc.returncode == 0 and "would restore" in proc.stdout, proc.stderr


@pytest.mark.parametrize("args, code, message", [
    (["--since", "yesterday"], 64, "is not RFC 3339"),
    (["--since", "2026-11-20T00:00:00Z", "--days", "2"], 64, "not allowed with argument"),
    (["--days", "0"], 64, "is not a number above 0"),
    (["--journal", "/nonexistent/journal"], 66, "no journal at /nonexistent/journal"),
])
def test_usage_errors_and_a_missing_journal(tmp_path, args, code, message):
    proc = subprocess.run(tigo_execd_argv("heal", "--journal", str(tmp_path), *args),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == code and message in proc.stderr, proc.stderr
    assert proc.stderr.startswith("E! ")


def watchdog_check(db, state: Path, *args: str, checks: int = 1) -> list:
    """The watchdog as the health instance runs it (STATE_DIRECTORY from its unit)."""
    environ = {k: v for k, v in os.environ.items() if k not in ("INFLUX_USER", "INFLUX_PASS")}
    proc = subprocess.run(tigo_execd_argv("watchdog", "--influx-url", db.url, "--db", db.db, "--now",
                                          NOW, *args), input=b"\n" * checks, capture_output=True,
                          timeout=60, env={**environ, "STATE_DIRECTORY": str(state)})
    assert proc.returncode == 0, proc.stderr
    return [m for m in map(parse_line, proc.stdout.decode().splitlines()) if m.name == "tigo_health"]


def test_watchdog_heals_from_the_state_directory_journal_and_says_so(influx_db, tmp_path):
    lines = reports()
    journal_of(tmp_path / "state" / "journal", lines)
    influx_db.write(b"".join(lines[:100]))
    checks = watchdog_check(influx_db, tmp_path / "state", checks=2)
    assert checks[0].fields["heal_restored"] == len(lines) - 100
    assert checks[0].fields["heal_last"] == "2026-11-20T12:30:00+00:00"
    assert checks[1].fields["heal_restored"] == len(lines) - 100  # cumulative; nothing new
    assert stored(influx_db) == expected(lines)


def test_watchdog_without_a_journal_heals_nothing(influx_db, tmp_path):
    lines = reports(hours=1)
    journal_of(tmp_path / "state" / "journal", lines)
    [check] = watchdog_check(influx_db, tmp_path / "state", "--journal", "off")
    assert "heal_restored" not in check.fields and "heal_last" not in check.fields
    [check] = watchdog_check(influx_db, tmp_path / "elsewhere")  # auto: no journal (yet)
    assert check.fields["heal_restored"] == 0 and "heal_last" not in check.fields
    assert stored(influx_db) == []


def test_rollups_of_healed_days_are_recomputed(influx_db, tmp_path):
    """Where `tigo-execd rollup` has set up rollups, a heal recomputes the healed days' rollups:
    their continuous queries only look back a few hours, so an older hole would stay in them."""
    lines = reports()
    journal = journal_of(tmp_path / "j", lines)
    kept = [x for x in lines if b"node_id=3," not in x]
    influx_db.write(b"".join(kept))
    environ = {k: v for k, v in os.environ.items() if k not in ("INFLUX_USER", "INFLUX_PASS")}
    done = subprocess.run(tigo_execd_argv("rollup", "--influx-url", influx_db.url, "--db", influx_db.db,
                                          "--since", "2026-11-20T00:00:00Z"),
                          capture_output=True, text=True, timeout=120, env=environ)
    assert done.returncode == 0, done.stderr
    fine = '"tigo_rollup"."tigo_power_report_5m"'

    def rolled_up() -> int:
        series = influx_db.query(f'SELECT sum("reports") FROM {fine}')
        return int(series[0]["values"][0][1]) if series else 0

    assert rolled_up() == len(kept)
    healed = heal(influx_db, journal)
    assert healed.returncode == 0, healed.stderr
    assert "recomputed the rollups of 1 healed days" in healed.stdout
    assert rolled_up() == len(lines)  # node 3's reports are in the rollups now, each once
    assert "recomputed" not in heal(influx_db, journal).stdout  # nothing healed, nothing recomputed
