"""Shared fixtures: real servers started once per session, a fresh database per test.

Helpers a test module imports live in tests/support/; this file holds fixtures only. A test that
uses a real server is marked `integration` here (those that run the Telegraf harness without one
are marked where they are written), so `pytest -m "not integration and not slow"` is the unit
tier; `slow` marks the soak and the fuzz properties.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.paths import OUTPUT, ROOT
from support.servers import InfluxServer, MosquittoServer
from tigo_execd.log import log

# a module's own server (own_influxd, cq_influxd) counts too
SERVER_FIXTURES = {"influxd", "influxd_auth", "influx_db", "influx_auth_db", "mosquitto",
                   "own_influxd", "cq_influxd"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that starts a real server is an integration test, whatever its module says."""
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def private_state_home(tmp_path_factory):
    """Keep every tigo-execd the tests start away from the real ~/.local/state registry."""
    saved = {k: os.environ.get(k) for k in ("XDG_STATE_HOME", "STATE_DIRECTORY")}
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("xdg-state"))
    os.environ.pop("STATE_DIRECTORY", None)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def own_state_dir(tmp_path, monkeypatch):
    """The default registry location of the commands run here is a fresh directory."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)


def _forget_rate_limits() -> None:
    """Start every rate-limit window afresh: with a zero window all have passed, and
    report_suppressed() forgets them (its count lines go to a scratch stream)."""
    stream, window = log.stream, log.window
    log.stream, log.window = io.StringIO(), 0.0
    try:
        log.report_suppressed()
    finally:
        log.stream, log.window = stream, window


@pytest.fixture
def logged(monkeypatch) -> Iterator[io.StringIO]:
    """What the package logs at every level, with fresh rate-limit windows."""
    stream = io.StringIO()
    _forget_rate_limits()
    monkeypatch.setattr(log, "stream", stream)
    monkeypatch.setattr(log, "level", log.level)  # restored after the test
    log.set_level("debug")
    yield stream
    _forget_rate_limits()


@pytest.fixture(scope="session")
def influxd():
    with InfluxServer() as server:
        yield server


@pytest.fixture(scope="session")
def influxd_auth():
    with InfluxServer(auth=True) as server:
        yield server


@pytest.fixture
def influx_db(influxd):
    """An empty database of its own for one test, dropped after it; a tigo_execd.influx.Influx client."""
    with influxd.database() as db:
        yield db


@pytest.fixture
def influx_auth_db(influxd_auth):
    """As influx_db, on the server that checks credentials (the client is the admin)."""
    with influxd_auth.database() as db:
        yield db


@pytest.fixture(scope="session")
def mosquitto():
    with MosquittoServer() as server:
        yield server


@pytest.fixture(scope="session")
def output_dir() -> Path:
    OUTPUT.mkdir(exist_ok=True)
    return OUTPUT


@pytest.fixture(scope="session")
def tigo_execd_bin(tmp_path_factory) -> Path:
    """An executable `tigo-execd` that runs this checkout (what the venv's console script does)."""
    path = tmp_path_factory.mktemp("bin") / "tigo-execd"
    path.write_text(f'#!/bin/sh\nPYTHONPATH="{ROOT}" exec "{sys.executable}" -m tigo_execd "$@"\n')
    path.chmod(0o755)
    return path
