"""Sessions are kept while they are active: an idle session leaves nothing behind, and the
rankings of sessions by cost hold the costliest few, never every session seen."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest

from proxy.domain import Attribution
from proxy.ledger.keys import Keys
from proxy.ledger.ledger import Ledger, Ttls
from proxy.ledger.reports import read_usage, top_sessions
from tests.ledger.helpers import FakeClock, epoch, event

T0 = epoch("2026-11-23T18:30:00")
BUCKETS = ("h2026112318", "d20261123", "w2026W48", "m202611", "total")


async def keys_naming(redis_client, key_prefix: str, text: str) -> list[str]:
    return [k.decode() async for k in redis_client.scan_iter(match=f"{key_prefix}:*{text}*")]


async def rankings(redis_client, k: Keys) -> dict[str, list[str]]:
    return {b: [m.decode() for m in await redis_client.zrevrange(k.top_sessions("acme", b), 0, -1)]
            for b in BUCKETS}


async def test_a_session_idle_past_its_ttl_leaves_no_key_behind(redis_client, key_prefix):
    ledger = Ledger(redis_client, prefix=key_prefix, clock=FakeClock(T0), ttls=Ttls(session=1))
    k = Keys(key_prefix)
    await ledger.settle(event("r1", Attribution("acme", "planner", "idle-run", "k1"), ts=T0, cost_nano=50))
    assert await keys_naming(redis_client, key_prefix, "idle-run") == [k.session("acme", "idle-run")]
    for _ in range(100):  # Redis expires them one second after the session's last write
        if not await keys_naming(redis_client, key_prefix, "idle-run"):
            break
        await asyncio.sleep(0.1)
    assert await keys_naming(redis_client, key_prefix, "idle-run") == []
    assert await rankings(redis_client, k) == dict.fromkeys(BUCKETS, [])
    # the project's, agent's, key's and model's totals stay
    for scope, sid in (("project", "acme"), ("agent", "planner"), ("key", "k1"), ("model", "gpt-4o-mini")):
        assert await redis_client.hget(k.usage("acme", scope, "total", sid), "cost") == b"50"
        assert await redis_client.ttl(k.usage("acme", scope, "total", sid)) == -1


async def test_rankings_lose_sessions_whose_aggregates_expired(redis_client, key_prefix):
    clock = FakeClock(T0)
    ledger = Ledger(redis_client, prefix=key_prefix, clock=clock)
    k = Keys(key_prefix)
    await ledger.settle(event("r1", Attribution("acme", "planner", "gone"), ts=T0, cost_nano=90))
    await ledger.settle(event("r2", Attribution("acme", "planner", "stays"), ts=T0, cost_nano=10))
    await redis_client.delete(k.session("acme", "gone"))  # as if the idle session's TTL had run out
    clock.advance(3600)  # the next hour's first write prunes the rankings it touches
    await ledger.settle(event("r3", Attribution("acme", "planner", "stays"), ts=clock(), cost_nano=10))
    ranked = await rankings(redis_client, k)
    assert ranked["total"] == ranked["d20261123"] == ranked["m202611"] == ["stays"]
    report = await read_usage(ledger, "project", "acme", "total")
    assert [row["session"] for row in report["top_sessions"]] == ["stays"]
    assert report["cost_usd"] == "0.00000011"  # the project keeps what the session spent


@pytest.mark.parametrize("piped_batches", [1, 7])
async def test_rankings_hold_the_n_costliest_sessions_and_never_more(redis_client, key_prefix, piped_batches):
    ledger = Ledger(redis_client, prefix=key_prefix, clock=FakeClock(T0), ranking_size=3)
    k = Keys(key_prefix)
    costs = {f"s{i}": (i * 37) % 11 + 1 for i in range(20)}
    n = 0
    for round_ in range(3):
        for session, cost in costs.items():
            n += 1
            ledger.queue_settle(event(f"r{n}", Attribution("acme", "a", session), ts=T0, cost_nano=cost))
            if n % piped_batches == 0:
                await ledger.settled()
            for bucket in BUCKETS:
                assert await redis_client.zcard(k.top_sessions("acme", bucket)) <= 3
    await ledger.settled()
    # a session that fell out comes back with its whole cost
    low = min(costs, key=lambda s: (costs[s], s))
    await ledger.settle(event("big", Attribution("acme", "a", low), ts=T0, cost_nano=100))
    spent = {s: 3 * c for s, c in costs.items()} | {low: 3 * costs[low] + 100}
    expected = sorted(spent, key=lambda s: (-spent[s], s))[:3]
    for bucket in BUCKETS:
        ranked = await redis_client.zrevrange(k.top_sessions("acme", bucket), 0, -1, withscores=True)
        assert len(ranked) == 3
        assert {m.decode(): int(score) for m, score in ranked} == {s: spent[s] for s in expected}
    top = await top_sessions(ledger, "acme", "day", datetime(2026, 11, 23), 10)
    assert [row["session"] for row in top] == expected
