"""A project's usage mix read back from its stream: the period's events by their own time, the
latest ones when there are more than asked for, and where the read may stop."""

from __future__ import annotations

import pytest

from proxy.domain import Attribution
from proxy.ledger import mix
from proxy.ledger.ledger import Ledger
from tests.ledger.helpers import FakeClock, epoch, event

T0 = epoch("2026-11-23T18:30:00")
WHO = Attribution("acme", "planner")


@pytest.fixture
def ledger(redis_client, key_prefix) -> Ledger:
    return Ledger(redis_client, prefix=key_prefix, clock=FakeClock(T0))


async def add(ledger: Ledger, entry_id: str, request_id: str, ts: float) -> None:
    """An event appended under a chosen id (settle's ids are the server's time when it records)."""
    fields = event(request_id, WHO, ts=ts).to_fields()
    await ledger.redis.xadd(ledger.keys.events("acme"), dict(zip(fields[::2], fields[1::2])), id=entry_id)


async def test_the_window_is_chosen_by_each_events_own_time(ledger):
    for n in range(5):
        await ledger.settle(event(f"r{n}", WHO, ts=T0 - 3600 * n))
    got = await mix.read_mix(ledger, "acme", T0 - 3 * 3600, T0 + 1, 100)
    assert [e.request_id for e in got.events] == ["r3", "r2", "r1", "r0"] and got.complete


async def test_more_events_than_the_limit_gives_the_latest_and_says_so(ledger):
    for n in range(2500):       # three pages
        await add(ledger, f"{int(T0 * 1000) + n}-0", f"r{n}", T0 + n)
    got = await mix.read_mix(ledger, "acme", T0, T0 + 10_000, 2100)
    assert len(got.events) == 2100 and not got.complete
    assert (got.events[0].request_id, got.events[-1].request_id) == ("r400", "r2499")
    whole = await mix.read_mix(ledger, "acme", T0, T0 + 10_000, 3000)
    assert len(whole.events) == 2500 and whole.complete


async def test_the_read_stops_at_entries_recorded_before_the_window(ledger):
    since = T0
    # recorded well before the window (by stream id), whatever time the event claims
    await add(ledger, f"{int(since * 1000) - mix.SKEW_MS - 1}-0", "early", since + 10)
    # recorded late (a spool replay), with its own time before the window: skipped
    await add(ledger, f"{int(since * 1000) + 5_000}-0", "replayed", since - 60)
    await add(ledger, f"{int(since * 1000) + 6_000}-0", "inside", since + 6)
    got = await mix.read_mix(ledger, "acme", since, since + 3600, 100)
    assert [e.request_id for e in got.events] == ["inside"]


async def test_known_projects(ledger):
    assert not await mix.is_known(ledger, "acme")
    await ledger.settle(event("r1", WHO, ts=T0))
    assert await mix.is_known(ledger, "acme")
