"""Usage holds in the ledger: held in Redis on their own, never lent from a budget lease, never
renewed by the process that made them, and closed exactly once."""

from __future__ import annotations

import asyncio

import pytest

from proxy.domain import Attribution
from proxy.ledger.ledger import Ledger
from tests.ledger.helpers import FakeClock

WHO = Attribution("acme", "runner", "job-7")


@pytest.fixture
async def ledger(redis_client, key_prefix):
    return Ledger(redis_client, prefix=key_prefix, clock=FakeClock(1_800_000_000.0), lease_requests=32)


async def test_a_hold_is_never_lent_from_a_lease_nor_renewed(ledger):
    await ledger.set_budget("project", "acme", 10_000_000_000, "total")
    for n in range(3):   # back to back: requests would take a lease here
        assert (await ledger.hold(f"hold_{n}", WHO, 1_000_000_000, deadline_s=60)).ok
    assert ledger.leases_granted == 0
    assert await ledger.renew_holds() == 0
    assert (await ledger.budget_state("project", "acme")).reserved_nano == 3_000_000_000


async def test_a_hold_lapses_at_its_deadline(ledger):
    await ledger.set_budget("project", "acme", 1_000_000_000, "total")
    assert (await ledger.hold("hold_a", WHO, 1_000_000_000, deadline_s=60)).ok
    assert not (await ledger.hold("hold_b", WHO, 1, deadline_s=60)).ok
    ledger.clock.advance(60.001)
    assert (await ledger.hold("hold_b", WHO, 1_000_000_000, deadline_s=60)).ok


async def test_a_hold_is_closed_once_whoever_tries_at_the_same_time(ledger):
    await ledger.add_hold("acme", "hold_x", {"project": "acme", "reserved_nano": "5"}, 1_800_000_060_000)
    results = await asyncio.gather(*(ledger.close_hold("acme", "hold_x", f"settled|{n}") for n in range(20)))
    winners = [n for n, (won, _) in enumerate(results) if won]
    assert len(winners) == 1
    assert {record["closed"] for _, record in results} == {f"settled|{winners[0]}"}
    assert await ledger.close_hold("acme", "hold_y", "released|0") == (False, None)
    assert await ledger.hold_record("beta", "hold_x") is None
