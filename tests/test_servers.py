"""The server fixtures themselves: a database round trip, and nothing left running after stop."""

import socket

import pytest

from support.servers import InfluxServer
from tigo_execd.influx import InfluxAuthFailed, InfluxUnreachable


def test_influx_roundtrip(influx_db):
    influx_db.write(b"m,t=a v=1.5 1700000000000000000\n")
    series = influx_db.query("SELECT v FROM m")
    assert series[0]["values"] == [[1700000000000000000, 1.5]]


def test_influx_auth_and_unreachable(influxd_auth):
    from tigo_execd.influx import Influx
    with pytest.raises(InfluxAuthFailed):
        Influx(influxd_auth.url, "x", "admin", "wrong").query("SHOW DATABASES")
    server = InfluxServer()
    url = server.url
    server.stop()
    with pytest.raises(InfluxUnreachable):
        Influx(url, "x", timeout=2).ping()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1)
