"""Shared fixtures: real servers started once per session, a fresh database per test."""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

import pytest

from servers import InfluxServer, MosquittoServer

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
OUTPUT = TESTS / "output"  # artefacts a person may want to look at (rendered panels, figures)
_db_names = itertools.count()


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
    """An empty database of its own for one test; returns a tigo_execd.influx.Influx client."""
    name = f"t{os.getpid()}_{next(_db_names)}"
    influxd.raw_query(f'CREATE DATABASE "{name}"')
    yield influxd.client(name)
    influxd.raw_query(f'DROP DATABASE "{name}"')


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


def tigo_execd_argv(*args: str) -> list[str]:
    """The command line that runs this checkout's tigo-execd."""
    return [sys.executable, "-m", "tigo_execd", *args]
