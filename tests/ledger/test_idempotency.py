"""Exactly once in a bounded memory: a resent, replayed or late settle changes nothing, and the
markers that make it so are a few sets per project that expire whole."""

from __future__ import annotations

import pytest

from pricing.money import nano_to_usd
from proxy.domain import Attribution
from proxy.errors import LedgerUnavailable
from proxy.ledger.idempotency import SLOT_S, marker, slot
from proxy.ledger.keys import Keys
from proxy.ledger.ledger import Ledger
from proxy.ledger.reports import read_usage
from proxy.ledger.spool import PROGRESS_EVERY, Spool
from tests.ledger.helpers import FakeClock, epoch, event
from tests.ledger.test_spool import FailingAfter

T0 = epoch("2026-11-23T18:30:00")
USD = 10**9
WHO = Attribution("acme", "planner", "run-42", "k1")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def ledger(redis_client, key_prefix, clock) -> Ledger:
    return Ledger(redis_client, prefix=key_prefix, clock=clock, idempotency_window_s=600)


async def totals(ledger: Ledger) -> tuple[int, str]:
    report = await read_usage(ledger, "project", "acme", "total")
    return report["requests"], report["cost_usd"]


async def done_keys(redis_client, key_prefix: str) -> list[str]:
    return sorted([k.decode() async for k in redis_client.scan_iter(match=f"{key_prefix}:*:done:*")])


async def test_a_resend_inside_the_window_changes_nothing(ledger: Ledger, redis_client, key_prefix):
    e = event("r1", WHO, ts=T0, cost_nano=700)
    assert (await ledger.settle(e)).recorded
    again = await ledger.settle(e)
    assert (again.recorded, again.reserved_nano, again.alerts) == (False, 0, ())
    assert await totals(ledger) == (1, "0.0000007")
    assert await redis_client.xlen(Keys(key_prefix).events("acme")) == 1


async def test_markers_are_one_set_per_project_and_slot_that_expires_whole(ledger: Ledger, redis_client,
                                                                           key_prefix):
    k = Keys(key_prefix)
    for i in range(300):  # three slots of event time, 100 requests each
        ledger.queue_settle(event(f"r{i}", WHO, ts=T0 + (i // 100) * SLOT_S, cost_nano=1))
    await ledger.settled()
    expected = [k.done("acme", slot(T0 + n * SLOT_S)) for n in range(3)]
    assert await done_keys(redis_client, key_prefix) == sorted(expected)
    for key in expected:
        assert await redis_client.scard(key) == 100
        assert 595 <= await redis_client.ttl(key) <= 600
    assert await redis_client.sismember(expected[0], marker("r0"))
    assert len(marker("r0")) == 16


async def test_a_spool_replay_of_a_recorded_event_changes_nothing(ledger: Ledger, tmp_path):
    e = event("r1", WHO, ts=T0, cost_nano=99)
    await ledger.settle(e)  # recorded, but its caller saw Redis fail and spooled it
    spool = Spool(tmp_path / "usage.ndjson")
    await spool.append(e)
    assert await spool.replay(ledger) == 0
    assert await totals(ledger) == (1, "0.000000099")


async def test_a_replay_resumed_after_the_window_records_each_event_once(ledger: Ledger, redis_client,
                                                                         key_prefix, tmp_path):
    spool = Spool(tmp_path / "usage.ndjson")
    count = PROGRESS_EVERY * 2 + 5
    for i in range(count):
        await spool.append(event(f"r{i}", WHO, ts=T0, cost_nano=10))
    with pytest.raises(LedgerUnavailable):
        await spool.replay(FailingAfter(ledger, PROGRESS_EVERY + 3))  # type: ignore[arg-type]
    # The outage outlasts the idempotency window: every marker is gone.
    for key in await done_keys(redis_client, key_prefix):
        await redis_client.delete(key)
    assert await spool.replay(ledger) == count - PROGRESS_EVERY - 3
    assert await totals(ledger) == (count, nano_to_usd(count * 10))
    assert not spool.progress_path.exists() and await spool.pending() is False


async def test_a_settle_after_the_reservation_deadline_is_recorded_once(ledger: Ledger, clock: FakeClock):
    await ledger.set_budget("project", "acme", 10 * USD, "day")
    assert (await ledger.reserve("late", WHO, 2 * USD, deadline_s=5)).ok
    clock.advance(60)  # its process went quiet: the hold lapses and the next reservation reclaims it
    assert (await ledger.reserve("other", Attribution("acme", "coder"), 1 * USD, deadline_s=60)).ok
    e = event("late", WHO, ts=clock(), cost_nano=USD)
    first = await ledger.settle(e)
    assert (first.recorded, first.reserved_nano) == (True, 0)
    again = await ledger.settle(e)
    assert (again.recorded, again.reserved_nano) == (False, 0)
    status = await ledger.get_budget("project", "acme")
    assert (status["spent_usd"], status["reserved_usd"]) == ("1.00", "1.00")
    assert await totals(ledger) == (1, "1.00")
