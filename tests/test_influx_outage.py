"""What InfluxDB answers while it shuts down or starts (HTTP 5xx: "engine is closed", "query engine
shutdown") is an outage to wait out; only a 4xx or an error inside a 200 answer is a rejected query.

influxd cannot be made to answer 5xx on demand, so a stand-in HTTP server on loopback answers what
influxd 1.x answers then (its JSON error body); the waiting itself is shown against a real influxd
in test_rollup.py."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from tigo_execd import influx
from tigo_execd.influx import Influx, InfluxError, InfluxUnreachable, retrying


class Answer(http.server.BaseHTTPRequestHandler):
    status = 500
    body = b'{"error":"engine is closed"}'

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def stand_in(request) -> Iterator[str]:
    status, body = request.param
    handler = type("Handler", (Answer,), {"status": status, "body": body})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


SHUTTING_DOWN = [(500, b'{"error":"engine is closed"}'), (500, b'{"error":"query engine shutdown"}'),
                 (503, b"Service Unavailable")]
REJECTED = [(400, b'{"error":"error parsing query: found EOF"}'),
            (404, b'{"error":"database not found: \\"x\\""}'),
            (200, b'{"results":[{"statement_id":0,"error":"database not found: x"}]}')]


@pytest.mark.parametrize("stand_in", SHUTTING_DOWN, indirect=True)
def test_5xx_is_an_outage_that_is_retried(stand_in, logged):
    with pytest.raises(InfluxUnreachable, match=r"unavailable \(HTTP 50\d\)"):
        retrying("counting", lambda: Influx(stand_in, "bms", timeout=5).query("SHOW DATABASES"), 1.5)
    lines = logged.getvalue().splitlines()
    assert lines[0].startswith("W! counting: InfluxDB at http://127.0.0.1:") and "retrying for" in lines[0]
    assert len(lines) >= 2 and all("retrying for" in line for line in lines)


@pytest.mark.parametrize("stand_in", REJECTED, indirect=True)
def test_4xx_or_an_error_in_200_is_a_rejected_query(stand_in, logged):
    with pytest.raises(InfluxError) as caught:
        retrying("counting", lambda: Influx(stand_in, "bms", timeout=5).query("SHOW DATABASES"), 30)
    assert not isinstance(caught.value, InfluxUnreachable)
    assert logged.getvalue() == ""  # refused at once, no retry


def test_connection_refused_is_an_outage(logged):
    with pytest.raises(InfluxUnreachable, match="unreachable"):
        retrying("connecting", lambda: Influx("http://127.0.0.1:9", timeout=1).ping(), 0.5)
    assert logged.getvalue().startswith("W! connecting: InfluxDB at http://127.0.0.1:9 is unreachable")


class FakeClock:
    """time.monotonic and time.sleep for influx.retrying: sleeping advances the clock at once."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.pauses: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


def test_a_long_wait_says_so_at_least_every_10_s(logged, monkeypatch):
    """A minute of --retry-for against a stopped InfluxDB: a line before every pause, no pause
    longer than 10 s, and the time left counted down until it gives up."""
    clock = FakeClock()
    monkeypatch.setattr(influx, "time", clock)
    with pytest.raises(InfluxUnreachable):
        retrying("rolling up 2026-03-14", lambda: Influx("http://127.0.0.1:9", timeout=1).ping(), 60)
    lines = logged.getvalue().splitlines()
    assert len(lines) == len(clock.pauses) and max(clock.pauses) <= influx.PROGRESS_S
    assert sum(clock.pauses) == pytest.approx(60)
    left = [int(line.split("retrying for ")[1].split(" s more")[0]) for line in lines]
    assert left[0] == 60 and left == sorted(left, reverse=True) and left[-1] <= 10
    assert lines[0].startswith("W! ") and all(line.startswith("I! ") for line in lines[1:])
