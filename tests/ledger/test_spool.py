"""The fail-open spool: events written while Redis is down are settled exactly once later."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from proxy.errors import LedgerUnavailable
from proxy.domain import Attribution, SettleOutcome, UsageEvent
from proxy.ledger.ledger import Ledger
from proxy.ledger.spool import Spool
from tests.ledger.helpers import FakeClock, epoch, event
from proxy.ledger.events import read_events
from proxy.ledger.reports import read_usage

T0 = epoch("2026-11-23T18:30:00")
WHO = Attribution("acme", "planner", "run-42", "k1")


@pytest.fixture
def ledger(redis_client, key_prefix) -> Ledger:
    return Ledger(redis_client, prefix=key_prefix, clock=FakeClock(T0))


@pytest.fixture
def spool(tmp_path) -> Spool:
    return Spool(tmp_path / "spool" / "usage.ndjson")


async def total_cost(ledger: Ledger) -> tuple[int, str]:
    report = await read_usage(ledger, "project", "acme", "total")
    return report["requests"], report["cost_usd"]


class FailingAfter:
    """A ledger whose Redis goes away after ``n`` settles."""

    def __init__(self, ledger: Ledger, n: int) -> None:
        self.ledger, self.left = ledger, n

    def __getattr__(self, name: str) -> object:
        return getattr(self.ledger, name)

    async def settle(self, e: UsageEvent) -> SettleOutcome:
        if self.left == 0:
            raise LedgerUnavailable("Redis is unavailable: connection refused")
        self.left -= 1
        return await self.ledger.settle(e)


async def test_replay_settles_every_spooled_event_then_empties_the_spool(spool: Spool, ledger: Ledger):
    events = [event(f"r{i}", WHO, ts=T0, cost_nano=1000 + i, clamped=None if i else 64) for i in range(3)]
    for e in events:
        await spool.append(e)
    assert await spool.pending() is True
    assert await spool.events() == events
    assert await spool.replay(ledger) == 3
    assert await spool.pending() is False
    assert not spool.path.exists() and not spool.replaying_path.exists()
    assert await total_cost(ledger) == (3, "0.000003003")
    assert await spool.replay(ledger) == 0


async def test_each_line_is_one_json_event(spool: Spool):
    e = event("r1", WHO, ts=T0 + 0.5, cost_nano=7, stream=True, estimated=True, clamped=256)
    await spool.append(e)
    [line] = spool.path.read_text().splitlines()
    assert UsageEvent.from_dict(json.loads(line)) == e


async def test_a_replay_interrupted_by_redis_records_each_event_once_when_resumed(spool: Spool, ledger: Ledger):
    for i in range(5):
        await spool.append(event(f"r{i}", WHO, ts=T0, cost_nano=10))
    with pytest.raises(LedgerUnavailable):
        await spool.replay(FailingAfter(ledger, 2))  # type: ignore[arg-type]
    assert await spool.pending() is True
    assert await total_cost(ledger) == (2, "0.00000002")
    await spool.append(event("r5", WHO, ts=T0, cost_nano=10))  # Redis still down for a moment
    assert await spool.replay(ledger) == 4  # r2..r5: the replay resumes after r1
    assert await total_cost(ledger) == (6, "0.00000006")
    assert await spool.pending() is False


async def test_an_already_recorded_event_replays_as_a_no_op(spool: Spool, ledger: Ledger):
    e = event("r1", WHO, ts=T0, cost_nano=99)
    await ledger.settle(e)
    await spool.append(e)
    assert await spool.replay(ledger) == 0
    assert await total_cost(ledger) == (1, "0.000000099")


async def test_events_appended_during_a_replay_are_kept_for_the_next(spool: Spool, ledger: Ledger):
    for i in range(50):
        await spool.append(event(f"a{i}", WHO, ts=T0, cost_nano=1))

    async def keep_appending() -> None:
        for i in range(50):
            await spool.append(event(f"b{i}", WHO, ts=T0, cost_nano=1))
            await asyncio.sleep(0)

    replayed, _ = await asyncio.gather(spool.replay(ledger), keep_appending())
    replayed += await spool.replay(ledger)
    assert replayed == 100
    assert await total_cost(ledger) == (100, "0.0000001")
    assert await spool.pending() is False


async def test_concurrent_appends_keep_every_line_whole(spool: Spool):
    await asyncio.gather(*(spool.append(event(f"r{i}", WHO, ts=T0, model="m" * 500)) for i in range(100)))
    assert sorted(e.request_id for e in await spool.events()) == sorted(f"r{i}" for i in range(100))


async def test_unreadable_or_invalid_lines_are_set_aside_not_lost(spool: Spool, ledger: Ledger):
    await spool.append(event("good1", WHO, ts=T0, cost_nano=5))
    with open(spool.path, "a") as f:
        f.write('{"request_id": "torn", "ts": 1\n')
    bad = event("bad", WHO, ts=T0).to_dict() | {"cost_nano": -3}
    with open(spool.path, "a") as f:
        f.write(json.dumps(bad) + "\n")
    await spool.append(event("good2", WHO, ts=T0, cost_nano=5))
    assert await spool.replay(ledger) == 2
    assert await total_cost(ledger) == (2, "0.00000001")
    rejected = spool.rejected_path.read_text().splitlines()
    assert rejected[0] == '{"request_id": "torn", "ts": 1' and json.loads(rejected[1])["request_id"] == "bad"
    assert await spool.pending() is False


async def test_a_line_torn_by_a_crash_does_not_swallow_the_next_event(spool: Spool, ledger: Ledger):
    spool.path.parent.mkdir(parents=True)
    spool.path.write_text('{"request_id": "torn", "ts"')  # the process died mid-write
    await spool.append(event("after", WHO, ts=T0, cost_nano=4))
    assert [e.request_id for e in await spool.events()] == ["after"]
    assert await spool.replay(ledger) == 1
    assert await total_cost(ledger) == (1, "0.000000004")
    assert spool.rejected_path.read_text() == '{"request_id": "torn", "ts"\n'


async def read_usage_events(ledger: Ledger) -> list[dict[str, str]]:
    return [entry.fields for entry in await read_events(ledger, ["acme"], (0, 0), 100)]


async def _expire_done_sets(ledger: Ledger) -> None:
    """What the idempotency window's end does to the done-markers."""
    async for key in ledger.redis.scan_iter(match=f"{ledger.keys.prefix}:{{acme}}:done:*"):
        await ledger.redis.delete(key)


async def test_a_replay_after_the_window_finds_an_event_already_recorded_in_the_stream(spool: Spool,
                                                                                       redis_client, key_prefix):
    """A settle that landed but whose reply was lost as Redis failed, spooled, and replayed after
    an outage longer than the idempotency window: the marker is gone, the event in the stream
    says it was recorded, and nothing is counted twice."""
    now = time.time()
    clock = FakeClock(now)
    ledger = Ledger(redis_client, prefix=key_prefix, clock=clock)
    landed = event("lost-reply", WHO, ts=now, cost_nano=5_000)
    assert (await ledger.settle(landed)).recorded      # landed; its reply is what was lost
    await spool.append(landed)
    fresh = event("only-spooled", WHO, ts=now + 1, cost_nano=7_000)
    await spool.append(fresh)
    clock.advance(ledger.idempotency_window_s + 60)
    await _expire_done_sets(ledger)
    assert await spool.replay(ledger) == 1              # only the one never recorded
    assert await total_cost(ledger) == (2, "0.000012")
    ids = [e["request_id"] for e in (await read_usage_events(ledger))]
    assert sorted(ids) == ["lost-reply", "only-spooled"]


async def test_a_replay_inside_the_window_does_not_read_the_stream(spool: Spool, ledger: Ledger, monkeypatch):
    from proxy.ledger import spool as spool_module

    async def must_not_look(*_: object) -> bool:
        raise AssertionError("looked in the stream")

    monkeypatch.setattr(spool_module, "in_stream", must_not_look)
    await spool.append(event("r1", WHO, ts=T0))
    assert await spool.replay(ledger) == 1
