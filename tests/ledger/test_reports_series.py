"""read_series: one point per bucket, zero where nothing was recorded, summed over projects."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from proxy.ledger import reports
from proxy.domain import Attribution
from proxy.ledger.ledger import Ledger
from tests.ledger.helpers import FakeClock, epoch, event

T0 = epoch("2026-11-23T18:30:00")


@pytest.fixture
async def ledger(redis_client, key_prefix) -> Ledger:
    ledger = Ledger(redis_client, prefix=key_prefix, clock=FakeClock(T0))
    acme, beta = Attribution("acme", "planner", "run-1"), Attribution("beta")
    await ledger.settle(event("r1", acme, ts=epoch("2026-11-23T16:05:00"), cost_nano=100, prompt=10, completion=1))
    await ledger.settle(event("r2", acme, ts=epoch("2026-11-23T16:59:59"), cost_nano=200, prompt=20, completion=2,
                              estimated=True))
    await ledger.settle(event("r3", acme, ts=epoch("2026-11-23T18:00:00"), cost_nano=300, prompt=30, completion=3,
                              cached=5, reasoning=1))
    await ledger.settle(event("r4", beta, ts=epoch("2026-11-23T18:10:00"), cost_nano=7, prompt=1, completion=1))
    await ledger.settle(event("r5", acme, ts=epoch("2026-11-21T09:00:00"), cost_nano=9, prompt=1, completion=1))
    return ledger


def hours(first: str, count: int) -> list[datetime]:
    start = datetime.fromisoformat(first).replace(tzinfo=timezone.utc)
    return [start + timedelta(hours=i) for i in range(count)]


async def test_hourly_points_are_zero_filled(ledger: Ledger):
    t = reports.target("project", "acme")
    points = await reports.read_series(ledger, t, "hour", hours("2026-11-23T15:00:00", 4))
    assert [p["cost"] for p in points] == [0, 300, 0, 300]
    assert points[1] == {"requests": 2, "prompt_tokens": 30, "completion_tokens": 3, "cached_tokens": 0,
                         "reasoning_tokens": 0, "cost": 300, "estimated": 1}
    assert points[3] == {"requests": 1, "prompt_tokens": 30, "completion_tokens": 3, "cached_tokens": 5,
                         "reasoning_tokens": 1, "cost": 300, "estimated": 0}


async def test_daily_points_and_other_scopes(ledger: Ledger):
    days = [datetime(2026, 11, d, tzinfo=timezone.utc) for d in (20, 21, 22, 23)]
    project = await reports.read_series(ledger, reports.target("project", "acme"), "day", days)
    assert [p["cost"] for p in project] == [0, 9, 0, 600]
    session = await reports.read_series(ledger, reports.target("session", "acme/run-1"), "day", days)
    assert [p["requests"] for p in session] == [0, 1, 0, 3]
    beta = await reports.read_series(ledger, reports.target("project", "beta"), "day", days)
    assert [p["cost"] for p in beta] == [0, 0, 0, 7]


async def test_a_model_across_projects_sums_them(ledger: Ledger):
    points = await reports.read_series(ledger, reports.target("model", "gpt-4o-mini"), "hour",
                                       hours("2026-11-23T16:00:00", 3))
    assert [p["cost"] for p in points] == [300, 0, 307]
    assert [p["requests"] for p in points] == [2, 0, 2]


async def test_no_points_and_unknown_projects_read_nothing(ledger: Ledger):
    assert await reports.read_series(ledger, reports.target("project", "acme"), "hour", []) == []
    nobody = await reports.read_series(ledger, reports.target("project", "nobody"), "hour",
                                       hours("2026-11-23T18:00:00", 2))
    assert [p["requests"] for p in nobody] == [0, 0]
