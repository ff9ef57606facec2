"""The ledger against a real Redis, under random interleavings, on the server's path: the pipe
and budget leases, with settles queued behind reservations (and, once, on redis-py alone).

A model keeps what should be true: which requests hold a reservation, what was settled when.
After every step: every budget's spent equals the model's exactly, a hard budget's spent plus
what Redis holds never exceeds its limit, and recorded totals equal the sum of settled costs (a
second settle of the same request changes nothing). A reservation is never granted where the
model has no room. Without leases, Redis's holds and every reservation's outcome equal the
model's exactly; with them, Redis holds at least the model's holds (a lease also holds what it
has not lent), and exactly those once this process's leases are closed (and no lease still
holds a crashed request). Requests whose hold passed its deadline are treated as crashed: they never
settle (a proxy's deadline outlasts its upstream timeout).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, replace

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition, rule,
                                 run_state_machine_as_test)

from proxy.ledger.keys import Keys
from proxy.domain import Attribution, SettleOutcome
from proxy.ledger.ledger import Ledger
from proxy.ledger.periods import PERIODS, bucket_ids
from proxy.ledger.pipe import RedisPipe
from tests.ledger.helpers import FakeClock, epoch, event


@dataclass(frozen=True)
class Budget:
    scope: str
    id: str
    limit: int
    period: str
    mode: str

    def applies(self, who: Attribution) -> bool:
        local = self.id.partition("/")[2]
        return {"project": True, "agent": who.agent == local, "session": who.session == local}[self.scope]


BUDGETS = (
    Budget("project", "acme", 3000, "day", "hard"),
    Budget("agent", "acme/a1", 2000, "month", "hard"),
    Budget("agent", "acme/a2", 500, "week", "soft"),
    Budget("session", "acme/s1", 1500, "total", "hard"),
    Budget("session", "acme/s2", 1000, "hour", "hard"),
)
WHO = tuple(Attribution("acme", agent, session) for agent in ("a1", "a2") for session in (None, "s1", "s2"))
# Sunday 23:30 UTC: the hour, day, ISO week and month all end within half an hour.
START = epoch("2026-11-29T23:30:00")
JUMPS = (1, 7, 59, 61, 601, 1800, 3600, 86400, 7 * 86400)


@dataclass
class Hold:
    who: Attribution
    amount: int
    deadline_ms: int


def make_machine(redis_url: str, production: bool):
    class LedgerMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.loop = asyncio.new_event_loop()
            self.prefix = f"fbp{uuid.uuid4().hex[:12]}"
            self.client = aioredis.Redis.from_url(redis_url)
            self.clock = FakeClock(START)
            self.pipe = RedisPipe.from_url(redis_url) if production else None
            self.ledger = Ledger(self.client, prefix=self.prefix, clock=self.clock, pipe=self.pipe,
                                 lease_requests=4 if production else 0)
            self.holds: dict[str, Hold] = {}
            self.settled: dict[str, tuple[Attribution, int, float]] = {}
            self.queued: list[tuple[asyncio.Future[SettleOutcome], int]] = []
            self.leases_may_be_open = False   # a reservation was made since leases last closed
            # Until then a drawn request that crashed may still be held in its lease (a lease's
            # hold lasts up to 600.25 s past the last reservation).
            self.inexact_until = START
            self.last_reserved_at = START
            self.serial = 0

        def run(self, coro):
            return self.loop.run_until_complete(coro)

        def teardown(self) -> None:
            async def clean() -> None:
                await self.ledger.close_leases()
                if self.pipe is not None:
                    await self.pipe.close()
                keys = [k async for k in self.client.scan_iter(match=f"{self.prefix}:*", count=1000)]
                if keys:
                    await self.client.delete(*keys)
                await self.client.aclose()
            self.run(clean())
            self.loop.close()

        # -- the model --------------------------------------------------------------------

        @property
        def now_ms(self) -> int:
            return int(self.clock.now * 1000)

        def live(self) -> dict[str, Hold]:
            return {rid: h for rid, h in self.holds.items() if h.deadline_ms >= self.now_ms}

        def spent(self, budget: Budget) -> int:
            index = PERIODS.index(budget.period)
            current = bucket_ids(self.clock.now)[index]
            return sum(cost for who, cost, ts in self.settled.values()
                       if budget.applies(who) and bucket_ids(ts)[index] == current)

        def held(self, budget: Budget) -> int:
            return sum(h.amount for h in self.live().values() if budget.applies(h.who))

        # -- steps ------------------------------------------------------------------------

        @initialize()
        def create_budgets(self) -> None:
            for b in BUDGETS:
                self.run(self.ledger.set_budget(b.scope, b.id, b.limit, b.period, b.mode))

        # Small amounts too: a lease (4 of them) is granted only within a quarter of the room.
        @rule(who=st.sampled_from(WHO), amount=st.one_of(st.integers(0, 80), st.integers(0, 1600)),
              deadline_s=st.sampled_from((5, 60, 600)))
        def reserve(self, who: Attribution, amount: int, deadline_s: int) -> None:
            self.check_reserve(who, amount, deadline_s)

        @rule(who=st.sampled_from(WHO), delta=st.integers(-2, 2), deadline_s=st.sampled_from((5, 60, 600)))
        def reserve_at_the_edge(self, who: Attribution, delta: int, deadline_s: int) -> None:
            """An amount right around the least room left: where an off-by-one would overspend."""
            room = min(b.limit - self.spent(b) - self.held(b) for b in BUDGETS if b.mode == "hard" and b.applies(who))
            self.check_reserve(who, max(0, room + delta), deadline_s)

        def check_reserve(self, who: Attribution, amount: int, deadline_s: int) -> None:
            self.serial += 1
            rid = f"req-{self.serial}"
            rooms = [b.limit - self.spent(b) - self.held(b) for b in BUDGETS if b.mode == "hard" and b.applies(who)]
            outcome = self.run(self.ledger.reserve(rid, who, amount, deadline_s=deadline_s))
            self.leases_may_be_open = production
            self.last_reserved_at = self.clock.now
            if production:  # never through where the model has no room; a lease may refuse early
                assert all(room >= amount for room in rooms) or not outcome.ok
            else:
                assert outcome.ok == all(room >= amount for room in rooms)
                assert outcome.room_nano == max(0, min(rooms))
            if outcome.ok:
                self.holds[rid] = Hold(who, amount, self.now_ms + deadline_s * 1000)

        @precondition(lambda self: self.live())
        @rule(pick=st.integers(0, 10**6), fraction=st.fractions(0, 1))
        def settle(self, pick: int, fraction) -> None:
            live = self.live()
            rid = sorted(live)[pick % len(live)]
            hold = self.holds.pop(rid)
            cost = int(hold.amount * fraction)
            outcome = self.run(self.ledger.settle(event(rid, hold.who, ts=self.clock.now, cost_nano=cost)))
            # alerts have their own tests (test_alert_thresholds.py)
            assert replace(outcome, alerts=()) == SettleOutcome(recorded=True, reserved_nano=hold.amount, overrun_nano=0)
            self.settled[rid] = (hold.who, cost, self.clock.now)

        @precondition(lambda self: self.live())
        @rule(pick=st.integers(0, 10**6), fraction=st.fractions(0, 1), who=st.sampled_from(WHO),
              amount=st.integers(0, 80), deadline_s=st.sampled_from((5, 60, 600)))
        def settle_queued_then_reserve(self, pick: int, fraction, who: Attribution, amount: int,
                                       deadline_s: int) -> None:
            """A settle queued and not awaited, then a reservation: it sees the settle."""
            live = self.live()
            rid = sorted(live)[pick % len(live)]
            hold = self.holds.pop(rid)
            cost = int(hold.amount * fraction)

            async def queue() -> asyncio.Future[SettleOutcome]:
                return self.ledger.queue_settle(event(rid, hold.who, ts=self.clock.now, cost_nano=cost))

            self.queued.append((self.run(queue()), hold.amount))
            self.settled[rid] = (hold.who, cost, self.clock.now)
            self.check_reserve(who, amount, deadline_s)

        @rule()
        def close_leases(self) -> None:
            self.run(self.ledger.close_leases())
            self.leases_may_be_open = False

        @precondition(lambda self: self.settled)
        @rule(pick=st.integers(0, 10**6), cost=st.integers(0, 5000))
        def settle_again(self, pick: int, cost: int) -> None:
            rid = sorted(self.settled)[pick % len(self.settled)]
            who, _, ts = self.settled[rid]  # a resend or a replay carries the event as first sent
            outcome = self.run(self.ledger.settle(event(rid, who, ts=ts, cost_nano=cost)))
            assert outcome == SettleOutcome(recorded=False, reserved_nano=0, overrun_nano=0)

        @precondition(lambda self: self.live())
        @rule(pick=st.integers(0, 10**6))
        def release(self, pick: int) -> None:
            live = self.live()
            rid = sorted(live)[pick % len(live)]
            hold = self.holds.pop(rid)
            assert self.run(self.ledger.release(rid, hold.who)) == hold.amount

        @rule(seconds=st.sampled_from(JUMPS))
        def advance_clock(self, seconds: int) -> None:
            self.clock.advance(seconds)
            # holds past their deadline belong to crashed requests: they never settle
            live = self.live()
            if len(live) < len(self.holds):
                self.inexact_until = max(self.inexact_until, self.last_reserved_at + 601)
            self.holds = live

        # -- what must always hold --------------------------------------------------------

        @invariant()
        def budgets_match_the_model_and_hard_ones_are_never_overspent(self) -> None:
            for b in BUDGETS:
                state = self.run(self.ledger.budget_state(b.scope, b.id))
                assert state.spent_nano == self.spent(b), b
                if production and (self.leases_may_be_open or self.clock.now <= self.inexact_until):
                    # An open lease holds what it has not lent; a drawn request that crashed
                    # stays held in its lease until the lease's deadline.
                    assert state.reserved_nano >= self.held(b), b
                else:
                    assert state.reserved_nano == self.held(b), b
                if b.mode == "hard":
                    assert state.spent_nano + state.reserved_nano <= b.limit, b
            for written, amount in self.queued:  # budget_state waited for them
                assert replace(written.result(), alerts=()) == SettleOutcome(recorded=True, reserved_nano=amount,
                                                                             overrun_nano=0)
            self.queued.clear()


        @invariant()
        def recorded_totals_equal_the_settled_costs(self) -> None:
            keys = Keys(self.prefix)
            total = self.run(self.client.hgetall(keys.usage("acme", "project", "total", "acme")))
            assert int(total.get(b"cost", 0)) == sum(cost for _, cost, _ in self.settled.values())
            assert int(total.get(b"requests", 0)) == len(self.settled)
            assert self.run(self.client.xlen(keys.events("acme"))) == len(self.settled)

    return LedgerMachine


@pytest.mark.parametrize("path", ["pipe-leases", "redis-py"])
def test_random_interleavings_never_overspend_or_double_count(redis_url: str, path: str) -> None:
    run_state_machine_as_test(
        make_machine(redis_url, production=path == "pipe-leases"),
        settings=settings(max_examples=30 if path == "pipe-leases" else 15, stateful_step_count=50,
                          deadline=None, suppress_health_check=[HealthCheck.too_slow]),
    )
