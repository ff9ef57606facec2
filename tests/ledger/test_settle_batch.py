"""Settles of one event-loop turn go to Redis together, and come out as if settled one by one."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from proxy.ledger.batch import TurnBatcher
from proxy.ledger.keys import Keys
from proxy.domain import Attribution
from proxy.ledger.ledger import Ledger
from proxy.ledger.pipe import RedisPipe
from tests.ledger.helpers import FakeClock, epoch, event
from proxy.ledger.reports import read_usage

T0 = epoch("2026-11-23T18:30:00")
BUCKETS = ("h2026112318", "d20261123", "w2026W48", "m202611", "total")
PEOPLE = [Attribution("acme", "planner", "run-1", "k1"), Attribution("acme", "coder", "run-2"),
          Attribution("acme", "planner", None, "k2"), Attribution("beta", "default", "run-9")]
MODELS = ["gpt-4o-mini", "gpt-4o", "claude-3-5-sonnet"]


def _events(prefix: str) -> list:
    return [event(f"{prefix}{n}", PEOPLE[n % len(PEOPLE)], ts=T0 + n, model=MODELS[n % len(MODELS)],
                  cost_nano=1_000 + 37 * n, prompt=100 + n, completion=10 + n % 7, cached=n % 3,
                  reasoning=n % 2, estimated=n % 5 == 0)
            for n in range(40)]


async def _dump(client: aioredis.Redis, prefix: str) -> dict[str, object]:
    """Every usage hash, ranking and event stream under ``prefix``, keyed without the prefix."""
    out: dict[str, object] = {}
    async for raw in client.scan_iter(match=f"{prefix}:*", count=1000):
        key = raw.decode()
        name = key[len(prefix):]
        kind = (await client.type(key)).decode()
        if kind == "hash" and ":u:" in key:
            out[name] = {f.decode(): int(v) for f, v in (await client.hgetall(key)).items()}
        elif kind == "zset":
            out[name] = {m.decode(): s for m, s in await client.zrange(key, 0, -1, withscores=True)}
        elif kind == "stream":  # the entries' fields and values, in order (without their ids)
            out[name] = [list(fields.items()) for _, fields in await client.xrange(key)]
    return out


@pytest.fixture(params=["pipe", "redis-py"])
async def ledgers(request, redis_client, redis_url, key_prefix):
    """Two ledgers on the same Redis under two prefixes, on the shared pipe or on redis-py."""
    pipe = RedisPipe.from_url(redis_url) if request.param == "pipe" else None
    made = [Ledger(redis_client, prefix=f"{key_prefix}{side}", clock=FakeClock(T0), pipe=pipe) for side in "ab"]
    yield made
    if pipe is not None:
        await pipe.close()
    for side in "ab":
        keys = [k async for k in redis_client.scan_iter(match=f"{key_prefix}{side}:*", count=1000)]
        if keys:
            await redis_client.delete(*keys)


async def test_a_batch_leaves_what_settling_one_by_one_leaves(ledgers, redis_client):
    one_by_one, together = ledgers
    for e in _events("r"):
        assert (await one_by_one.settle(e)).recorded
    sizes: list[int] = []
    write = together._settles.batcher._write
    together._settles.batcher._write = lambda jobs: (sizes.append(len(jobs)), write(jobs))[1]
    outcomes = await asyncio.gather(*(together.settle(e) for e in _events("r")))
    assert sizes == [40]  # one batch: two script calls (one per project) in one round trip
    assert all(o.recorded for o in outcomes)
    alone = await _dump(redis_client, one_by_one.keys.prefix)
    batched = await _dump(redis_client, together.keys.prefix)
    assert alone and batched == alone
    assert batched[":{acme}:u:project:d20261123:acme"]["requests"] == 30
    assert len(batched[":{beta}:events"]) == 10
    assert batched[":{acme}:events"][0][:6] == [(b"request_id", b"r0"), (b"ts", b"%.3f" % T0), (b"project", b"acme"),
                                               (b"agent", b"planner"), (b"session", b"run-1"), (b"key_id", b"k1")]


async def test_a_request_id_twice_in_one_batch_is_recorded_once(ledgers, redis_client):
    ledger = ledgers[0]
    who = PEOPLE[0]
    first, again = await asyncio.gather(ledger.settle(event("same", who, ts=T0, cost_nano=500)),
                                        ledger.settle(event("same", who, ts=T0, cost_nano=999)))
    assert (first.recorded, again.recorded) == (True, False)
    report = await read_usage(ledger, "project", "acme", "day")
    assert (report["requests"], report["cost_usd"]) == (1, "0.0000005")
    assert await redis_client.xlen(ledger.keys.events("acme")) == 1


async def test_alerts_in_one_batch_are_claimed_in_order_once_each(ledgers):
    ledger = ledgers[0]
    who = Attribution("acme", "planner")
    await ledger.set_budget("project", "acme", 1_000, "day", "soft", thresholds=[0.5, 0.8, 1.0])
    outcomes = await asyncio.gather(*(ledger.settle(event(f"r{n}", who, ts=T0, cost_nano=300)) for n in range(5)))
    crossed = [[(c.threshold, c.spent_nano) for c in o.alerts] for o in outcomes]
    # 300, 600, 900, 1200, 1500 spent after each: 50 % on the 2nd, 80 % on the 3rd, 100 % on the 4th.
    assert crossed == [[], [(0.5, 600)], [(0.8, 900)], [(1.0, 1200)], []]


async def test_a_reservation_made_after_a_queued_settle_sees_it(redis_client, redis_url, key_prefix):
    pipe = RedisPipe.from_url(redis_url)
    ledger = Ledger(redis_client, prefix=key_prefix, clock=FakeClock(T0), pipe=pipe)
    who = Attribution("acme", "planner")
    try:
        await ledger.set_budget("project", "acme", 10_000, "day")
        assert (await ledger.reserve("r1", who, 6_000, deadline_s=60)).ok
        recording = ledger.queue_settle(event("r1", who, ts=T0, cost_nano=1_000))  # queued, not awaited
        second = await ledger.reserve("r2", who, 9_000, deadline_s=60)              # 10 000 - 1 000 spent
        assert second.ok and second.tightest.spent_nano == 1_000
        assert (await recording).reserved_nano == 6_000
    finally:
        await pipe.close()


async def test_usage_keys_get_their_ttl_when_created_and_renewed_once_an_hour_per_process(redis_client, key_prefix):
    clock = FakeClock(T0)
    ledger = Ledger(redis_client, prefix=key_prefix, clock=clock)
    who = Attribution("acme", "planner")
    day = Keys(key_prefix).usage("acme", "project", "d20261123", "acme")
    await ledger.settle(event("r1", who, ts=T0))
    assert 400 * 86400 - 5 < await redis_client.ttl(day) <= 400 * 86400
    await redis_client.expire(day, 1_000)
    await ledger.settle(event("r2", who, ts=T0 + 60))             # same hour: not renewed again
    assert await redis_client.ttl(day) <= 1_000
    await ledger.settle(event("r3", who, ts=T0 + 3600))           # the next hour renews it
    assert await redis_client.ttl(day) > 1_000
    await redis_client.expire(day, 1_000)
    restarted = Ledger(redis_client, prefix=key_prefix, clock=clock)
    await restarted.settle(event("r4", who, ts=T0 + 3660))        # another process renews on its first write
    assert await redis_client.ttl(day) > 1_000


async def test_turn_batcher_writes_one_turns_jobs_together_and_hands_errors_to_each():
    writes: list[list[int]] = []

    async def results(jobs: list[int]) -> list[object]:
        return [ValueError(f"bad {j}") if j < 0 else j * 10 for j in jobs]

    def write(jobs: list[int]):
        writes.append(jobs)
        return results(jobs)

    batcher: TurnBatcher[int, int] = TurnBatcher(write)
    futures = [batcher.submit(j) for j in (1, -2, 3)]
    await batcher.settled()
    assert writes == [[1, -2, 3]]
    assert futures[0].result() == 10 and futures[2].result() == 30
    with pytest.raises(ValueError, match="bad -2"):
        futures[1].result()
    assert await batcher.submit(4) == 40
    assert writes == [[1, -2, 3], [4]]


async def test_turn_batcher_gives_a_failed_write_to_every_job_of_the_batch():
    async def broken(jobs: list[int]) -> list[object]:
        raise ConnectionError("gone")

    batcher: TurnBatcher[int, int] = TurnBatcher(lambda jobs: broken(jobs))
    futures = [batcher.submit(j) for j in (1, 2)]
    await batcher.settled()
    for future in futures:
        with pytest.raises(ConnectionError, match="gone"):
            future.result()


@pytest.mark.parametrize("stored", [2**53 - 10, 2**53 + 1, 2**62])
async def test_sums_past_what_a_double_holds_exactly_stay_exact(ledgers, redis_client, stored):
    ledger = ledgers[0]
    who = Attribution("acme", "planner")
    total = Keys(ledger.keys.prefix).usage("acme", "project", "total", "acme")
    await redis_client.hset(total, mapping={"requests": 5, "cost": stored})
    await asyncio.gather(*(ledger.settle(event(f"r{n}", who, ts=T0, cost_nano=101 + n)) for n in range(3)))
    assert int(await redis_client.hget(total, "cost")) == stored + 101 + 102 + 103
    assert int(await redis_client.hget(total, "requests")) == 8
