"""Budget leases: under concurrent load, requests draw their worst case from one hold in Redis.

Each test runs on the pipe (the server's path) and on redis-py. What must hold: a lease is
only taken while another request of the same attribution is in flight, or began less than a
lease's life ago, and the budget has four times the lease's room; drawn requests settle their
part exactly and see the budget as their own reservation would; what a lease did not lend
goes back; a refusal first takes back this process's leases; and hard budgets are never
overspent, whatever the interleaving of two processes.
"""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timezone

import pytest

from proxy.ledger import leases as leases_module
from proxy.ledger.leases import LEASE_LIFE_S, Leases
from proxy.ledger.reports import read_usage
from proxy.domain import Attribution
from proxy.ledger.ledger import Ledger
from proxy.ledger.pipe import RedisPipe
from tests.ledger.helpers import FakeClock, epoch, event

T0 = epoch("2026-11-23T18:30:00")
PLANNER = Attribution("acme", "planner", "run-42", "k1")
CODER = Attribution("acme", "coder")
DEADLINE_S = 60.0


@pytest.fixture(params=["pipe", "redis-py"])
async def make_ledger(request, redis_client, redis_url, key_prefix):
    """``make_ledger(lease_requests)``: ledgers sharing one store, as processes of one server do."""
    pipes: list[RedisPipe] = []
    clock = FakeClock(T0)

    def make(lease_requests: int = 8) -> Ledger:
        pipe = None
        if request.param == "pipe":
            pipe = RedisPipe.from_url(redis_url)
            pipes.append(pipe)
        return Ledger(redis_client, prefix=key_prefix, clock=clock, pipe=pipe, lease_requests=lease_requests)

    make.clock = clock
    make.reader = Ledger(redis_client, prefix=key_prefix, clock=clock)  # reads as another process would
    yield make
    for pipe in pipes:
        await pipe.close()


async def _reserved(reader: Ledger, scope: str = "project", scope_id: str = "acme") -> tuple[int, int]:
    """Held and spent as Redis has them, read as another process would."""
    state = await reader.budget_state(scope, scope_id)
    return state.reserved_nano, state.spent_nano


async def test_a_request_after_a_quiet_spell_is_reserved_on_its_own(make_ledger):
    ledger = make_ledger()
    await ledger.set_budget("project", "acme", 1_000_000, "day")
    for n in range(3):
        make_ledger.clock.advance(LEASE_LIFE_S)  # the last request of PLANNER began a lease's life ago
        assert (await ledger.reserve(f"r{n}", PLANNER, 100, deadline_s=DEADLINE_S)).ok
        assert await _reserved(make_ledger.reader) == (100, n * 70)
        await ledger.settle(event(f"r{n}", PLANNER, ts=T0, cost_nano=70))
    assert ledger.leases_granted == 0


async def test_requests_one_after_another_draw_from_a_lease_and_see_the_budget_exactly(make_ledger):
    ledger = make_ledger(8)
    await ledger.set_budget("project", "acme", 1_000_000, "day")
    seen = []
    for n in range(6):
        outcome = await ledger.reserve(f"r{n}", PLANNER, 100, deadline_s=DEADLINE_S)
        assert outcome.ok
        seen.append((outcome.tightest.spent_nano, outcome.tightest.reserved_nano, outcome.room_nano))
        await ledger.settle(event(f"r{n}", PLANNER, ts=T0, cost_nano=70))
        make_ledger.clock.advance(LEASE_LIFE_S / 10)
    # r0 was alone; r1 began less than a lease's life after it and asked for a lease of 8 x 100,
    # which r2..r5 drew from. Each saw the spend of those before it and its own hold, as a
    # reservation of its own would have.
    assert ledger.leases_granted == 1
    assert seen == [(70 * n, 100, 1_000_000 - 70 * n) for n in range(6)]
    # In Redis: the lease less the parts of the five requests settled against it.
    assert await _reserved(make_ledger.reader) == (800 - 500, 6 * 70)
    await ledger.close_leases()
    assert await _reserved(make_ledger.reader) == (0, 6 * 70)


async def test_requests_in_flight_together_draw_from_one_lease(make_ledger):
    ledger = make_ledger(8)
    await ledger.set_budget("project", "acme", 1_000_000, "day")
    first = await ledger.reserve("r0", PLANNER, 100, deadline_s=DEADLINE_S)
    assert first.ok and await _reserved(make_ledger.reader) == (100, 0)
    # r0 is in flight: r1 asks for a lease of 8 worst cases and draws from it, as do r2..r8.
    outcomes = [await ledger.reserve(f"r{n}", PLANNER, 100, deadline_s=DEADLINE_S) for n in range(1, 9)]
    assert all(o.ok for o in outcomes) and ledger.leases_granted == 1
    assert await _reserved(make_ledger.reader) == (100 + 800, 0)
    # Each sees the budget as its own reservation would: what was lent so far counts as held.
    assert [o.tightest.reserved_nano for o in outcomes] == [100 + 100 * n for n in range(1, 9)]
    assert [o.room_nano for o in outcomes] == [1_000_000 - 100 * n for n in range(1, 9)]
    # The lease is all lent: r9 asks for a new one.
    assert (await ledger.reserve("r9", PLANNER, 100, deadline_s=DEADLINE_S)).ok
    assert ledger.leases_granted == 2
    assert await _reserved(make_ledger.reader) == (100 + 800 + 800, 0)
    for n in range(10):
        await ledger.settle(event(f"r{n}", PLANNER, ts=T0, cost_nano=60 + n))
    await ledger.close_leases()  # what the open lease did not lend goes back
    assert await _reserved(make_ledger.reader) == (0, sum(60 + n for n in range(10)))


async def test_a_drawn_request_settles_its_part_and_reports_an_overrun(make_ledger):
    ledger = make_ledger(4)
    await ledger.set_budget("project", "acme", 1_000_000, "day")
    await ledger.reserve("r0", PLANNER, 100, deadline_s=DEADLINE_S)
    await ledger.reserve("r1", PLANNER, 100, deadline_s=DEADLINE_S)          # the lease: 400
    assert ledger.leases_granted == 1
    outcome = await ledger.settle(event("r1", PLANNER, ts=T0, cost_nano=130))
    assert outcome.recorded and outcome.reserved_nano == 100 and outcome.overrun_nano == 30
    assert await _reserved(make_ledger.reader) == (100 + 300, 130)
    again = await ledger.settle(event("r1", PLANNER, ts=T0, cost_nano=130))
    assert not again.recorded and await _reserved(make_ledger.reader) == (100 + 300, 130)


async def test_a_released_draw_goes_back_to_its_lease_or_to_redis(make_ledger):
    ledger = make_ledger(4)
    await ledger.set_budget("project", "acme", 1_000_000, "day")
    await ledger.reserve("r0", PLANNER, 100, deadline_s=DEADLINE_S)
    await ledger.reserve("r1", PLANNER, 100, deadline_s=DEADLINE_S)
    await ledger.reserve("r2", PLANNER, 100, deadline_s=DEADLINE_S)
    assert await ledger.release("r1", PLANNER) == 100                       # back to the open lease
    await ledger.reserve("r3", PLANNER, 200, deadline_s=DEADLINE_S)          # 400 - 100 (r2) - 200
    assert await _reserved(make_ledger.reader) == (100 + 400, 0) and ledger.leases_granted == 1
    await ledger.close_leases()                                                   # the lease closes, 100 goes back
    assert await _reserved(make_ledger.reader) == (100 + 300, 0)
    assert await ledger.release("r2", PLANNER) == 100                       # the lease is closed: in Redis
    assert await ledger.release("r3", PLANNER) == 200
    assert await ledger.release("r0", PLANNER) == 100
    assert await _reserved(make_ledger.reader) == (0, 0)


async def test_no_lease_without_four_times_its_room_and_refusals_match_leases_off(make_ledger):
    leasing, plain = make_ledger(8), make_ledger(0)
    await leasing.set_budget("project", "acme", 3_000, "day")
    await leasing.set_budget("project", "beta", 3_000, "day")
    # A lease of 8 x 100 needs 3,200 of room: never granted here, each request is held alone,
    # whether they come one after the other (each with the previous ones in flight) or at once.
    for ledger, who in ((leasing, PLANNER), (plain, Attribution("beta", "coder"))):
        one_by_one = [(await ledger.reserve(f"a{n}", who, 100, deadline_s=DEADLINE_S)).ok for n in range(16)]
        together = await asyncio.gather(*(ledger.reserve(f"b{n}", who, 100, deadline_s=DEADLINE_S)
                                          for n in range(16)))
        assert all(one_by_one) and sum(o.ok for o in together) == 14
    assert leasing.leases_granted == 0
    assert await _reserved(make_ledger.reader) == (3_000, 0)


async def test_a_refusal_first_takes_back_what_this_process_leased(make_ledger):
    ledger = make_ledger(8)
    await ledger.set_budget("project", "acme", 10_000, "day")
    await ledger.reserve("r0", PLANNER, 100, deadline_s=DEADLINE_S)
    await ledger.reserve("r1", PLANNER, 100, deadline_s=DEADLINE_S)          # lease of 800, 100 lent
    assert await _reserved(make_ledger.reader) == (900, 0)
    # 9,150 does not fit beside the lease (room 9,100) but does once its 700 unlent go back.
    outcome = await ledger.reserve("big", CODER, 9_150, deadline_s=DEADLINE_S)
    assert outcome.ok and outcome.tightest.reserved_nano == 100 + 100 + 9_150
    assert await _reserved(make_ledger.reader) == (10_000 - 650, 0)
    # The planner's next request finds no lease and does not fit.
    assert not (await ledger.reserve("r2", PLANNER, 700, deadline_s=DEADLINE_S)).ok


async def test_a_lease_stops_lending_after_its_life_and_gives_back_the_rest(make_ledger):
    ledger = make_ledger(8)
    await ledger.set_budget("project", "acme", 1_000_000, "day")
    await ledger.reserve("r0", PLANNER, 100, deadline_s=DEADLINE_S)
    await ledger.reserve("r1", PLANNER, 100, deadline_s=DEADLINE_S)
    assert await _reserved(make_ledger.reader) == (900, 0)
    await asyncio.sleep(LEASE_LIFE_S + 0.1)  # its timer closes it
    await ledger.settled()
    assert await _reserved(make_ledger.reader) == (200, 0)
    make_ledger.clock.advance(1.0)
    await ledger.reserve("r2", PLANNER, 100, deadline_s=DEADLINE_S)          # a new lease
    assert ledger.leases_granted == 2


async def test_a_budget_lowered_through_this_process_applies_to_its_next_request_at_once(make_ledger):
    ledger = make_ledger(8)
    await ledger.set_budget("project", "acme", 1_000_000, "day")
    for n in range(3):  # back to back: r1 asks for a lease, r2 draws from it
        assert (await ledger.reserve(f"r{n}", PLANNER, 100, deadline_s=DEADLINE_S)).ok
        await ledger.settle(event(f"r{n}", PLANNER, ts=T0, cost_nano=70))
    assert ledger.leases_granted == 1
    await ledger.set_budget("project", "acme", 250, "day")  # 210 spent: room for 40
    refused = await ledger.reserve("r3", PLANNER, 100, deadline_s=DEADLINE_S)
    assert not refused.ok and refused.tightest.limit_nano == 250 and refused.room_nano == 40
    assert await _reserved(make_ledger.reader) == (0, 210)


async def test_a_lease_left_by_a_dead_process_is_reclaimed_after_its_deadline(make_ledger):
    dead, alive = make_ledger(8), make_ledger(8)
    await dead.set_budget("project", "acme", 1_000_000, "day")
    await dead.reserve("r0", PLANNER, 100, deadline_s=DEADLINE_S)
    await dead.reserve("r1", PLANNER, 100, deadline_s=DEADLINE_S)
    assert await _reserved(make_ledger.reader) == (900, 0)
    make_ledger.clock.advance(DEADLINE_S + LEASE_LIFE_S + 1)
    outcome = await alive.reserve("x", CODER, 10, deadline_s=DEADLINE_S)
    assert outcome.ok and outcome.reclaimed == 2                              # r0's hold and the lease
    assert await _reserved(make_ledger.reader) == (10, 0)


@pytest.mark.parametrize("seed", range(4))
async def test_two_processes_with_leases_never_overspend_a_hard_budget(make_ledger, seed):
    rng = random.Random(seed)
    limit = 200_000
    ledgers = [make_ledger(8), make_ledger(8)]
    await ledgers[0].set_budget("project", "acme", limit, "day")
    await ledgers[0].set_budget("agent", "acme/planner", limit // 2, "day", "hard")
    people = [PLANNER, CODER, Attribution("acme", "coder", "run-9")]
    charged = []

    gate = asyncio.Semaphore(48)  # below redis-py's connection pool

    async def one(n: int) -> None:
        async with gate:
            await one_request(n)

    async def one_request(n: int) -> None:
        ledger, who = rng.choice(ledgers), rng.choice(people)
        amount = rng.randrange(500, 3_000)
        rid = f"q{n}"
        outcome = await ledger.reserve(rid, who, amount, deadline_s=DEADLINE_S)
        await asyncio.sleep(rng.random() / 200)
        if not outcome.ok:
            return
        if rng.random() < 0.1:
            await ledger.release(rid, who)
            return
        cost = rng.randrange(0, amount + 1)
        await ledger.settle(event(rid, who, ts=T0, cost_nano=cost))
        charged.append((who.agent, cost))

    # One request of each attribution in flight in each process throughout, as under steady
    # load: the random ones are then reserved beside it, and may ask for leases.
    steady = [(ledger, who, f"steady{i}{j}") for i, ledger in enumerate(ledgers) for j, who in enumerate(people)]
    for ledger, who, rid in steady:
        assert (await ledger.reserve(rid, who, 500, deadline_s=DEADLINE_S)).ok
    await asyncio.gather(*(one(n) for n in range(300)))
    for ledger, who, rid in steady:
        await ledger.settle(event(rid, who, ts=T0, cost_nano=400))
        charged.append((who.agent, 400))
    for ledger in ledgers:
        await ledger.close_leases()
    reserved, spent = await _reserved(make_ledger.reader)
    assert reserved == 0 and spent == sum(c for _, c in charged) <= limit
    planner_reserved, planner_spent = await _reserved(make_ledger.reader, "agent", "acme/planner")
    assert planner_reserved == 0 and planner_spent == sum(c for a, c in charged if a == "planner") <= limit // 2
    assert sum(ledger.leases_granted for ledger in ledgers) > 0
    assert spent > limit * 0.8  # the budgets were used up, not refused early


async def test_a_reservation_after_queued_settles_of_drawn_requests_counts_them_once(make_ledger):
    # A reservation sees the settles queued before it: their cost as spent and their holds as
    # released, for drawn requests their part of the lease.
    ledger = make_ledger(8)
    await ledger.set_budget("project", "acme", 10_000, "day")
    await ledger.reserve("r0", PLANNER, 100, deadline_s=DEADLINE_S)
    for n in range(1, 5):
        await ledger.reserve(f"r{n}", PLANNER, 100, deadline_s=DEADLINE_S)    # a lease of 800, 400 lent
    await asyncio.sleep(LEASE_LIFE_S + 0.1)                                    # closed: 400 given back
    assert await _reserved(make_ledger.reader) == (500, 0)
    queued = [ledger.queue_settle(event(f"r{n}", PLANNER, ts=T0, cost_nano=100)) for n in range(1, 5)]
    # Exactly what is left once they are written: 10,000 - 400 spent - 100 held by r0.
    outcome = await ledger.reserve("big", CODER, 9_500, deadline_s=DEADLINE_S)
    assert outcome.ok and outcome.room_nano == 9_500
    assert all(o.recorded for o in await asyncio.gather(*queued))
    assert await _reserved(make_ledger.reader) == (100 + 9_500, 400)


def test_attributions_quiet_for_a_lease_life_are_forgotten():
    leases = Leases(8)
    for n in range(5000):  # one request of each of 5,000 attributions, a millisecond apart
        leases.began(f"r{n}", Attribution("acme", f"agent-{n}"), n / 1000)
        leases.ended(f"r{n}")
    assert 250 <= len(leases.last) < 5000 - 3000 and not leases.in_flight and not leases.holders
    assert min(leases.last.values()) >= 4.095 - LEASE_LIFE_S  # pruned once, at the 4,096th


async def test_a_budget_read_leaves_the_lease_open_and_sees_the_queued_settles(make_ledger, monkeypatch):
    monkeypatch.setattr(leases_module, "LEASE_LIFE_S", 60.0)  # however slow the machine, it stays open
    ledger = make_ledger(8)
    await ledger.set_budget("project", "acme", 1_000_000, "day")
    assert (await ledger.reserve("r0", PLANNER, 100, deadline_s=DEADLINE_S)).ok   # its own hold
    assert (await ledger.reserve("r1", PLANNER, 100, deadline_s=DEADLINE_S)).ok   # a lease of 800, drawn
    ledger.queue_settle(event("r1", PLANNER, ts=T0, cost_nano=70))                # queued, not awaited
    # The reads see the queued settle; the lease's whole hold counts as reserved.
    state = await ledger.budget_state("project", "acme")
    assert (state.reserved_nano, state.spent_nano) == (100 + 800 - 100, 70)
    report = await read_usage(ledger, "project", "acme", "day", datetime.fromtimestamp(T0, tz=timezone.utc))
    assert (report["requests"], report["cost_usd"]) == (1, "0.00000007")
    # The lease is still open: the next request draws from it, without Redis.
    outcome = await ledger.reserve("r2", PLANNER, 100, deadline_s=DEADLINE_S)
    assert outcome.ok and ledger.leases_granted == 1
    assert (outcome.tightest.spent_nano, outcome.tightest.reserved_nano) == (70, 100 + 100)
    assert await _reserved(make_ledger.reader) == (100 + 700, 70)
    await ledger.settle(event("r2", PLANNER, ts=T0, cost_nano=60))
    await ledger.settle(event("r0", PLANNER, ts=T0, cost_nano=50))
    await ledger.close_leases()
    assert await _reserved(make_ledger.reader) == (0, 180)
