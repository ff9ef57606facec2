"""A sink waits while the host's CPUs are busy, as long as its oldest event not yet stored is
younger than ``defer_busy_s``; then it drains whatever the load. And how busy the host is, read
from a ``/proc/stat`` of the test's own."""

from __future__ import annotations

import asyncio
import time

import pytest

from proxy.domain import Attribution
from proxy.ledger.ledger import Ledger
from proxy.record.cpu import HostCpu
from proxy.record.sink import Sink, SinkOptions
from tests.ledger.helpers import FakeClock, event
from tests.record.helpers import count_rows


class Cpu:
    """A host whose busy share the test sets."""

    def __init__(self, busy: float | None) -> None:
        self.busy = busy

    def busy_share(self) -> float | None:
        return self.busy


@pytest.fixture
def ledger(redis_client, key_prefix) -> Ledger:
    return Ledger(redis_client, prefix=key_prefix, stream_maxlen=0)


async def _recorded(ledger: Ledger, n: int, ts: float) -> None:
    for i in range(n):
        await ledger.settle(event(f"busy-{ts:.0f}-{i}", Attribution("acme", "planner"), ts=ts))


async def test_a_busy_host_makes_the_sink_wait_until_its_oldest_event_is_too_old(ledger, pg_url):
    start = time.time()
    clock, cpu = FakeClock(start), Cpu(0.97)
    await _recorded(ledger, 5, start)
    sink = Sink(ledger, pg_url, SinkOptions(defer_busy_s=10), clock=clock, cpu=cpu)
    try:
        assert await sink.defers()  # busy, and the oldest event is 0 s old
        assert sink.lag.events == 5 and await asyncio.to_thread(count_rows, pg_url) == 0
        clock.advance(9)
        assert await sink.defers()
        clock.advance(1.5)  # now 10.5 s old: drain, busy or not
        assert not await sink.defers()
        assert await sink.step() == 5
        await sink.tidy()
        assert (sink.lag.events, sink.deferred) == (0, 2)
        cpu.busy = 0.5  # not busy: no wait, whatever the lag
        await _recorded(ledger, 3, clock())
        assert not await sink.defers()
        cpu.busy = None  # cannot tell: no wait
        assert not await sink.defers()
    finally:
        await sink.close()
    assert await asyncio.to_thread(count_rows, pg_url) == 5


async def _rows_reach(pg_url: str, n: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while (got := await asyncio.to_thread(count_rows, pg_url)) < n and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return got


async def _stop(task: asyncio.Future, sink: Sink) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await sink.close()


async def test_a_sink_told_never_to_wait_drains_a_busy_host(ledger, pg_url):
    await _recorded(ledger, 4, time.time())
    sink = Sink(ledger, pg_url, SinkOptions(defer_busy_s=0), cpu=Cpu(1.0))
    task = asyncio.ensure_future(sink.run_forever())
    try:
        assert await _rows_reach(pg_url, 4) == 4
    finally:
        await _stop(task, sink)
    assert sink.deferred == 0


async def test_the_running_sink_waits_then_drains_once_the_lag_reaches_the_bound(ledger, pg_url):
    start = time.time()
    clock = FakeClock(start)
    await _recorded(ledger, 6, start)
    sink = Sink(ledger, pg_url, SinkOptions(defer_busy_s=10), clock=clock, cpu=Cpu(0.99))
    task = asyncio.ensure_future(sink.run_forever())
    try:
        await asyncio.sleep(1.0)
        assert await asyncio.to_thread(count_rows, pg_url) == 0 and sink.deferred > 0
        clock.advance(11)  # (the lag runs from the stream entries' ids: Redis's clock, a little after start)
        assert await _rows_reach(pg_url, 6) == 6
    finally:
        await _stop(task, sink)


def _stat(path, user: int, system: int, idle: int, iowait: int = 0) -> None:
    path.write_text(f"cpu  {user} 0 {system} {idle} {iowait} 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")


def test_the_busy_share_is_what_others_used_since_the_last_look(tmp_path):
    stat, own = tmp_path / "stat", [0.0]
    _stat(stat, 1000, 500, 2000)
    cpu = HostCpu(stat, own=lambda: own[0])
    _stat(stat, 1000 + 150, 500 + 40, 2000 + 10)  # 200 ticks: 190 used, 10 idle
    assert cpu.busy_share() == pytest.approx(0.95)
    own[0] += 40 / HostCpu.TICKS_PER_S  # of the next 200 ticks, 40 were this process's own
    _stat(stat, 1150 + 160, 540 + 20, 2010 + 10, 10)  # 180 used, 10 idle, 10 waiting on I/O
    assert cpu.busy_share() == pytest.approx(0.7)
    assert cpu.busy_share() is None  # no time passed


def test_without_proc_stat_the_host_is_never_busy(tmp_path):
    assert HostCpu(tmp_path / "missing").busy_share() is None
    (tmp_path / "odd").write_text("intr 1 2 3\n")
    assert HostCpu(tmp_path / "odd").busy_share() is None
