"""Sessions recorded in the earlier layout (one hash per bucket) moved into their one hash at
start: the same values per bucket, the old hashes gone, session budgets spending the same, once."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from proxy.domain import Attribution
from proxy.ledger.keys import Keys
from proxy.ledger.ledger import Ledger
from proxy.ledger.reports import read_usage, top_sessions
from proxy.ledger.session_fields import decode
from tests.ledger.helpers import FakeClock, epoch, event

T0 = epoch("2026-11-23T18:30:00")
BUCKETS = ("h2026112318", "d20261123", "w2026W48", "m202611", "total")
TTLS = (48 * 3600, 864_000, 864_000, 864_000, 864_000)
OLD = {"requests": 3, "prompt_tokens": 300, "completion_tokens": 60, "cached_tokens": 5, "cost": 7_000,
       "estimated": 1, "m|gpt-4o|requests": 2, "m|gpt-4o|prompt_tokens": 200, "m|gpt-4o|completion_tokens": 40,
       "m|gpt-4o|cost": 6_000, "m|ns/odd|v1|requests": 1, "m|ns/odd|v1|prompt_tokens": 100,
       "m|ns/odd|v1|completion_tokens": 20, "m|ns/odd|v1|cost": 1_000}


async def write_old_layout(redis_client, k: Keys, session: str, scale: int = 1) -> None:
    for bucket, ttl in zip(BUCKETS, TTLS):
        name = k.usage("acme", "session", bucket, session)
        await redis_client.hset(name, mapping={f: v * scale for f, v in OLD.items()})
        await redis_client.expire(name, ttl)


async def raw(redis_client, key: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in (await redis_client.hgetall(key)).items()}


async def old_keys(redis_client, key_prefix: str) -> list[bytes]:
    return [k async for k in redis_client.scan_iter(match=f"{key_prefix}:*:u:session:*")]


async def test_old_session_hashes_move_into_one_hash_with_the_same_values(redis_client, key_prefix):
    k = Keys(key_prefix)
    await write_old_layout(redis_client, k, "run-1")
    await write_old_layout(redis_client, k, "run-2", scale=2)
    ledger = Ledger(redis_client, prefix=key_prefix, clock=FakeClock(T0))
    assert await ledger.migrate() == 10
    assert await old_keys(redis_client, key_prefix) == []
    for session, scale in (("run-1", 1), ("run-2", 2)):
        decoded = decode(await raw(redis_client, k.session("acme", session)))
        assert decoded == {bucket: {f: v * scale for f, v in OLD.items()} for bucket in BUCKETS}
        assert 864_000 - 5 <= await redis_client.ttl(k.session("acme", session)) <= 864_000  # the longer TTL
    assert await redis_client.get(k.layout()) == b"2"
    report = await read_usage(ledger, "session", "acme/run-1", "day")
    assert (report["requests"], report["cost_usd"], report["cached_tokens"]) == (3, "0.000007", 5)
    assert report["by_model"] == {
        "gpt-4o": {"requests": 2, "prompt_tokens": 200, "completion_tokens": 40, "cost_usd": "0.000006"},
        "ns/odd|v1": {"requests": 1, "prompt_tokens": 100, "completion_tokens": 20, "cost_usd": "0.000001"}}


async def test_a_session_budget_spends_the_same_after_the_move(redis_client, key_prefix):
    k = Keys(key_prefix)
    await write_old_layout(redis_client, k, "run-1")
    ledger = Ledger(redis_client, prefix=key_prefix, clock=FakeClock(T0))
    await ledger.set_budget("session", "acme/run-1", 10_000, "week")
    await ledger.migrate()
    assert (await ledger.budget_state("session", "acme/run-1")).spent_nano == 7_000
    who = Attribution("acme", "planner", "run-1")
    assert (await ledger.reserve("q1", who, 3_001, deadline_s=60)).ok is False
    assert (await ledger.reserve("q2", who, 3_000, deadline_s=60)).ok is True


async def test_the_move_adds_to_what_the_new_layout_already_holds(redis_client, key_prefix):
    k = Keys(key_prefix)
    ledger = Ledger(redis_client, prefix=key_prefix, clock=FakeClock(T0))
    await ledger.settle(event("r1", Attribution("acme", "planner", "run-1"), ts=T0, cost_nano=500, model="gpt-4o"))
    await redis_client.delete(k.layout())
    await write_old_layout(redis_client, k, "run-1")
    await ledger.migrate()
    decoded = decode(await raw(redis_client, k.session("acme", "run-1")))
    for bucket in BUCKETS:
        assert decoded[bucket]["cost"] == 7_500 and decoded[bucket]["m|gpt-4o|cost"] == 6_500
        assert decoded[bucket]["m|ns/odd|v1|cost"] == 1_000 and decoded[bucket]["requests"] == 4


async def test_moving_twice_changes_nothing(redis_client, key_prefix):
    k = Keys(key_prefix)
    await write_old_layout(redis_client, k, "run-1")
    ledger = Ledger(redis_client, prefix=key_prefix, clock=FakeClock(T0))
    first, second = await asyncio.gather(ledger.migrate(), Ledger(redis_client, prefix=key_prefix).migrate())
    assert first + second == 5
    after = await raw(redis_client, k.session("acme", "run-1"))
    await redis_client.delete(k.layout())  # even when the scan runs again
    assert await ledger.migrate() == 0
    assert await raw(redis_client, k.session("acme", "run-1")) == after


async def test_once_moved_starts_skip_the_scan(redis_client, key_prefix):
    k = Keys(key_prefix)
    ledger = Ledger(redis_client, prefix=key_prefix, clock=FakeClock(T0))
    assert await ledger.migrate() == 0
    await write_old_layout(redis_client, k, "late")
    assert await ledger.migrate() == 0
    assert len(await old_keys(redis_client, key_prefix)) == 5


async def test_reports_and_rankings_read_moved_sessions(redis_client, key_prefix):
    k = Keys(key_prefix)
    await write_old_layout(redis_client, k, "run-1")
    await write_old_layout(redis_client, k, "run-2", scale=2)
    for bucket in BUCKETS:
        await redis_client.zadd(k.top_sessions("acme", bucket), {"run-1": 7_000, "run-2": 14_000})
    ledger = Ledger(redis_client, prefix=key_prefix, clock=FakeClock(T0))
    await ledger.migrate()
    top = await top_sessions(ledger, "acme", "month", datetime.fromtimestamp(T0, tz=timezone.utc), 5)
    assert top == [
        {"session": "run-2", "requests": 6, "prompt_tokens": 600, "completion_tokens": 120, "cost_usd": "0.000014"},
        {"session": "run-1", "requests": 3, "prompt_tokens": 300, "completion_tokens": 60, "cost_usd": "0.000007"}]
