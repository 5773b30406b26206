"""The RS-485 bridge (`run --serial/--tcp/--replay`) as a process, with real pseudo-terminals for the
adapter, real asyncio TCP servers for the converter, and the fake taptap reading our loopback bridge.

The fake taptap prints every complete line it receives as the bus bytes, so the tests write taptap
JSON lines onto the "bus" and expect the converted reports on stdout.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

from support.bridge_run import BUS, Run, run_bridge, taptap_starts
from support.proc import pid_alive
from support.serial_pty import DIALOUT, NO_DAC, NOBODY, Pty
from tigo_execd.bus import feeds
from tigo_execd.bus.capture import Recorder
from tigo_execd.ingest.run import parse_source_spec

FIRST, SECOND = b"".join(BUS.splitlines(True)[:5]), b"".join(BUS.splitlines(True)[5:])


def run_async(coro) -> None:
    asyncio.run(coro)


# ------------------------------------------------------------------ serial


def test_serial_bytes_flow_end_to_end_with_bus_health(tmp_path):
    async def scenario():
        pty = Pty()
        async with run_bridge(tmp_path, "--serial", pty.path) as run:
            await run.wait_err(f"I! {pty.path} open: relaying the bus to taptap".encode())
            stats = await run.wait_stats("bus_bytes=0i")
            pty.write(BUS)
            await run.wait_reports(10)
            # the first stats line after the reports (taptap starts once it has been asked for
            # its options: a line from before may show bytes waiting for it)
            line = await run.wait_stats(f"bus_bytes={len(BUS)}i", "source_connected=1i", "reports=10i")
            assert line.startswith("tigo_ingest,source=serial ")
            assert "taptap_starts=1i" in line and "taptap_running=1i" in line
            assert re.search(r"source_connected=1i,last_byte_age_s=\d+(\.\d+)?,", line)
            assert "last_byte_age_s" not in stats  # absent until a first byte
            [(taptap_pid, argv)] = taptap_starts(tmp_path)
            assert re.fullmatch(r"observe --tcp 127\.0\.0\.1 --port \d+", argv)
            assert await run.stop() < 2.0
        assert not pid_alive(taptap_pid)
        assert run.reports()[0].startswith("tigo_power_report,gateway_id=4609,node_id=116,src=tigo ")

    run_async(scenario())


def test_unplug_and_replug_under_a_by_id_name_loses_nothing_and_keeps_taptap(tmp_path):
    async def scenario():
        by_id = tmp_path / "by-id"
        by_id.mkdir()
        link = by_id / "usb-FTDI_FT232R_USB_UART_A10K1234-if00-port0"
        first = Pty()
        link.symlink_to(first.path)
        async with run_bridge(tmp_path, "--serial", str(link)) as run:
            await run.wait_err(b"open: relaying the bus to taptap")
            first.write(FIRST)
            await run.wait_reports(5)
            second = Pty()  # the adapter will come back as another device node
            first.unplug()
            link.unlink()
            await run.wait_err(f"W! lost {link}".encode())
            await run.wait_err(f"W! serial port {link} not found; /dev/serial/by-id/ has:".encode())
            await run.wait_stats("source_connected=0i")
            assert second.path != first.path
            link.symlink_to(second.path)
            await run.wait_err(f"I! {link} open again".encode(), timeout=20)
            second.write(SECOND)
            await run.wait_reports(10)
            line = await run.wait_stats("reports=10i", "source_reconnects=1i", "source_connected=1i")
            assert f"bus_bytes={len(BUS)}i" in line
            assert len(taptap_starts(tmp_path)) == 1  # taptap never noticed
            await run.stop()
        assert len(run.reports()) == 10  # every byte sent while connected, once
        assert run.err.count(b"W! serial port") == 1  # each transition logged once, repeats at debug

    run_async(scenario())


def test_taptap_crash_while_the_port_stays_open(tmp_path):
    async def scenario():
        pty = Pty()
        async with run_bridge(tmp_path, "--serial", pty.path) as run:
            await run.wait_err(b"open: relaying")
            pty.write(FIRST)
            await run.wait_reports(5)
            [(pid, _)] = taptap_starts(tmp_path)
            os.kill(pid, signal.SIGKILL)
            await run.wait_err(f"taptap (pid {pid}) left the bridge".encode())
            pty.write(SECOND)  # no taptap now: these wait in the backlog
            await run.wait_err(f"W! taptap exited with code -9 (killed by SIGKILL; the bus feed, "
                               f"{pty.path}, is open); restarting in 1 s".encode())
            await run.wait_reports(10)
            assert len(taptap_starts(tmp_path)) == 2
            line = await run.wait_stats("reports=10i")
            assert "source_reconnects=0i" in line and "bus_bytes_dropped=0i" in line
            await run.stop()
        assert b"W! lost" not in run.err

    run_async(scenario())


def test_permission_denied_names_dialout_once_then_opens(tmp_path):
    async def scenario():
        pty = Pty()
        os.chown(pty.path, NOBODY, DIALOUT)  # as udev sets up a USB adapter, the user not in dialout
        os.chmod(pty.path, 0o660)
        async with run_bridge(tmp_path, "--serial", pty.path, prefix=NO_DAC) as run:
            await run.wait_err(f"E! no permission to open {pty.path}: add the user running "
                               f"tigo-execd to group dialout (`sudo usermod -aG dialout $USER`".encode())
            await run.wait_err(f"D! no permission to open {pty.path}".encode())  # the retry
            os.chmod(pty.path, 0o666)
            await run.wait_err(b"open: relaying", timeout=15)
            pty.write(BUS)
            await run.wait_reports(10)
            await run.stop()
        assert run.err.count(b"E! no permission") == 1

    run_async(scenario())


def test_busy_port_names_the_holder_and_fuser(tmp_path):
    async def scenario():
        pty = Pty()
        holder = os.open(pty.path, os.O_RDWR | os.O_NOCTTY)
        fcntl.flock(holder, fcntl.LOCK_EX)  # what a second tigo-execd (pyserial exclusive) holds
        async with run_bridge(tmp_path, "--serial", pty.path) as run:
            await run.wait_err(f"E! serial port {pty.path} is busy: ".encode())
            assert f" (pid {os.getpid()}) holds it".encode() in run.err
            assert f"see `fuser -v {pty.path}`".encode() in run.err
            os.close(holder)
            await run.wait_err(b"open: relaying", timeout=15)
            # now the bridge holds the port, for the kernel too (TIOCEXCL, as taptap does): any
            # other opener without CAP_SYS_ADMIN is refused
            other = await asyncio.create_subprocess_exec(
                "setpriv", "--bounding-set=-sys_admin", sys.executable, "-c", f"open({pty.path!r})",
                stderr=asyncio.subprocess.PIPE)
            _, err = await other.communicate()
            assert other.returncode == 1 and f"[Errno {errno.EBUSY}]".encode() in err
            pty.write(BUS)
            await run.wait_reports(10)
            await run.stop()

    run_async(scenario())


def test_a_foreign_connection_to_the_bridge_is_refused(tmp_path):
    async def scenario():
        pty = Pty()
        async with run_bridge(tmp_path, "--serial", pty.path) as run:
            await run.wait_err(b"connected to the bridge")
            [(_, argv)] = taptap_starts(tmp_path)
            port = int(argv.rsplit(" ", 1)[1])
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert await asyncio.wait_for(reader.read(100), 5) == b""  # closed on us
            writer.close()
            await run.wait_err(f"W! refused a connection to the taptap bridge 127.0.0.1:{port} from "
                               f"pid {os.getpid()} (".encode())
            pty.write(BUS)  # the real taptap is still connected and served
            await run.wait_reports(10)
            await run.stop()

    run_async(scenario())


@pytest.mark.parametrize("how", ["stdin-eof", "SIGTERM"])
def test_shutdown_within_2s_leaves_nothing_running(tmp_path, how):
    async def scenario():
        pty = Pty()
        async with run_bridge(tmp_path, "--serial", pty.path, env={"FAKE_TAPTAP_THEN": "hang"}) as run:
            await run.wait_err(b"open: relaying")
            await run.wait(lambda: taptap_starts(tmp_path), 10, "taptap started")
            await run.wait_err(b"started taptap")
            [(pid, _)] = taptap_starts(tmp_path)
            t0 = time.monotonic()
            if how == "SIGTERM":
                run.proc.send_signal(signal.SIGTERM)
            else:
                run.proc.stdin.close()
            assert await run.finish() == 0
            assert time.monotonic() - t0 < 2.0
        assert not pid_alive(pid)  # the fake ignored SIGTERM: it was killed and reaped
        # the port was closed: another program can lock it at once
        fd = os.open(pty.path, os.O_RDWR | os.O_NOCTTY)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)

    run_async(scenario())


# ------------------------------------------------------------------ TCP converter


class Converter:
    """An RS-485-to-Ethernet converter stand-in: `script(n)` gives what connection n sends."""

    def __init__(self, script) -> None:
        self.script = script
        self.connections = 0

    async def __aenter__(self) -> Converter:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()

    async def _serve(self, reader, writer) -> None:
        self.connections += 1
        data, then = self.script(self.connections)
        writer.write(data)
        await writer.drain()
        if then == "close":
            writer.close()
            return
        await reader.read()  # stay connected, silent, until the bridge hangs up
        writer.close()


def test_converter_dropping_the_connection_is_reconnected(tmp_path):
    async def scenario():
        def script(n: int) -> tuple[bytes, str]:
            return (FIRST, "close") if n == 1 else (SECOND, "stay")

        async with Converter(script) as conv, \
                run_bridge(tmp_path, "--tcp", f"127.0.0.1:{conv.port}") as run:
            await run.wait_reports(10)
            assert (f"W! lost converter 127.0.0.1:{conv.port}: the other end closed the "
                    f"connection; reopening").encode() in run.err
            line = await run.wait_stats("source_reconnects=1i", "source_connected=1i")
            assert line.startswith("tigo_ingest,source=tcp ") and f"bus_bytes={len(BUS)}i" in line
            assert len(taptap_starts(tmp_path)) == 1
            await run.stop()
        assert conv.connections == 2

    run_async(scenario())


def test_a_silent_converter_is_noticed_and_reconnected(tmp_path):
    async def scenario():
        def script(n: int) -> tuple[bytes, str]:
            return FIRST if n == 1 else SECOND if n == 2 else b"", "stay"

        async with Converter(script) as conv, \
                run_bridge(tmp_path, "--tcp", f"127.0.0.1:{conv.port}", "--silence-timeout", "1") as run:
            await run.wait_reports(10, timeout=15)
            await run.wait_err(f"W! no byte from converter 127.0.0.1:{conv.port} for 1 s: reopening "
                               f"it".encode())
            await run.wait(lambda: conv.connections >= 4, 20, "two more silent reconnects")
            await run.stop()
        # said once per silent spell: connections 1 and 2 each sent bytes then fell silent (two
        # spells); connection 3 sent nothing, a repeat of the second spell: debug only
        assert run.err.count(b"W! no byte from") == 2
        assert b"D! no byte from" in run.err

    run_async(scenario())


@pytest.mark.parametrize("bus, expected", [
    (b"\x00\xffgarbage that no taptap decodes\n" * 20, b"W! 660 bus bytes in "),
    (b"", b"W! no bus bytes for "),
])
def test_diagnosis_tells_no_bytes_from_bytes_without_reports(tmp_path, bus, expected):
    async def scenario():
        async with Converter(lambda n: (bus, "stay")) as conv, \
                run_bridge(tmp_path, "--tcp", f"127.0.0.1:{conv.port}", "--diagnose-after", "1",
                           "--silence-timeout", "0") as run:
            await run.wait_err(expected)
            await run.stop()
        if bus:
            assert b"taptap decoded no power report" in run.err and b"cargo install taptap" in run.err
        else:
            assert b"A to A, B to B" not in run.err and b"A/B" in run.err  # the converter's hint
            assert b"decoded no power report" not in run.err

    run_async(scenario())


def test_unreachable_converter_is_retried_with_one_message(tmp_path):
    async def scenario():
        async with Converter(lambda n: (BUS, "stay")) as conv:
            port = conv.port
        async with run_bridge(tmp_path, "--tcp", f"127.0.0.1:{port}") as run:
            await run.wait_err(f"W! converter 127.0.0.1:{port} refused the connection".encode())
            await run.wait_err(b"D! converter")  # the retry
            await run.stop()

    run_async(scenario())


# ------------------------------------------------------------------ replay and record


def capture(tmp_path: Path, copies: int) -> Path:
    path = tmp_path / "capture.bin"
    path.write_bytes(BUS * copies)
    return path


def replayed_seconds(run: Run) -> float:
    return float(re.search(rb"I! replayed \d+ bytes of \S+ in ([\d.]+) s", run.err).group(1))


def test_replay_at_bus_speed_and_at_max(tmp_path):
    async def scenario():
        path = capture(tmp_path, 2)  # 4276 bytes: about 1.1 s at 3840 bytes/s
        async with run_bridge(tmp_path, "--replay", str(path)) as paced:
            assert await paced.finish(15) == 0  # exits by itself once taptap printed everything
        async with run_bridge(tmp_path, "--replay", str(path), "--replay-speed", "max") as fast:
            assert await fast.finish(15) == 0
        for run in (paced, fast):
            assert len(run.reports()) == 20
            assert f"bus_bytes={2 * len(BUS)}i".encode() in run.out
        expected = 2 * len(BUS) / feeds.BUS_RATE
        assert replayed_seconds(paced) >= 0.95 * expected
        assert replayed_seconds(fast) < 0.3 * expected
        assert b"taptap exited" not in paced.err  # taptap was retired, not restarted

    run_async(scenario())


def test_replay_ends_with_the_fork_which_reconnects_instead_of_exiting(tmp_path):
    async def scenario():
        path = capture(tmp_path, 1)
        async with run_bridge(tmp_path, "--replay", str(path), "--replay-speed", "max",
                              "--taptap-arg=--reconnect-delay", "--taptap-arg=0.1",
                              env={"FAKE_TAPTAP_BUILD": "fork-0.2.0"}) as run:
            assert await run.finish(15) == 0
        assert len(run.reports()) == 10
        assert b"source closed; reconnecting" in run.err  # it did come back, and was stopped
        [(pid, _)] = taptap_starts(tmp_path)
        assert not pid_alive(pid)

    run_async(scenario())


def test_record_then_replay_gives_the_same_output(tmp_path):
    async def scenario():
        pty = Pty()
        rec = tmp_path / "bus.rec"
        async with run_bridge(tmp_path, "--serial", pty.path, "--record", str(rec)) as live:
            await live.wait_err(b"open: relaying")
            for line in BUS.splitlines(True):  # in pieces, as a bus delivers them
                pty.write(line)
            await live.wait_reports(10)
            await live.stop()
        assert rec.read_bytes() == BUS
        async with run_bridge(tmp_path, "--replay", str(rec), "--replay-speed", "max") as again:
            assert await again.finish(15) == 0
        assert again.reports() == live.reports()

    run_async(scenario())


def test_record_rotates_at_its_size_cap(tmp_path):
    path = str(tmp_path / "rec")
    rec = Recorder(path, 4096)
    chunks = [bytes([i]) * 1500 for i in range(7)]
    for chunk in chunks:
        rec.write(chunk)
    rec.close()
    current, older = Path(path).read_bytes(), Path(path + ".1").read_bytes()
    assert len(current) <= 4096 and len(older) <= 4096
    assert older + current == b"".join(chunks)[-len(older + current):]  # one contiguous tail
    assert current == chunks[6]
    Recorder(path, 4096).write(b"x")  # appends to what is there
    assert Path(path).read_bytes() == chunks[6] + b"x"


# ------------------------------------------------------------------ options


@pytest.mark.parametrize("spec, expected", [
    ("/dev/serial/by-id/usb-FTDI-if00", ("serial", "/dev/serial/by-id/usb-FTDI-if00")),
    ("tcp://192.0.2.7", ("tcp", "192.0.2.7")), ("tcp://conv.lan:8899", ("tcp", "conv.lan:8899")),
    ("cmd:taptap observe --serial /dev/ttyUSB0", ("taptap_cmd", "taptap observe --serial /dev/ttyUSB0")),
])
def test_source_spec(spec, expected):
    assert parse_source_spec(spec) == expected


@pytest.mark.parametrize("text, expected", [
    ("conv.lan", ("conv.lan", 502)), ("10.0.0.9:4196", ("10.0.0.9", 4196)),
    ("[fd00::5]:23", ("fd00::5", 23)), ("[fd00::5]", ("fd00::5", 502)),
])
def test_host_port(text, expected):
    assert feeds.parse_host_port(text) == expected


@pytest.mark.parametrize("args, code, message", [
    (("--tcp", "conv:99999"), 64, b"expected HOST or HOST:PORT"),
    (("--tcp", "a:b:c"), 64, b"expected HOST or HOST:PORT"),
    (("--source", "tcp://"), 64, b"expected /dev/PORT"),
    (("--jsonl", "x", "--record", "r"), 64, b"--record applies to --serial, --tcp and --replay"),
    (("--demo", "--taptap-arg=--state-file"), 64, b"--taptap-arg applies to"),
    (("--replay", "x", "--record", "r"), 64, b"a replay is a capture already"),
    (("--serial", "/dev/x", "--silence-timeout", "-1"), 64, b"--silence-timeout must be"),
    (("--replay", "/nonexistent/capture", "--taptap", sys.executable), 66,
     b"cannot open /nonexistent/capture: No such file"),
    (("--replay", "CAPTURE", "--taptap", "/nonexistent/taptap"), 66,
     b"taptap not found or not executable at /nonexistent/taptap"),
    (("--serial", "/dev/x", "--record", "/nonexistent/dir/rec"), 66, b"cannot open /nonexistent/dir"),
])
def test_usage_and_input_errors(tmp_path, args, code, message):
    args = [str(capture(tmp_path, 1)) if a == "CAPTURE" else a for a in args]

    async def scenario():
        async with Run(*args) as run:
            assert await run.finish() == code
        assert message in run.err and run.out == b""

    run_async(scenario())


def test_setpriv_really_drops_roots_file_permission_bypass(tmp_path):
    """The permission test above relies on this: without CAP_DAC_OVERRIDE root gets EACCES."""
    assert shutil.which("setpriv"), "setpriv (util-linux) is needed"
    locked = tmp_path / "locked"
    locked.write_text("x")
    locked.chmod(0)

    async def scenario():
        proc = await asyncio.create_subprocess_exec(
            *NO_DAC, sys.executable, "-c", f"open({str(locked)!r})", stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        return proc.returncode, err

    rc, err = asyncio.run(scenario())
    assert rc == 1 and f"[Errno {errno.EACCES}]".encode() in err
