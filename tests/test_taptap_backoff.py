"""taptap's restart backoff on a fake clock: doubling from 1 s, capped at 60 s, and back to 1 s after
a run of a healthy minute (and not after 59.9 s). The Supervisor runs real children (`sh -c 'exit
1'`); only its clock and its waits between restarts are fake: time.monotonic() reads the fake
clock, and a wait between two restarts moves it on at once instead of sleeping."""

from __future__ import annotations

import asyncio
import types

from support.wait import wait_until_async
from tigo_execd import taptap


class FakeClock:
    """The taptap module's time and asyncio: runs last what `durations` says, waits take no time."""

    def __init__(self, durations: list[float]) -> None:
        self.now = 1000.0
        self.durations = durations
        self.waits: list[float] = []
        self.time = types.SimpleNamespace(monotonic=lambda: self.now)
        self.asyncio = types.SimpleNamespace(**{k: getattr(asyncio, k) for k in dir(asyncio)
                                                if not k.startswith("_")})
        self.asyncio.wait_for = self.wait_for
        self.asyncio.create_subprocess_exec = self.spawn

    async def spawn(self, *args, **kwargs):
        proc = await asyncio.create_subprocess_exec(*args, **kwargs)
        self.now += self.durations.pop(0) if self.durations else 0.0  # how long this run lasts
        return proc

    async def wait_for(self, aw, timeout):
        if getattr(aw, "__qualname__", "") != "Event.wait":  # not the wait between two restarts
            return await asyncio.wait_for(aw, timeout)
        aw.close()
        self.waits.append(timeout)
        self.now += timeout
        raise TimeoutError


def restart_delays(monkeypatch, durations: list[float], restarts: int) -> list[float]:
    clock = FakeClock(durations)
    monkeypatch.setattr(taptap, "time", clock.time)
    monkeypatch.setattr(taptap, "asyncio", clock.asyncio)
    supervisor = taptap.Supervisor(["sh", "-c", "exit 1"])

    async def scenario() -> None:
        async def consume() -> None:
            async for _ in supervisor.chunks():
                pass
        task = asyncio.create_task(consume())
        await wait_until_async(lambda: len(clock.waits) >= restarts or task.done(), 30,
                               lambda: f"{restarts} restarts, delays so far {clock.waits}")
        await supervisor.stop()
        await task

    asyncio.run(scenario())
    return clock.waits[:restarts]


def test_the_delay_doubles_up_to_its_cap_of_a_minute(monkeypatch, logged):
    assert restart_delays(monkeypatch, [], 9) == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    said = [line.rsplit("; ", 1)[1] for line in logged.getvalue().splitlines()
            if line.startswith("W! taptap exited with code 1")]
    assert said[:9] == [f"restarting in {d} s" for d in (1, 2, 4, 8, 16, 32, 60, 60, 60)]


def test_a_healthy_minute_resets_the_delay_and_59_9_seconds_do_not(monkeypatch, logged):
    durations = [0, 0, 0, 60.0, 0, 59.9, 60.0]
    assert restart_delays(monkeypatch, durations, 7) == [1, 2, 4, 1, 2, 4, 1]
