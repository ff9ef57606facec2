"""Budgets at period edges, driven by an injected clock (no sleeping)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from proxy.domain import Attribution
from proxy.ledger.ledger import Ledger
from tests.ledger.helpers import FakeClock, epoch, event
from proxy.ledger.reports import read_usage

WHO = Attribution("acme", "planner")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(0)


@pytest.fixture
def ledger(redis_client, key_prefix, clock) -> Ledger:
    return Ledger(redis_client, prefix=key_prefix, clock=clock)


async def spend_all_then_cross(ledger: Ledger, clock: FakeClock, period: str, last_second: str):
    """Spend a 1000 nano budget in the last second of a period; return the refusal, then the next second's try."""
    clock.set(last_second)
    await ledger.set_budget("project", "acme", 1000, period)
    await ledger.settle(event("spend", WHO, ts=clock.now, cost_nano=1000))
    refused = await ledger.reserve("r1", WHO, 1, deadline_s=60)
    before = await ledger.get_budget("project", "acme")
    clock.advance(1)
    after = await ledger.get_budget("project", "acme")
    allowed = await ledger.reserve("r2", WHO, 1, deadline_s=60)
    return refused, before, after, allowed


@pytest.mark.parametrize("period, last_second, start, reset, next_reset", [
    ("hour", "2026-11-23T18:59:59", "2026-11-23T18:00:00Z", "2026-11-23T19:00:00Z", "2026-11-23T20:00:00Z"),
    ("day", "2026-11-23T23:59:59", "2026-11-23T00:00:00Z", "2026-11-24T00:00:00Z", "2026-11-25T00:00:00Z"),
    ("week", "2026-11-29T23:59:59", "2026-11-23T00:00:00Z", "2026-11-30T00:00:00Z", "2026-12-07T00:00:00Z"),
    ("month", "2026-11-30T23:59:59", "2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"),
    ("month", "2026-12-31T23:59:59", "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z", "2027-02-01T00:00:00Z"),
])
async def test_a_spent_budget_resets_on_the_first_second_of_the_next_period(
        ledger, clock, period, last_second, start, reset, next_reset):
    refused, before, after, allowed = await spend_all_then_cross(ledger, clock, period, last_second)
    assert not refused.ok
    assert refused.tightest.resets_at == datetime.fromisoformat(reset.replace("Z", "+00:00"))
    assert (before["spent_usd"], before["period_start"], before["resets_at"]) == ("0.000001", start, reset)
    assert (after["spent_usd"], after["period_start"], after["resets_at"]) == ("0.00", reset, next_reset)
    assert allowed.ok
    assert allowed.tightest.resets_at == datetime.fromisoformat(next_reset.replace("Z", "+00:00"))


async def test_week_starts_on_monday_utc(ledger, clock):
    clock.set("2026-11-30T00:00:00")  # Monday
    status = await ledger.set_budget("agent", "acme/planner", 1, "week")
    assert (status["period_start"], status["resets_at"]) == ("2026-11-30T00:00:00Z", "2026-12-07T00:00:00Z")


async def test_total_never_resets(ledger, clock):
    clock.set("2026-11-30T23:59:59")
    await ledger.set_budget("project", "acme", 1000, "total")
    await ledger.settle(event("spend", WHO, ts=clock.now, cost_nano=1000))
    refused = await ledger.reserve("r1", WHO, 1, deadline_s=60)
    assert not refused.ok and refused.tightest.resets_at is None
    for jump in (1, 86400, 40 * 86400, 3 * 365 * 86400):
        clock.advance(jump)
        assert not (await ledger.reserve("r1", WHO, 1, deadline_s=60)).ok
        status = await ledger.get_budget("project", "acme")
        assert (status["spent_usd"], status["period_start"], status["resets_at"]) == ("0.000001", None, None)


async def test_usage_settled_at_the_last_second_stays_in_its_day(ledger, clock):
    clock.set("2026-11-23T23:59:59")
    await ledger.settle(event("late", WHO, ts=epoch("2026-11-23T23:59:59.999"), cost_nano=5))
    await ledger.settle(event("early", WHO, ts=epoch("2026-11-24T00:00:00"), cost_nano=7))
    day1 = await read_usage(ledger, "project", "acme", "day", datetime(2026, 11, 23, tzinfo=timezone.utc))
    day2 = await read_usage(ledger, "project", "acme", "day", datetime(2026, 11, 24, tzinfo=timezone.utc))
    assert (day1["cost_usd"], day2["cost_usd"]) == ("0.000000005", "0.000000007")
