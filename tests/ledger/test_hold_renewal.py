"""Renewed holds: a live process keeps the reservations it has in flight, a stopped one's lapse.

A hold (a request's own reservation, or a budget lease's) gets a deadline ``hold_ttl_s`` ahead;
its process renews the deadlines of what it still has in flight (``Ledger.renew_holds``). Each
test runs on the pipe (the server's path) and on redis-py, with two ledgers on one store as
two processes: one holds, the other reserves and reads as another process would. The clock
is moved by hand except where the background renewer itself runs.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from proxy.domain import Attribution
from proxy.ledger.leases import LEASE_LIFE_S
from proxy.ledger.ledger import Ledger
from proxy.ledger.pipe import RedisPipe
from tests.ledger.helpers import FakeClock, epoch, event

T0 = epoch("2026-11-23T18:30:00")
WHO = Attribution("acme", "planner", "run-42", "k1")
OTHER = Attribution("acme", "coder")
TTL_S = 2.0


@pytest.fixture(params=["pipe", "redis-py"])
async def make_ledger(request, redis_client, redis_url, key_prefix):
    """``make_ledger(lease_requests=0, clock=None)``: ledgers sharing one store, with a
    ``hold_ttl_s`` of ``TTL_S``; the clock is the fixture's hand-moved one unless given."""
    pipes: list[RedisPipe] = []
    shared = FakeClock(T0)

    def make(lease_requests: int = 0, clock=None) -> Ledger:
        pipe = None
        if request.param == "pipe":
            pipe = RedisPipe.from_url(redis_url)
            pipes.append(pipe)
        return Ledger(redis_client, prefix=key_prefix, clock=clock or shared, pipe=pipe,
                      lease_requests=lease_requests, hold_ttl_s=TTL_S)

    make.clock = shared
    yield make
    for pipe in pipes:
        await pipe.close()


async def _held_and_spent(ledger: Ledger) -> tuple[int, int]:
    state = await ledger.budget_state("project", "acme")
    return state.reserved_nano, state.spent_nano


async def test_a_hold_its_process_stopped_renewing_is_reclaimed_by_the_next_reservation(make_ledger):
    holder, other = make_ledger(), make_ledger()
    clock = make_ledger.clock
    await other.set_budget("project", "acme", 1_000, "day")
    assert (await holder.reserve("r1", WHO, 800, deadline_s=TTL_S)).ok

    clock.advance(TTL_S * 0.75)
    assert await holder.renew_holds() == 1  # the project budget's hold (no other budget exists)
    clock.advance(TTL_S * 0.75)  # past the first deadline, not the renewed one
    refused = await other.reserve("o1", OTHER, 500, deadline_s=TTL_S)
    assert (refused.ok, refused.reclaimed) == (False, 0)
    assert await _held_and_spent(other) == (800, 0)

    # The holder stops renewing (it died): after hold_ttl_s (and a lease's life, the margin
    # every renewal adds) its hold stops counting and the next reservation reclaims it.
    clock.advance(TTL_S + LEASE_LIFE_S)
    assert await _held_and_spent(other) == (0, 0)
    granted = await other.reserve("o1", OTHER, 500, deadline_s=TTL_S)
    assert (granted.ok, granted.reclaimed) == (True, 1)
    assert await _held_and_spent(other) == (500, 0)


async def test_a_renewal_sent_twice_changes_nothing(make_ledger, redis_client):
    holder, clock = make_ledger(), make_ledger.clock
    await holder.set_budget("project", "acme", 1_000, "day")
    await holder.set_budget("agent", "acme/planner", 1_000, "day")
    assert (await holder.reserve("r1", WHO, 300, deadline_s=TTL_S)).ok
    zset = holder.keys.reservations("acme", "project", "acme")
    assert await redis_client.zscore(zset, "r1") == (T0 + TTL_S) * 1000

    clock.advance(1.0)
    assert await holder.renew_holds() == 2  # on the project's and the agent's budget
    renewed = (T0 + 1.0 + TTL_S + LEASE_LIFE_S) * 1000
    assert await redis_client.zscore(zset, "r1") == renewed
    assert await holder.renew_holds() == 0  # sent again: the same deadline, nothing moves
    assert await redis_client.zscore(zset, "r1") == renewed
    assert await _held_and_spent(holder) == (300, 0)

    # A renewal never moves a deadline back (one computed earlier and sent late).
    clock.advance(-0.5)
    assert await holder.renew_holds() == 0
    assert await redis_client.zscore(zset, "r1") == renewed

    # Nor brings back a hold that was settled in between: only holds that still exist move.
    keys, args = [zset], [str(int((T0 + 60) * 1000)), "1", "r1"]
    await holder.settle(event("r1", WHO, ts=T0, cost_nano=250))
    assert await holder.scripts.renew(keys, args) == 0
    assert await redis_client.zscore(zset, "r1") is None
    assert await holder.renew_holds() == 0
    assert await _held_and_spent(holder) == (0, 250)


async def test_a_request_longer_than_the_hold_ttl_keeps_its_hold_and_settles_exactly(make_ledger):
    # The real clock and the background renewer: a round every TTL_S / 3.
    holder, other = make_ledger(lease_requests=4, clock=time.time), make_ledger(clock=time.time)
    await other.set_budget("project", "acme", 100_000, "day")
    renewing = asyncio.get_running_loop().create_task(holder.renew_forever())
    try:
        assert (await holder.reserve("long", WHO, 1_000, deadline_s=TTL_S)).ok  # its own hold
        assert (await holder.reserve("drawn", WHO, 1_000, deadline_s=TTL_S)).ok  # from a lease of 4
        assert holder.leases_granted == 1
        await asyncio.sleep(LEASE_LIFE_S + 0.1)  # the lease stops lending and gives back 3_000
        await holder.settled()
        assert await _held_and_spent(other) == (2_000, 0)

        await asyncio.sleep(2.5 * TTL_S)  # both outlive their first deadlines
        refused = await other.reserve("o1", OTHER, 98_500, deadline_s=TTL_S)
        assert (refused.ok, refused.reclaimed) == (False, 0)
        assert await _held_and_spent(other) == (2_000, 0)

        long_done = await holder.settle(event("long", WHO, ts=time.time(), cost_nano=700))
        drawn_done = await holder.settle(event("drawn", WHO, ts=time.time(), cost_nano=600))
    finally:
        renewing.cancel()
        await asyncio.gather(renewing, return_exceptions=True)
    assert (long_done.recorded, long_done.reserved_nano, long_done.overrun_nano) == (True, 1_000, 0)
    assert (drawn_done.recorded, drawn_done.reserved_nano, drawn_done.overrun_nano) == (True, 1_000, 0)
    assert await _held_and_spent(other) == (0, 1_300)
    assert await holder.renew_holds() == 0  # nothing left in flight


async def test_a_lease_of_a_process_that_stopped_renewing_lapses(make_ledger):
    holder, other = make_ledger(lease_requests=4), make_ledger()
    clock = make_ledger.clock
    await other.set_budget("project", "acme", 100_000, "day")
    assert (await holder.reserve("own", WHO, 1_000, deadline_s=TTL_S)).ok
    assert (await holder.reserve("drawn", WHO, 1_000, deadline_s=TTL_S)).ok
    assert holder.leases_granted == 1
    await asyncio.sleep(LEASE_LIFE_S + 0.1)  # the lease closes; the part it lent stays held
    await holder.settled()
    await holder.settle(event("own", WHO, ts=T0, cost_nano=900))
    assert await _held_and_spent(other) == (1_000, 900)

    clock.advance(TTL_S)
    assert await holder.renew_holds() == 1  # the lease, for the request still drawn from it
    clock.advance(TTL_S)  # past the lease's first deadline, not its renewed one
    assert await _held_and_spent(other) == (1_000, 900)

    clock.advance(TTL_S + LEASE_LIFE_S)  # the holder stopped renewing
    assert await _held_and_spent(other) == (0, 900)
    granted = await other.reserve("o1", OTHER, 99_100, deadline_s=TTL_S)  # all the room left
    assert (granted.ok, granted.reclaimed) == (True, 1)
    assert await _held_and_spent(other) == (99_100, 900)


async def test_a_failed_renewal_is_logged_once_a_minute_and_tried_again_next_round(make_ledger, redis_client,
                                                                                  caplog):
    holder, clock = make_ledger(), make_ledger.clock
    await holder.set_budget("project", "acme", 1_000, "day")
    assert (await holder.reserve("r1", WHO, 300, deadline_s=TTL_S)).ok
    zset = holder.keys.reservations("acme", "project", "acme")
    # Redis refuses the renewal (the zset replaced by a string: WRONGTYPE), two rounds running.
    await redis_client.delete(zset)
    await redis_client.set(zset, "not a zset")
    with caplog.at_level("WARNING", logger="farebox.ledger"):
        assert await holder.renew_holds() == 0
        clock.advance(TTL_S / 3)
        assert await holder.renew_holds() == 0
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "renewing held reservations failed for 1 project(s)" in warnings[0].getMessage()

    # The next round renews the hold, still in flight.
    await redis_client.delete(zset)
    await redis_client.zadd(zset, {"r1": (T0 + TTL_S) * 1000})
    clock.advance(TTL_S / 3)
    assert await holder.renew_holds() == 1
    assert await redis_client.zscore(zset, "r1") == int((clock.now + TTL_S + LEASE_LIFE_S) * 1000)
