"""Resource hygiene: 1,000 taptap restarts and 100 source reconnects leak no file descriptor, asyncio
task, thread or child process.

The pipeline (Ingest with its source, converter, identity and stats) runs inside the test's event
loop, so that its tasks can be counted with asyncio.all_tasks(); the process is the test's, so its
open fds are /proc/self/fd and its children the processes whose parent is os.getpid(). Each cycle
is driven to the same state before a snapshot (a report of the current taptap or connection has
come out), and the snapshot after the last cycle is compared with one taken after the first few
(the warm-up lazily opens what stays open, e.g. the selector's wakeup pipe). After the pipeline
stops, everything it had is gone again. The backoffs are set to 0 (taptap restarts, reopening the
converter or port): at the real 1 s and more, 1,000 restarts would take hours.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import tty
from dataclasses import dataclass
from pathlib import Path

from support.bridge_run import fake_taptap
from support.proc import children
from tigo_execd.bus import feeds, reconnect
from tigo_execd.clock import ClockWatch, TimeCheck
from tigo_execd.identity.registry import Registry
from tigo_execd.identity.store import Identity
from tigo_execd.ingest import bridge, run
from tigo_execd.ingest.convert import Converter
from tigo_execd.ingest.output import Output
from tigo_execd.ingest.sources import Source, TaptapSource
from tigo_execd.log import log


def report_template() -> bytes:
    """A report dated now, to the second, as taptap dates by the host clock (the clock check
    judges it); `% (node, microseconds)` completes it. Read when used, never at import."""
    return (b'{"gateway":{"id":4609},"node":{"id":%d},"timestamp":"'
            + time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()).encode() + b'.%06d+00:00",'
            b'"voltage_in":30.6,"voltage_out":30.2,"current":6.94,"dc_dc_duty_cycle":1.0,'
            b'"temperature":26.8,"rssi":132}\n')

WARM_UP = 5
SLACK_FDS = 2  # a lazily created fd (e.g. a thread pool's) may appear late once; a leak grows by cycles


@dataclass(frozen=True)
class Snapshot:
    fds: int
    tasks: int
    threads: int
    children: int   # living or zombie: an unreaped child is a leak too

    @classmethod
    def take(cls) -> Snapshot:
        # Children first, as ever: the /proc walk gives the waitpid thread asyncio runs per child
        # (Python 3.11's ThreadedChildWatcher) time to end after its child was reaped.
        kids = len(children(os.getpid()))
        return cls(len(os.listdir("/proc/self/fd")), len(asyncio.all_tasks()),
                   threading.active_count(), kids)


def report(n: int) -> bytes:
    return report_template() % (n % 1000 + 1, n)


class Pipeline:
    """`tigo-execd run` in this event loop, as `run` sets it up for a live source (node registry,
    clock check, stats); its stdout a pipe (as Telegraf gives) read here, its reports counted."""

    def __init__(self, source: Source, tmp_path: Path) -> None:
        self.source, self.tmp_path = source, tmp_path
        self.reports = 0
        self.counted = asyncio.Condition()

    async def __aenter__(self) -> Pipeline:
        read_fd, self.write_fd = os.pipe()
        registry = Registry()
        converter = Converter(registry=registry)
        converter.time_check = TimeCheck()
        self.ingest = run.Ingest(self.source, converter, stats_interval=0.05,
                                    identity=Identity(registry, self.tmp_path / "state.json", None),
                                    output=Output(self.write_fd), clock=ClockWatch())
        loop = asyncio.get_running_loop()
        self.reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(self.reader),
                                     os.fdopen(read_fd, "rb"))
        self.tasks = [asyncio.create_task(self.ingest.run()), asyncio.create_task(self._count())]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.ingest.stop.set()
        assert await asyncio.wait_for(self.tasks[0], 5) == 0
        os.close(self.write_fd)  # Output never closes the fd it was given; the reader sees EOF
        await asyncio.wait_for(self.tasks[1], 5)

    async def _count(self) -> None:
        while line := await self.reader.readline():
            if line.startswith(b"tigo_power_report,"):
                async with self.counted:
                    self.reports += 1
                    self.counted.notify_all()

    async def wait_reports(self, count: int, timeout: float = 10.0) -> None:
        async with self.counted:
            await asyncio.wait_for(self.counted.wait_for(lambda: self.reports >= count), timeout)


async def cycles(pipeline: Pipeline, count: int, next_cycle) -> tuple[Snapshot, Snapshot]:
    """Run `count` cycles: wait for cycle n's report, snapshot after the warm-up and at the end,
    then `next_cycle(n)` ends this taptap or connection."""
    warm = last = None
    for n in range(1, count + 1):
        await pipeline.wait_reports(n)
        if n == WARM_UP:
            warm = Snapshot.take()
        if n == count:
            last = Snapshot.take()
            break
        await next_cycle(n)
    assert warm is not None and last is not None
    return warm, last


def assert_no_leak(before: Snapshot, warm: Snapshot, last: Snapshot, after: Snapshot) -> None:
    """The same after the last cycle as after the warm-up; once stopped, all it had is gone."""
    print(f"before {before}\nwarm   {warm}\nlast   {last}\nafter  {after}")  # shown with -s
    one_taptap = before.children + 1  # the session's influxd may be a child of this process too
    assert (last.tasks, last.threads, last.children) == (warm.tasks, warm.threads, one_taptap), \
        (warm, last)
    assert last.fds <= warm.fds + SLACK_FDS, (warm, last)
    assert (after.tasks, after.threads, after.children) == (before.tasks, before.threads,
                                                            before.children), (before, after)
    assert after.fds <= before.fds + SLACK_FDS, (before, after)


def quiet_log(monkeypatch) -> None:
    """Every restart and reconnect is a W! line: 1,000 of them would only fill the captured stderr."""
    monkeypatch.setattr(log, "level", 0)


def test_1000_taptap_restarts_leak_nothing(tmp_path, monkeypatch):
    """taptap killed 1,000 times (SIGKILL and SIGTERM alternately), restarted by the Supervisor."""
    quiet_log(monkeypatch)
    monkeypatch.setattr(run, "is_pipe", lambda fd: False)  # fd 0 is pytest's, not Telegraf's
    counter = tmp_path / "n"
    counter.write_text("0")
    # a taptap that prints one report (a new node and time each start) and waits to be killed
    script = (f'n=$(cat {counter}); echo $((n + 1)) > {counter}; '
              f'printf \'{report_template().decode().rstrip()}\\n\' $((n % 1000 + 1)) $n; exec sleep 1000')
    source = TaptapSource(["/bin/sh", "-c", script])
    source.supervisor.min_delay = source.supervisor.max_delay = 0

    async def kill(n: int) -> None:
        proc = source.supervisor.proc
        assert proc is not None and proc.returncode is None
        proc.send_signal(signal.SIGKILL if n % 2 else signal.SIGTERM)

    async def scenario() -> None:
        before = Snapshot.take()
        async with Pipeline(source, tmp_path) as pipeline:
            warm, last = await cycles(pipeline, 1000, kill)
        assert source.supervisor.starts == 1000 and pipeline.reports == 1000
        assert_no_leak(before, warm, last, Snapshot.take())

    asyncio.run(scenario())


def bridge_source(feed, tmp_path: Path, monkeypatch) -> bridge.BridgeSource:
    """The bridge with the fake taptap; reopening at once instead of after 1 s, 2 s, ..."""
    quiet_log(monkeypatch)
    monkeypatch.setattr(run, "is_pipe", lambda fd: False)
    monkeypatch.setattr(reconnect, "MIN_DELAY", 0.0)
    return bridge.BridgeSource(feed, fake_taptap(tmp_path), diagnose_after=0)


def test_100_converter_reconnects_leak_nothing(tmp_path, monkeypatch):
    """A TCP converter that sends a report and then drops the connection, 100 times."""
    drops: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(report(len(drops)))
        drops.append(writer)

    async def drop(n: int) -> None:
        drops[n - 1].close()

    async def scenario() -> None:
        before = Snapshot.take()
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        source = bridge_source(feeds.TcpFeed("127.0.0.1", port), tmp_path, monkeypatch)
        async with Pipeline(source, tmp_path) as pipeline:
            warm, last = await cycles(pipeline, 101, drop)
        drops[-1].close()  # the converter's end of the last connection, a socket of the test's
        await drops[-1].wait_closed()
        server.close()
        await server.wait_closed()
        assert source.reconnects == 100 and source.supervisor.starts == 1
        assert_no_leak(before, warm, last, Snapshot.take())

    asyncio.run(scenario())


class Adapter:
    """A pty behind a by-id-style symlink; `replug()` puts a new pty behind the name and then
    closes the old master (the bridge reads EIO, as from an unplugged USB adapter)."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master = -1
        self.replug()

    def replug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        tmp = self.link.with_suffix(".new")
        tmp.symlink_to(os.ttyname(slave))
        os.close(slave)
        tmp.replace(self.link)
        if self.master >= 0:
            os.close(self.master)
        self.master = master

    def close(self) -> None:
        os.close(self.master)


def test_100_serial_replugs_leak_nothing(tmp_path, monkeypatch):
    """A USB adapter unplugged and back under its by-id name, 100 times."""
    async def scenario() -> None:
        before = Snapshot.take()
        adapter = Adapter(tmp_path / "usb-FTDI_FT232R_USB_UART_A10K1234-if00-port0")
        feed = feeds.SerialFeed(str(adapter.link))
        source = bridge_source(feed, tmp_path, monkeypatch)
        is_open, feed_open = asyncio.Event(), feed.open

        async def open_and_tell() -> asyncio.StreamReader:
            reader = await feed_open()
            is_open.set()
            return reader

        feed.open = open_and_tell  # type: ignore[method-assign]

        async def write_when_open() -> None:
            """A report once the bridge has the port: opening it flushes what came before."""
            await asyncio.wait_for(is_open.wait(), 10)
            is_open.clear()
            os.write(adapter.master, report(source.reconnects))

        async def replug(n: int) -> None:
            adapter.replug()
            await write_when_open()

        async with Pipeline(source, tmp_path) as pipeline:
            await write_when_open()
            warm, last = await cycles(pipeline, 101, replug)
        adapter.close()
        assert source.reconnects == 100 and source.supervisor.starts == 1
        assert_no_leak(before, warm, last, Snapshot.take())

    asyncio.run(scenario())
