"""`run --record FILE --record-max-bytes N` through the command line: the capture rotates at the
size given, the smallest allowed (test_bridge.py checks the Recorder itself), and a smaller one is
refused."""

from __future__ import annotations

import asyncio

from support.bridge_run import BUS, run_bridge
from support.serial_pty import Pty


def _size(path):
    """A capture file's size, 0 while it does not exist (between a rotation and the next write)."""
    return path.stat().st_size if path.exists() else 0


def test_record_max_bytes_rotates_the_capture_at_the_size_given(tmp_path):
    rec = tmp_path / "bus.rec"
    cap = 4096  # the smallest allowed; two copies of the bus bytes (4,276) do not fit
    assert len(BUS) <= cap < 2 * len(BUS)

    async def scenario():
        pty = Pty()
        async with run_bridge(tmp_path, "--serial", pty.path, "--record", str(rec),
                              "--record-max-bytes", str(cap)) as live:
            await live.wait_err(b"open: relaying")
            pty.write(BUS)
            await live.wait(lambda: rec.exists() and rec.stat().st_size == len(BUS), what="the first copy")
            pty.write(BUS)
            await live.wait(lambda: rec.with_name("bus.rec.1").exists(), what="the rotation")
            await live.wait(lambda: _size(rec) + _size(rec.with_name("bus.rec.1")) == 2 * len(BUS),
                            what="every byte recorded")
            await live.stop()
        older, current = rec.with_name("bus.rec.1").read_bytes(), rec.read_bytes()
        assert len(older) <= cap and len(current) <= cap
        assert older + current == BUS + BUS

    asyncio.run(scenario())


def test_record_max_bytes_below_a_page_is_refused(tmp_path):
    async def scenario():
        async with run_bridge(tmp_path, "--serial", "/dev/null", "--record", str(tmp_path / "r"),
                              "--record-max-bytes", "4095") as run:
            await run.finish(15)
            return run
    run = asyncio.run(scenario())
    assert run.err == b"E! tigo-execd run: --record-max-bytes must be at least 4096\n" and run.reports() == []
