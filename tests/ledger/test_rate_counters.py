"""Rate limits in the ledger: counted in the reservation's step (requests and worst-case tokens),
refused with nothing held, lent by budget leases and given back, corrected to the tokens used
at settle, and kept only a minute past their minute."""

from __future__ import annotations

import asyncio

import pytest

from proxy.domain import Attribution, RateAsk, RateLimit
from proxy.ledger.ledger import Ledger
from tests.ledger.helpers import FakeClock, epoch, event

T0 = epoch("2026-11-23T18:30:05")          # 55 s left in its minute
WINDOW = int(T0) // 60
WHO = Attribution("acme", "planner", None, "key_0123456789abcdef")
DEADLINE_S = 60.0


def ask(rpm: int | None = None, tpm: int | None = None, tokens: int = 100) -> RateAsk:
    return RateAsk(limits=(RateLimit("project", "acme", rpm, tpm),), tokens=tokens)


async def counted(ledger: Ledger, window: int = WINDOW) -> tuple[int, int]:
    got = await ledger.redis.hgetall(ledger.keys.rate("acme", "project", window, "acme"))
    return int(got.get(b"r", 0)), int(got.get(b"t", 0))


@pytest.mark.parametrize("lease_requests", [0, 32])
async def test_concurrent_reservations_take_exactly_the_rpm(redis_client, key_prefix, lease_requests):
    ledger = Ledger(redis_client, prefix=key_prefix, clock=FakeClock(T0), lease_requests=lease_requests)
    await ledger.set_budget("project", "acme", 10**12, "day")
    outcomes = await asyncio.gather(*(ledger.reserve(f"r{i}", WHO, 1_000, deadline_s=DEADLINE_S, rate=ask(rpm=7))
                                      for i in range(20)))
    assert sum(o.ok for o in outcomes) == 7
    refused = [o.rate_refused for o in outcomes if not o.ok]
    assert len(refused) == 13 and all(r is not None and r.kind == "requests" for r in refused)
    assert refused[-1].used_requests == 7 and refused[-1].resets_at == (WINDOW + 1) * 60
    assert all(o.tightest is None for o in outcomes if not o.ok)
    assert await counted(ledger) == (7, 700)
    state = await ledger.budget_state("project", "acme")
    assert state.reserved_nano == 7_000          # nothing held for the refused


async def test_a_lease_counts_ahead_and_gives_back_what_it_did_not_lend(redis_client, key_prefix):
    clock = FakeClock(T0)
    ledger = Ledger(redis_client, prefix=key_prefix, clock=clock, lease_requests=32)
    rate = ask(rpm=10_000, tpm=10**9, tokens=50)
    first = await ledger.reserve("r0", WHO, 1_000, deadline_s=DEADLINE_S, rate=rate)
    second = await ledger.reserve("r1", WHO, 1_000, deadline_s=DEADLINE_S, rate=rate)  # asks for a lease
    third = await ledger.reserve("r2", WHO, 1_000, deadline_s=DEADLINE_S, rate=rate)   # drawn from it
    assert first.ok and second.ok and third.ok and ledger.leases_granted == 1
    assert await counted(ledger) == (1 + 32, 50 + 32 * 50)     # the lease counted its 32 ahead
    assert third.rate_hold is not None and third.rate_hold.window == WINDOW
    await ledger.close_leases()
    assert await counted(ledger) == (3, 150)                   # what it did not lend, given back


async def test_a_lease_is_not_granted_near_the_limit(redis_client, key_prefix):
    ledger = Ledger(redis_client, prefix=key_prefix, clock=FakeClock(T0), lease_requests=32)
    rate = ask(rpm=100)                  # less than four leases' worth of room: every request alone
    for i in range(5):
        assert (await ledger.reserve(f"r{i}", WHO, 1_000, deadline_s=DEADLINE_S, rate=rate)).ok
    assert ledger.leases_granted == 0
    assert await counted(ledger) == (5, 500)


async def test_a_settle_corrects_the_tokens_to_what_was_used_once(redis_client, key_prefix):
    ledger = Ledger(redis_client, prefix=key_prefix, clock=FakeClock(T0))
    outcome = await ledger.reserve("r1", WHO, 1_000, deadline_s=DEADLINE_S, rate=ask(tpm=1_000, tokens=400))
    assert outcome.ok and await counted(ledger) == (1, 400)
    used = event("r1", WHO, ts=T0, prompt=30, completion=12)
    assert (await ledger.queue_settle(used, outcome.rate_hold)).recorded
    assert await counted(ledger) == (1, 42)
    assert not (await ledger.queue_settle(used, outcome.rate_hold)).recorded   # sent again: nothing changes
    assert await counted(ledger) == (1, 42)


async def test_a_refusal_for_tokens_names_them_and_changes_nothing(redis_client, key_prefix):
    ledger = Ledger(redis_client, prefix=key_prefix, clock=FakeClock(T0))
    assert (await ledger.reserve("r1", WHO, 1_000, deadline_s=DEADLINE_S, rate=ask(tpm=250, tokens=200))).ok
    refused = await ledger.reserve("r2", WHO, 1_000, deadline_s=DEADLINE_S, rate=ask(tpm=250, tokens=200))
    assert not refused.ok and refused.rate_refused is not None
    assert (refused.rate_refused.kind, refused.rate_refused.used_tokens, refused.rate_refused.asked_tokens) == (
        "tokens", 200, 200)
    assert await counted(ledger) == (1, 200)


async def test_counters_live_a_minute_past_their_minute(redis_client, key_prefix):
    ledger = Ledger(redis_client, prefix=key_prefix, clock=FakeClock(T0))
    assert (await ledger.reserve("r1", WHO, 1_000, deadline_s=DEADLINE_S, rate=ask(rpm=5))).ok
    ttl = await ledger.redis.pttl(ledger.keys.rate("acme", "project", WINDOW, "acme"))
    assert 114_000 < ttl <= 115_000              # 55 s left in the minute, then 60 s
