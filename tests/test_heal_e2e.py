"""Nothing lost: the shipped confs through the Telegraf harness, a real InfluxDB that goes away.

Both instances as installed: telegraf/tigo.conf (the data instance: tigo-execd run with its
journal) and telegraf/tigo-health.conf (the health instance: the watchdog, which heals), with only
the environment of /etc/default/telegraf set, plus one file in the health instance's conf
directory that makes its agent interval 2 s instead of 60 s (a later file's [agent] keys override
an earlier one's, as in Telegraf), so the test takes a minute instead of ten. The fake taptap reads
the "bus" from a TCP server of the test; each cycle is one report per node, dated an hour back
(taptap dates by the host clock; an hour back keeps the reports older than what heal leaves to
Telegraf, SETTLE_NS).

During the outage Telegraf is restarted twice (its buffer is memory only: everything it held is
gone, which is more than an overflow of metric_buffer_limit would drop; the harness has no way to
shrink the shipped 50000 without editing tigo.conf) and tigo-execd is SIGKILLed once (Telegraf
restarts it after restart_delay). When InfluxDB is back, the database must hold exactly every
report Telegraf received from tigo-execd, with its values, each once.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from support import telegraf_harness as th
from support.paths import ROOT
from support.proc import FAKE_TAPTAP_SCRIPT
from support.servers import InfluxServer
from support.taptap_lines import power_report, stamp
from support.wait import wait_until_async
from tigo_execd.influx import InfluxNoDatabase

NODES = 6
CYCLES = 4  # per phase
NS = 1_000_000_000


class Bus:
    """The TCP server the fake taptap reads: one connection per taptap start."""

    def __init__(self) -> None:
        self.writers: list[asyncio.StreamWriter] = []
        self.base = time.time_ns() - 3600 * NS
        self.cycles = 0
        self.sent = 0

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._connected, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _connected(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)

    async def cycle(self) -> None:
        ts = stamp(self.base + self.cycles * 20 * NS + 123_456_000)
        self.cycles += 1
        data = b"".join(power_report(node, 4609, ts, current=5 + node / 10 + self.cycles / 100)
                        + b"\n" for node in range(1, NODES + 1))
        writer = self.writers[-1]
        writer.write(data)
        await writer.drain()
        self.sent += NODES


class Site:
    def __init__(self, tmp: Path, influx: InfluxServer, mqtt_port: int) -> None:
        bindir = tmp / "bin"
        bindir.mkdir()
        for name, argv in (("tigo-execd", f'"{sys.executable}" -m tigo_execd'),
                           ("taptap", f'"{sys.executable}" "{FAKE_TAPTAP_SCRIPT}"')):
            (bindir / name).write_text(f'#!/bin/sh\nPYTHONPATH="{ROOT}" exec {argv} "$@"\n')
            (bindir / name).chmod(0o755)
        self.etc = tmp / "etc"
        (self.etc / "telegraf.d").mkdir(parents=True)
        (self.etc / "health.d").mkdir()
        (self.etc / "telegraf.conf").write_text('[agent]\n  hostname = "site"\n  flush_interval = "1s"\n')
        shutil.copy(ROOT / "telegraf" / "tigo.conf", self.etc / "telegraf.d" / "tigo.conf")
        shutil.copy(ROOT / "telegraf" / "tigo-health.conf", self.etc / "tigo-health.conf")
        (self.etc / "health.d" / "interval.conf").write_text(
            '[agent]\n  interval = "2s"\n  flush_interval = "1s"\n')
        self.env = {"PATH": f"{bindir}:{os.environ['PATH']}", "TIGO_EXECD": str(bindir / "tigo-execd"),
                    "INFLUX_URL": influx.url, "INFLUX_DB": "bms",
                    "MQTT_SERVER": f"tcp://127.0.0.1:{mqtt_port}",
                    "STATE_DIRECTORY": str(tmp / "state"), "TIGO_JOURNAL": str(tmp / "journal")}
        self.received: dict[tuple, dict] = {}
        self.duplicates = 0
        self.log = th.Log(None)

    def _got(self, metric: th.Metric) -> None:
        if metric.name != "tigo_power_report":
            return
        tags = {k: v for k, v in metric.tags.items() if k != "host"}  # tigo.conf's tagexclude
        key = (metric.ts_ns, tags["gateway_id"], tags["node_id"])
        self.duplicates += key in self.received
        self.received[key] = {**tags, **metric.fields}

    def data(self, port: int) -> th.Harness:
        env = {**self.env, "TIGO_SOURCE": f"cmd:taptap observe --tcp 127.0.0.1 --port {port}"}
        config = th.load_config(self.etc / "telegraf.conf", self.etc / "telegraf.d", env)
        return th.Harness(config, self.log, on_metric=self._got)

    def health(self) -> th.Harness:
        return th.Harness(th.load_config(self.etc / "tigo-health.conf", self.etc / "health.d",
                                         self.env), self.log)


def stored(influx: InfluxServer) -> dict[tuple, dict]:
    try:
        series = influx.client("bms").query('SELECT * FROM "tigo_power_report" GROUP BY *')
    except InfluxNoDatabase:  # until Telegraf's output has created it
        return {}
    out = {}
    for s in series:
        for values in s["values"]:
            row = dict(zip(s["columns"], values))
            ts = row.pop("time")
            out[ts, s["tags"]["gateway_id"], s["tags"]["node_id"]] = {
                **{k: v for k, v in s["tags"].items() if v}, **{k: v for k, v in row.items()
                                                             if v is not None}}
    return out


def test_an_outage_with_restarts_and_a_kill_loses_nothing(tmp_path, mosquitto):
    influx = InfluxServer()
    try:
        asyncio.run(scenario(tmp_path, influx, mosquitto.port))
    finally:
        influx.stop()


async def scenario(tmp: Path, influx: InfluxServer, mqtt_port: int) -> None:
    bus, site = Bus(), Site(tmp, influx, mqtt_port)
    port = await bus.start()
    health = site.health()
    await health.start()
    data = site.data(port)
    await data.start()

    async def phase(connections: int) -> None:
        await wait_until_async(lambda: len(bus.writers) >= connections, 30, "taptap to connect")
        for _ in range(CYCLES):
            await bus.cycle()
        await wait_until_async(lambda: len(site.received) == bus.sent, 30,
                               lambda: f"Telegraf to receive {bus.sent} (has {len(site.received)})")

    async def restart(old: th.Harness) -> th.Harness:
        await old.stop()  # InfluxDB is down: its buffer is lost
        new = site.data(port)
        await new.start()
        return new

    try:
        await phase(1)  # reports flow into InfluxDB
        await wait_until_async(lambda: len(stored(influx)) == bus.sent, 30, "the first reports stored")
        influx.pause()
        await phase(1)
        data = await restart(data)
        await phase(2)
        os.kill(data.inputs[0].proc.pid, signal.SIGKILL)  # Telegraf restarts it after restart_delay
        await phase(3)
        data = await restart(data)
        await phase(4)
        influx.resume()

        def complete() -> bool:
            return stored(influx) == site.received

        await wait_until_async(complete, 60, lambda: f"InfluxDB to hold all {len(site.received)} "
                                                      f"reports (has {len(stored(influx))})")
    finally:
        await data.stop()
        await health.stop()
        bus.server.close()
        for writer in bus.writers:  # a taptap left behind by the kill reads EOF and exits
            writer.close()
    assert site.duplicates == 0 and len(site.received) == bus.sent == 5 * CYCLES * NODES
    restored = influx.client("bms").query('SELECT max("heal_restored") FROM "tigo_health"')
    assert restored and restored[0]["values"][0][1] > 0  # the health instance healed, and says so
    killed = site.log.find("E", "inputs.execd", "exited: signal: killed")
    assert len(killed) == 1

