"""A reservation sees the settles its process queued before it, as if they had been written.

Settles wait in a queue until the end of the loop turn that queued them, for others to join
their batch; a reservation sends the queue first and waits for it. Each scenario runs the same operations on two ledgers:
one on the pipe and one on redis-py (no delay). Every reservation must come out the same.
"""

from __future__ import annotations

import asyncio
import os
import random

import pytest

from proxy.domain import Attribution
from proxy.ledger.idempotency import marker, slot
from proxy.ledger.ledger import Ledger
from proxy.ledger.pipe import RedisPipe
from tests.ledger.helpers import FakeClock, epoch, event

T0 = epoch("2026-11-23T18:58:00")  # two minutes before an hour boundary
PEOPLE = [Attribution("acme", "planner", "run-1", "k1"), Attribution("acme", "coder", None, "k1"),
          Attribution("acme", "planner", "run-2"), Attribution("acme", "coder", "run-1", "k2")]


def _seen(outcome) -> tuple:
    t = outcome.tightest
    view = None if t is None else (t.scope, t.id, t.period, t.limit_nano, t.spent_nano, t.reserved_nano)
    return outcome.ok, outcome.room_nano, view


@pytest.fixture
async def pair(redis_client, redis_url, key_prefix):
    """(piped, plain, clock): the same budgets, one ledger on the pipe, one on redis-py."""
    clock = FakeClock(T0)
    # As after a Redis restart: no script is loaded. The pipe loads them when it connects.
    # (Only on the tests' own embedded Redis: SCRIPT FLUSH is server-wide.)
    if not os.environ.get("REDIS_URL"):
        await redis_client.script_flush()
    pipe = RedisPipe.from_url(redis_url)
    piped = Ledger(redis_client, prefix=f"{key_prefix}a", clock=clock, pipe=pipe)
    plain = Ledger(redis_client, prefix=f"{key_prefix}b", clock=clock)
    for ledger in (piped, plain):
        await ledger.set_budget("project", "acme", 60_000, "day")
        await ledger.set_budget("agent", "acme/planner", 30_000, "month")
        await ledger.set_budget("key", "acme/k1", 20_000, "hour")
        await ledger.set_budget("session", "acme/run-1", 25_000, "total", "soft")
    yield piped, plain, clock
    await pipe.close()
    for side in "ab":
        keys = [k async for k in redis_client.scan_iter(match=f"{key_prefix}{side}:*", count=1000)]
        if keys:
            await redis_client.delete(*keys)


@pytest.mark.parametrize("seed", range(6))
async def test_reservations_behind_queuedd_settles_match_the_plain_order(pair, seed):
    piped, plain, clock = pair
    rng = random.Random(seed)
    in_flight: list[tuple[str, Attribution, int]] = []
    recordings = []
    behind_queued = 0
    for n in range(120):
        step = rng.random()
        if step < 0.45 or not in_flight:
            who, amount, rid = rng.choice(PEOPLE), rng.randrange(0, 4_000), f"r{n}"
            deadline = rng.choice([30, 600])
            behind_queued += any(not r.done() for r in recordings)
            seen = [await ledger.reserve(rid, who, amount, deadline_s=deadline) for ledger in (piped, plain)]
            assert _seen(seen[0]) == _seen(seen[1]), f"step {n}"
            if seen[0].ok:
                in_flight.append((rid, who, amount))
        elif step < 0.9:
            rid, who, amount = in_flight.pop(rng.randrange(len(in_flight)))
            # Mostly under the hold, sometimes over it (an overrun), sometimes nothing.
            cost = rng.choice([0, amount // 2, amount, amount + 500])
            for ledger in (piped, plain):
                recordings.append(ledger.queue_settle(event(rid, who, ts=clock(), cost_nano=cost)))
        elif step < 0.97:
            clock.advance(rng.choice([5, 40, 90]))  # holds of 30 s expire; the hour turns
        else:
            await asyncio.gather(*recordings)
            recordings.clear()
    await asyncio.gather(*recordings)
    assert behind_queued > 10  # the scenario did make reservations while settles were queued
    for scope, scope_id in [("project", "acme"), ("agent", "acme/planner"), ("key", "acme/k1"),
                            ("session", "acme/run-1")]:
        states = [await ledger.budget_state(scope, scope_id) for ledger in (piped, plain)]
        assert (states[0].spent_nano, states[0].reserved_nano) == (states[1].spent_nano, states[1].reserved_nano)


async def test_a_reservation_sends_the_queued_settles_first_and_sees_them(pair, redis_client):
    piped, _, clock = pair
    who = PEOPLE[0]
    assert (await piped.reserve("r1", who, 6_000, deadline_s=60)).ok
    recording = piped.queue_settle(event("r1", who, ts=clock(), cost_nano=1_000))
    assert not recording.done()  # queued, not sent: the reservation in this same turn sends it
    second = await piped.reserve("r2", who, 9_000, deadline_s=60)
    # The tightest budget is the key's hourly 20 000: 1 000 spent, r1's hold of 6 000 released.
    assert second.ok and (second.tightest.scope, second.tightest.spent_nano) == ("key", 1_000)
    assert second.tightest.reserved_nano == 9_000
    assert recording.done() and recording.result().reserved_nano == 6_000


async def test_a_queued_settle_is_sent_at_the_end_of_its_loop_turn_without_a_reservation(pair, redis_client):
    piped, _, clock = pair
    who = PEOPLE[1]
    recording = piped.queue_settle(event("r1", who, ts=clock(), cost_nano=1_000))
    outcome = await asyncio.wait_for(recording, timeout=5)
    assert outcome.recorded
    assert await redis_client.sismember(piped.keys.done("acme", slot(clock())), marker("r1"))


async def test_a_refusal_behind_queued_settles_counts_their_spend(pair):
    piped, _, clock = pair
    who = PEOPLE[1]  # coder with key k1: the key's hourly budget of 20 000 is the tightest
    assert (await piped.reserve("r1", who, 15_000, deadline_s=60)).ok
    recording = piped.queue_settle(event("r1", who, ts=clock(), cost_nano=15_000))
    # 20 000 - 15 000 spent leaves 5 000: a hold of 6 000 is refused, one of 5 000 is not.
    refused = await piped.reserve("r2", who, 6_000, deadline_s=60)
    assert not refused.ok and (refused.tightest.spent_nano, refused.tightest.reserved_nano) == (15_000, 0)
    await recording
    assert (await piped.reserve("r3", who, 5_000, deadline_s=60)).ok


async def test_queued_spend_of_the_previous_hour_does_not_count_in_the_new_one(pair):
    piped, _, clock = pair
    who = PEOPLE[1]
    await piped.set_budget("key", "acme/k1", 3_000, "hour")
    clock.set("2026-11-23T18:59:59")
    assert (await piped.reserve("r1", who, 2_500, deadline_s=60)).ok
    recording = piped.queue_settle(event("r1", who, ts=clock(), cost_nano=2_500))
    clock.set("2026-11-23T19:00:01")
    second = await piped.reserve("r2", who, 2_900, deadline_s=60)  # a new hour: the key's spend is 0
    assert second.ok and (second.tightest.scope, second.tightest.spent_nano) == ("key", 0)
    assert (await recording).recorded
    day = await piped.budget_state("project", "acme")
    assert day.spent_nano == 2_500 and day.reserved_nano == 2_900
