#!/usr/bin/env python3
"""Soak: a million reports over the serial bridge through Telegraf into InfluxDB, with faults.

The whole shipped path: a pseudo-terminal stands in for the USB RS-485 adapter behind a
/dev/serial/by-id-style symlink (under /dev/shm, so that `--source` takes it as a serial port);
tigo-execd (telegraf/tigo.conf, unchanged, run by tests/support/telegraf_harness.py with only the
environment set) relays it to the fake taptap, which prints every JSON line of the "bus" as a
report; outputs.influxdb writes to a real influxd. During the run the fake taptap is SIGKILLed
(tigo-execd's Supervisor restarts it) and the adapter is unplugged and replugged (tigo-execd
reopens the by-id name, now a new pty). End condition: InfluxDB holds exactly the reports written
on the bus, and Telegraf received each exactly once (every report is a distinct point, a unique
(node_id, timestamp), so a duplicate would collapse in InfluxDB but show in the received count).

Rate: reports go out in bus cycles of one report per node, at most --rate reports/s, and never
more than --window reports ahead of what Telegraf has received (and never more than half of
outputs.influxdb's buffer ahead of what it wrote): the rate adapts to the slowest stage instead of
overflowing the bridge's backlog, which is the bound tigo-execd puts on bus bytes taptap is not
reading (a real bus brings at most 3840 bytes/s, about 16 reports/s).

Faults are made the way they happen on a site, with what a real bus allows:
- kill: taptap has caught up (as it always has at 16 reports/s), is SIGKILLed, and as soon as
  tigo-execd has seen it go, one more window of reports is written while it is down: those wait
  in the bridge's backlog for the restarted taptap.
- unplug: the pty master is closed (the slave gets EIO, as an unplugged USB adapter does), the
  symlink removed; once tigo-execd says the port is missing, a new pty appears under the same
  name; writing resumes when tigo-execd says it has the port open again. Nothing is written while
  unplugged: bytes sent to a missing adapter do not exist.

While it runs, tigo-execd's RSS, open file descriptors and child processes are sampled from /proc.

    python3 tests/bench/soak.py [--reports 1000000] [--kills 3] [--unplugs 2] [--rate 20000]

tests/test_soak.py runs the same code with 20,000 reports against the test session's influxd.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import tty
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
for _path in (str(ROOT), str(TESTS)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from support import telegraf_harness as th  # noqa: E402
from support.proc import FAKE_TAPTAP_SCRIPT, children  # noqa: E402
from tigo_execd.influx import Influx  # noqa: E402

LINK_NAME = "usb-FTDI_FT232R_USB_UART_SOAK0001-if00-port0"
GATEWAY = 4609
FAULT_TIMEOUT = 30.0   # for tigo-execd to notice a fault or its end (its backoff is 1, 2, 4 ... s)


@dataclass
class Plan:
    reports: int
    kills: int = 2
    unplugs: int = 1
    rate: float = 20_000.0   # reports/s at most
    window: int = 500        # reports on their way at most: ~100 kB, under half the bridge's backlog
    nodes: int = 100         # one bus cycle = one report per node, one timestamp per cycle
    batch_size: int = 5000   # agent metric_batch_size
    sample_every: float = 5.0
    stall: float = 60.0      # no progress for this long: something was lost, stop


@dataclass
class Sample:
    t: float
    sent: int
    rss_kb: int
    fds: int
    children: int


@dataclass
class Result:
    plan: Plan
    sent: int = 0
    bus_bytes: int = 0     # written on the bus
    received: int = 0      # tigo_power_report metrics Telegraf parsed from tigo-execd
    stored: int = 0        # count in InfluxDB
    seconds: float = 0.0   # first report written to the last one stored
    kills: int = 0
    unplugs: int = 0
    pids: list[int] = field(default_factory=list)   # tigo-execd's: one unless Telegraf restarted it
    samples: list[Sample] = field(default_factory=list)
    stats: dict = field(default_factory=dict)       # tigo-execd's last tigo_ingest line
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds by process, over the run
    problems: list[str] = field(default_factory=list)  # E!/W! lines other than the faults' own

    @property
    def exact(self) -> bool:
        return self.sent == self.received == self.stored == self.plan.reports

    def rss_flat(self, tolerance_mb: float = 3.0) -> tuple[bool, float, float]:
        """(flat?, max RSS of the first third, of the last third) in MB, from the samples."""
        third = max(1, len(self.samples) // 3)
        first = max(s.rss_kb for s in self.samples[:third]) / 1024
        last = max(s.rss_kb for s in self.samples[-third:]) / 1024
        return last - first <= tolerance_mb, first, last


class Log(th.Log):
    """The harness's log, kept in memory only, waking whoever waits for a line."""

    def __init__(self) -> None:
        super().__init__(None)
        self.changed = asyncio.Event()

    def __call__(self, level: str, plugin: str, message: str) -> None:
        super().__call__(level, plugin, message)
        self.changed.set()

    def count(self, text: str) -> int:
        return len(self.find(contains=text))

    async def wait(self, text: str, count: int, timeout: float = FAULT_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while self.count(text) < count:
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), deadline - time.monotonic())
            except TimeoutError:
                raise RuntimeError(f"tigo-execd did not log {text!r} within {timeout:g} s; "
                                   f"last lines: {[r.message for r in self.records[-8:]]}") from None


class Discard(list):
    """Stands in for Harness.collected, which keeps every metric: a million would be gigabytes."""

    def append(self, item: object) -> None:
        pass


class Adapter:
    """A pty behind a by-id-style symlink: the USB RS-485 adapter, pluggable."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.writer: asyncio.StreamWriter | None = None
        self.plugs = 0

    async def plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        path = os.ttyname(slave)
        os.close(slave)
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, os.fdopen(master, "wb", buffering=0))
        self.writer = asyncio.StreamWriter(transport, protocol, None, loop)
        self.link.symlink_to(path)
        self.plugs += 1

    async def write(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(data)
        await self.writer.drain()

    def unplug(self) -> None:
        if self.writer is not None:
            self.writer.close()  # closes the master: the slave reads EIO, as when USB goes away
            self.writer = None
        self.link.unlink(missing_ok=True)


class Bus:
    """Taptap JSON lines as the fake taptap expects them on the bus: cycles of one report per node,
    each cycle stamped with the wall clock (as taptap stamps), strictly increasing, so every
    (node, timestamp) is unique. Values move in the steps of the optimizers' 12-bit readings."""

    def __init__(self, nodes: int) -> None:
        self.nodes = nodes
        self.rng = random.Random(8)
        self.last_us = 0

    def cycle(self, count: int) -> bytes:
        us = max(time.time_ns() // 1000, self.last_us + 1)
        self.last_us = us
        stamp = (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(us // 1_000_000))
                 + f".{us % 1_000_000:06d}+00:00")
        r = self.rng
        lines = []
        for node in range(1, count + 1):
            vin = r.randrange(560, 760) / 20
            lines.append(
                f'{{"gateway":{{"id":{GATEWAY}}},"node":{{"id":{node}}},"timestamp":"{stamp}",'
                f'"voltage_in":{vin},"voltage_out":{round(vin * 10) / 10},'
                f'"current":{r.randrange(0, 2000) / 200},"dc_dc_duty_cycle":1.0,'
                f'"temperature":{r.randrange(150, 450) / 10},"rssi":{r.randrange(90, 160)}}}\n')
        return "".join(lines).encode()


def schedule(plan: Plan) -> list[tuple[int, str]]:
    """Faults evenly spread over the run, kills and unplugs alternating while both are left."""
    kinds, k, u = [], plan.kills, plan.unplugs
    while k or u:
        if k and (k >= u):
            kinds.append("kill")
            k -= 1
        if u:
            kinds.append("unplug")
            u -= 1
    step = plan.reports // (len(kinds) + 1)
    return [(step * (i + 1), kind) for i, kind in enumerate(kinds)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_sample(pid: int) -> tuple[int, int, int]:
    """(VmRSS in kB, open fds, child processes) of a process, from /proc."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds, len(children(pid))


class Soak:
    """One soak run: the harness, tigo-execd under it, the adapter, the writer and the sampler."""

    def __init__(self, plan: Plan, influx_url: str, db: str, workdir: Path,
                 progress=None, influxd_pid: int | None = None) -> None:  # type: ignore[no-untyped-def]
        self.plan = plan
        self.influxd_pid = influxd_pid
        self.result = Result(plan)
        self.influx = Influx(influx_url, db, timeout=60)
        self.workdir = workdir
        self.progress = progress or (lambda text: None)
        self.log = Log()
        self.moved = asyncio.Event()  # something went through: a metric received or written
        self.bus = Bus(plan.nodes)
        # /dev/shm: `--source` takes a path under /dev/ as a serial port, like the real by-id names
        self.devdir = Path(tempfile.mkdtemp(prefix="tigo-soak-", dir="/dev/shm"))
        link = self.devdir / "serial" / "by-id" / LINK_NAME
        link.parent.mkdir(parents=True)
        self.adapter = Adapter(link)
        self.harness = self._harness(influx_url, db)

    def _harness(self, influx_url: str, db: str) -> th.Harness:
        """telegraf/tigo.conf unchanged, a main telegraf.conf with the agent's flush settings, and
        the environment /etc/default/telegraf would give; `taptap` on PATH is the fake."""
        bindir = self.workdir / "bin"
        bindir.mkdir()
        for name, argv in (("tigo-execd", f'"{sys.executable}" -m tigo_execd'),
                           ("taptap", f'"{sys.executable}" "{FAKE_TAPTAP_SCRIPT}"')):
            script = bindir / name
            script.write_text(f'#!/bin/sh\nPYTHONPATH="{ROOT}" exec {argv} "$@"\n')
            script.chmod(0o755)
        etc = self.workdir / "etc"
        (etc / "telegraf.d").mkdir(parents=True)
        (etc / "telegraf.conf").write_text(
            f'[agent]\n  hostname = "soak"\n  flush_interval = "1s"\n'
            f'  metric_batch_size = {self.plan.batch_size}\n')
        shutil.copy(ROOT / "telegraf" / "tigo.conf", etc / "telegraf.d" / "tigo.conf")
        env = {"PATH": f"{bindir}:{os.environ['PATH']}", "TIGO_EXECD": str(bindir / "tigo-execd"),
               "TIGO_SOURCE": str(self.adapter.link), "INFLUX_URL": influx_url, "INFLUX_DB": db,
               "STATE_DIRECTORY": str(self.workdir / "state")}
        config = th.load_config(etc / "telegraf.conf", etc / "telegraf.d", env)
        harness = th.Harness(config, self.log, on_metric=self._received)
        harness.collected = Discard()
        [self.output] = harness.outputs
        write = self.output.write

        async def write_and_tell(batch: list) -> bool:
            done = await write(batch)
            self.moved.set()
            return done

        self.output.write = write_and_tell  # type: ignore[method-assign]
        return harness

    def _received(self, metric: th.Metric) -> None:
        if metric.name == "tigo_power_report":
            self.result.received += 1
            self.moved.set()

    # ------------------------------------------------------------ the run

    async def run(self) -> Result:
        r = self.result
        try:
            await self.adapter.plug()
            await self.harness.start()
            await self.log.wait(f"{self.adapter.link} open: relaying", 1)
            await self.log.wait("started taptap", 1)
            sampler = asyncio.create_task(self._sample())
            t0, cpu0 = time.monotonic(), self._cpu()
            await self._write_all()
            await self._until(lambda: self.result.received >= r.sent, "Telegraf to receive all")
            await self._until_stored()
            r.seconds = time.monotonic() - t0
            r.cpu = {k: v - cpu0.get(k, 0.0) + r.cpu.get(k, 0.0) for k, v in self._cpu().items()}
            sampler.cancel()
            await self._sample_once()
        finally:
            await self.harness.stop()
            self.adapter.unplug()
            shutil.rmtree(self.devdir, ignore_errors=True)
        r.stored = await asyncio.to_thread(self._count)
        r.stats = await asyncio.to_thread(self._last_stats)
        r.pids = list(self.harness.inputs[0].pids)
        expected = ("taptap exited with code -9", f"lost {self.adapter.link}",  # the faults made
                    f"serial port {self.adapter.link} not found",
                    "the host clock is not synchronised")  # containers and CI run no NTP daemon
        r.problems = [f"{x.level}! {x.message}" for x in self.log.records
                      if x.level in "EW" and not any(f in x.message for f in expected)]
        return r

    async def _write_all(self) -> None:
        plan, r = self.plan, self.result
        faults = schedule(plan)
        origin, origin_sent = time.monotonic(), 0
        while r.sent < plan.reports:
            if faults and r.sent >= faults[0][0]:
                _, kind = faults.pop(0)
                await (self._kill() if kind == "kill" else self._unplug())
                origin, origin_sent = time.monotonic(), r.sent
                continue
            limit = faults[0][0] if faults else plan.reports
            count = min(plan.nodes, limit - r.sent)
            await self._room(count)
            await self._send(count)
            ahead = origin + (r.sent - origin_sent) / plan.rate - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)  # pacing to the rate cap, not waiting for an outcome

    async def _send(self, count: int) -> None:
        data = self.bus.cycle(count)
        self.result.sent += count  # counted as written: they may come out before drain() returns
        self.result.bus_bytes += len(data)
        await self.adapter.write(data)

    async def _room(self, count: int) -> None:
        """Wait until `count` more reports keep the window and half the output buffer free."""
        r, plan = self.result, self.plan
        half = (self.output.buffer.maxlen or 0) // 2

        def room() -> bool:
            on_the_way = r.sent + count - r.received
            return on_the_way <= plan.window and len(self.output.buffer) + on_the_way <= half

        await self._until(room, "room in the pipeline")

    async def _until(self, condition, what: str) -> None:  # type: ignore[no-untyped-def]
        """Wait for `condition`, woken by progress; no progress for plan.stall s is a failure."""
        while not condition():
            self.moved.clear()
            try:
                await asyncio.wait_for(self.moved.wait(), self.plan.stall)
            except TimeoutError:
                r = self.result
                raise RuntimeError(f"no progress for {self.plan.stall:g} s waiting for {what}: "
                                   f"sent {r.sent}, received {r.received}; last lines: "
                                   f"{[x.message for x in self.log.records[-8:]]}") from None

    async def _until_stored(self) -> None:
        """Every received report written by outputs.influxdb and counted in InfluxDB."""
        await self._until(lambda: not self.output.buffer, "outputs.influxdb to write all")
        deadline = time.monotonic() + self.plan.stall
        while (stored := await asyncio.to_thread(self._count)) < self.result.sent:
            if time.monotonic() > deadline:
                raise RuntimeError(f"InfluxDB holds {stored} of {self.result.sent} reports")
            self.moved.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.moved.wait(), 2 * self.output.flush_interval)

    def _count(self) -> int:
        series = self.influx.query("SELECT count(voltage_in_v) FROM tigo_power_report")
        return int(series[0]["values"][0][1]) if series else 0

    def _last_stats(self) -> dict:
        series = self.influx.query("SELECT * FROM tigo_ingest ORDER BY time DESC LIMIT 1")
        if not series:
            return {}
        return dict(zip(series[0]["columns"], series[0]["values"][0]))

    # ------------------------------------------------------------ faults

    async def _quiesce(self) -> None:
        await self._until(lambda: self.result.received >= self.result.sent, "taptap to catch up")

    def _taptap_pid(self) -> int:
        """The running taptap's, from the Supervisor's last `started taptap (pid N)` line."""
        started = self.log.find(contains="started taptap (pid ")[-1].message
        return int(started.split("(pid ", 1)[1].split(")", 1)[0])

    def _cpu(self) -> dict[str, float]:
        times = os.times()
        cpu = {"this script (Telegraf harness, bus writer)": times.user + times.system,
               "tigo-execd": cpu_seconds(self.harness.inputs[0].proc.pid),
               "fake taptap": cpu_seconds(self._taptap_pid())}
        if self.influxd_pid:
            cpu["influxd"] = cpu_seconds(self.influxd_pid)
        return cpu

    async def _kill(self) -> None:
        await self._quiesce()
        exits = self.log.count("taptap exited with code -9")
        pid = self._taptap_pid()
        # the killed taptap's CPU is lost with it: count it now (its first start: from 0)
        self.result.cpu["fake taptap"] = self.result.cpu.get("fake taptap", 0.0) + cpu_seconds(pid)
        os.kill(pid, signal.SIGKILL)
        await self.log.wait("taptap exited with code -9", exits + 1)
        self.result.kills += 1
        self.progress(f"killed taptap #{self.result.kills} at {self.result.sent} reports")
        backlog = min(self.plan.window, self.plan.reports - self.result.sent)  # bus goes on
        while backlog > 0:
            count = min(self.plan.nodes, backlog)
            await self._send(count)
            backlog -= count

    async def _unplug(self) -> None:
        await self._quiesce()
        link = str(self.adapter.link)
        missing, again = self.log.count(f"{link} not found"), self.log.count(f"{link} open again")
        self.adapter.unplug()
        await self.log.wait(f"{link} not found", missing + 1)
        await self.adapter.plug()
        await self.log.wait(f"{link} open again", again + 1)
        self.result.unplugs += 1
        self.progress(f"unplugged and replugged #{self.result.unplugs} at {self.result.sent} reports")

    # ------------------------------------------------------------ sampling

    async def _sample(self) -> None:
        while True:
            await self._sample_once()
            await asyncio.sleep(self.plan.sample_every)

    async def _sample_once(self) -> None:
        proc = self.harness.inputs[0].proc
        if proc is None or proc.returncode is not None:
            return
        rss, fds, children = process_sample(proc.pid)
        s = Sample(time.monotonic(), self.result.sent, rss, fds, children)
        self.result.samples.append(s)
        self.progress(f"{s.sent:>9} reports sent, {self.result.received:>9} received, "
                      f"RSS {rss / 1024:6.1f} MB, {fds} fds, {children} child")


def report(r: Result) -> str:
    """The figures, as printed by the script and quoted in the README."""
    plan = r.plan
    flat, first, last = r.rss_flat()
    rate = r.sent / r.seconds if r.seconds else 0.0
    lines = [f"reports: sent {r.sent}, received by Telegraf {r.received}, stored in InfluxDB "
             f"{r.stored}: {'EXACT' if r.exact else 'MISMATCH'}",
             f"duration {r.seconds:.1f} s, {rate:.0f} reports/s ({rate * 220 / 1e6:.2f} MB/s of "
             f"bus bytes; cap {plan.rate:g}/s, window {plan.window}, {plan.nodes} nodes per cycle, "
             f"metric_batch_size {plan.batch_size})",
             f"faults: {r.kills} taptap SIGKILLs, {r.unplugs} unplug/replug; tigo-execd pids "
             f"{r.pids} (one = never restarted by Telegraf)"]
    st = r.stats
    if st:
        lines.append("tigo-execd's last tigo_ingest: " + ", ".join(
            f"{k}={st.get(k)}" for k in ("reports", "taptap_starts", "source_reconnects",
                                         "bus_bytes", "bus_bytes_dropped", "lines_invalid")))
    lines.append(f"RSS first third max {first:.1f} MB, last third max {last:.1f} MB: "
                 f"{'flat' if flat else 'GROWING'} (tolerance 3 MB)")
    if r.cpu and r.seconds:
        lines.append("CPU over the run: " + ", ".join(
            f"{name} {sec:.0f} s ({100 * sec / r.seconds:.0f}%)"
            for name, sec in sorted(r.cpu.items(), key=lambda kv: -kv[1])) +
            f"; {os.cpu_count()} CPUs")
    lines.append(f"fds {min(s.fds for s in r.samples)}..{max(s.fds for s in r.samples)}, "
                 f"children {min(s.children for s in r.samples)}..{max(s.children for s in r.samples)}")
    lines.append("")
    lines.append("  reports sent | RSS MB | fds | children")
    t0 = r.samples[0].t
    step = -(-len(r.samples) // 20)
    for s in r.samples[::step] + ([r.samples[-1]] if (len(r.samples) - 1) % step else []):
        lines.append(f"  {s.sent:>12} | {s.rss_kb / 1024:6.1f} | {s.fds:>3} | {s.children:>8}"
                     f"   (t={s.t - t0:5.0f} s)")
    if r.problems:
        lines.append(f"other warnings and errors ({len(r.problems)}):")
        lines += [f"  {p}" for p in r.problems[:20]]
    return "\n".join(lines)


async def soak(plan: Plan, influx_url: str, db: str, progress=None,  # type: ignore[no-untyped-def]
               influxd_pid: int | None = None) -> Result:
    with tempfile.TemporaryDirectory(prefix="tigo-soak-") as workdir:
        return await Soak(plan, influx_url, db, Path(workdir), progress, influxd_pid).run()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reports", type=int, default=1_000_000)
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--unplugs", type=int, default=2)
    ap.add_argument("--rate", type=float, default=20_000.0, help="reports/s at most")
    ap.add_argument("--window", type=int, default=Plan.window)
    ap.add_argument("--batch-size", type=int, default=Plan.batch_size)
    ap.add_argument("--sample-every", type=float, default=5.0)
    args = ap.parse_args()
    from support.servers import InfluxServer
    plan = Plan(args.reports, args.kills, args.unplugs, args.rate, args.window,
                batch_size=args.batch_size, sample_every=args.sample_every)
    t0 = time.monotonic()
    with InfluxServer() as server:
        server.raw_query('CREATE DATABASE "soak"')
        result = asyncio.run(soak(plan, server.url, "soak",
                                  lambda text: print(f"[{time.monotonic() - t0:6.1f} s] {text}",
                                                     file=sys.stderr, flush=True),
                                  server.proc.pid))
    print(report(result))
    return 0 if result.exact and result.rss_flat()[0] else 1


if __name__ == "__main__":
    sys.exit(main())
