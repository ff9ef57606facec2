"""Alert thresholds in the settle script: which request crossed which threshold, exactly once
per threshold per period per budget, whatever the concurrency."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest
import redis.asyncio as aioredis

from proxy.ledger.keys import Keys
from proxy.domain import Attribution, Crossing
from proxy.ledger.ledger import Ledger, Ttls
from tests.ledger.helpers import FakeClock, epoch, event

T0 = epoch("2026-11-23T18:30:00")
USD = 10**9
PLANNER = Attribution("acme", "planner", "run-42", "k1")
CODER = Attribution("acme", "coder")
DAY_START = datetime(2026, 11, 23, tzinfo=timezone.utc)
DAY_END = datetime(2026, 11, 24, tzinfo=timezone.utc)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def ledger(redis_client, key_prefix, clock) -> Ledger:
    return Ledger(redis_client, prefix=key_prefix, clock=clock)


def crossed(outcome) -> list[tuple[str, str, float]]:
    return [(c.scope, c.id, c.threshold) for c in outcome.alerts]


async def test_one_request_crossing_two_thresholds_reports_both_with_the_budget_details(ledger: Ledger):
    await ledger.set_budget("project", "acme", 1000, "day")
    outcome = await ledger.settle(event("r1", PLANNER, ts=T0, cost_nano=850))
    assert outcome.alerts == (
        Crossing(scope="project", id="acme", threshold=0.5, spent_nano=850, limit_nano=1000, period="day",
                 mode="hard", period_start=DAY_START, resets_at=DAY_END),
        Crossing(scope="project", id="acme", threshold=0.8, spent_nano=850, limit_nano=1000, period="day",
                 mode="hard", period_start=DAY_START, resets_at=DAY_END),
    )


async def test_a_threshold_alerts_once_per_period_however_many_requests_follow(ledger: Ledger):
    await ledger.set_budget("project", "acme", 1000, "day")
    assert crossed(await ledger.settle(event("r1", PLANNER, ts=T0, cost_nano=499))) == []
    assert crossed(await ledger.settle(event("r2", PLANNER, ts=T0, cost_nano=1))) == [("project", "acme", 0.5)]
    for i in range(3, 8):
        assert crossed(await ledger.settle(event(f"r{i}", PLANNER, ts=T0, cost_nano=10))) == []
    assert crossed(await ledger.settle(event("r8", PLANNER, ts=T0, cost_nano=300))) == [("project", "acme", 0.8)]
    assert crossed(await ledger.settle(event("r9", PLANNER, ts=T0, cost_nano=10_000))) == [
        ("project", "acme", 0.9), ("project", "acme", 1.0)]
    assert crossed(await ledger.settle(event("r10", PLANNER, ts=T0, cost_nano=10_000))) == []


async def test_settling_the_same_request_again_crosses_nothing(ledger: Ledger):
    await ledger.set_budget("project", "acme", 1000, "day")
    assert crossed(await ledger.settle(event("r1", PLANNER, ts=T0, cost_nano=600))) == [("project", "acme", 0.5)]
    again = await ledger.settle(event("r1", PLANNER, ts=T0, cost_nano=600))
    assert again.recorded is False and again.alerts == ()


async def test_the_next_period_alerts_again(ledger: Ledger):
    await ledger.set_budget("project", "acme", 1000, "day", thresholds=[0.5])
    assert crossed(await ledger.settle(event("r1", PLANNER, ts=T0, cost_nano=600))) == [("project", "acme", 0.5)]
    assert crossed(await ledger.settle(event("r2", PLANNER, ts=T0 + 3600, cost_nano=600))) == []
    tomorrow = await ledger.settle(event("r3", PLANNER, ts=T0 + 86400, cost_nano=600))
    assert tomorrow.alerts == (Crossing("project", "acme", 0.5, 600, 1000, "day", "hard",
                                        datetime(2026, 11, 24, tzinfo=timezone.utc),
                                        datetime(2026, 11, 25, tzinfo=timezone.utc)),)
    # A late event of the earlier day lands in that day's spend, whose threshold already alerted.
    assert crossed(await ledger.settle(event("r4", PLANNER, ts=T0, cost_nano=600))) == []


async def test_a_total_budget_alerts_once_ever_and_has_no_reset(ledger: Ledger, redis_client, key_prefix):
    await ledger.set_budget("session", "acme/run-42", 1000, "total", thresholds=[0.5])
    outcome = await ledger.settle(event("r1", PLANNER, ts=T0, cost_nano=700))
    assert outcome.alerts == (Crossing("session", "acme/run-42", 0.5, 700, 1000, "total", "hard", None, None),)
    assert crossed(await ledger.settle(event("r2", PLANNER, ts=T0 + 400 * 86400, cost_nano=700))) == []
    assert await redis_client.ttl(Keys(key_prefix).alerted("acme", "session", "run-42")) == -1


async def test_claims_live_as_long_as_the_periods_usage(ledger: Ledger, redis_client, key_prefix):
    await ledger.set_budget("agent", "acme/planner", 1000, "hour", thresholds=[0.5])
    await ledger.settle(event("r1", PLANNER, ts=T0, cost_nano=700))
    claims = Keys(key_prefix).alerted("acme", "agent", "planner")
    assert await redis_client.hgetall(claims) == {b"h2026112318|0.5": b"1"}
    assert 0 < await redis_client.ttl(claims) <= Ttls().hour


async def test_every_scope_alerts_with_its_own_id(ledger: Ledger):
    for scope, sid in (("project", "acme"), ("agent", "acme/planner"), ("session", "acme/run-42"), ("key", "acme/k1")):
        await ledger.set_budget(scope, sid, 1000, "month", thresholds=[0.5])
    outcome = await ledger.settle(event("r1", PLANNER, ts=T0, cost_nano=500))
    assert crossed(outcome) == [("project", "acme", 0.5), ("agent", "acme/planner", 0.5),
                                ("session", "acme/run-42", 0.5), ("key", "acme/k1", 0.5)]
    # Another agent's request moves only the project's spend, past no new threshold.
    assert crossed(await ledger.settle(event("r2", CODER, ts=T0, cost_nano=100))) == []


async def test_soft_budgets_alert_past_their_limit(ledger: Ledger):
    await ledger.set_budget("project", "acme", 1000, "day", mode="soft", thresholds=[1.0, 1.5, 3.0])
    outcome = await ledger.settle(event("r1", PLANNER, ts=T0, cost_nano=1600))
    assert [(c.threshold, c.mode, c.spent_nano) for c in outcome.alerts] == [(1.0, "soft", 1600), (1.5, "soft", 1600)]
    assert [c.threshold for c in (await ledger.settle(event("r2", PLANNER, ts=T0, cost_nano=1400))).alerts] == [3.0]


async def test_threshold_amounts_are_exact_to_the_nano(ledger: Ledger):
    await ledger.set_budget("project", "acme", 50 * USD, "month", thresholds=[0.8])
    assert crossed(await ledger.settle(event("r1", PLANNER, ts=T0, cost_nano=40 * USD - 1))) == []
    assert crossed(await ledger.settle(event("r2", PLANNER, ts=T0, cost_nano=1))) == [("project", "acme", 0.8)]


async def test_a_threshold_between_nanos_rounds_up(ledger: Ledger):
    await ledger.set_budget("project", "acme", 3, "month", thresholds=[0.5])   # 1.5 nano → 2
    assert crossed(await ledger.settle(event("r1", PLANNER, ts=T0, cost_nano=1))) == []
    assert crossed(await ledger.settle(event("r2", PLANNER, ts=T0, cost_nano=1))) == [("project", "acme", 0.5)]


async def test_a_zero_limit_alerts_at_the_first_charged_request(ledger: Ledger):
    await ledger.set_budget("project", "acme", 0, "day", mode="soft")
    assert crossed(await ledger.settle(event("free", PLANNER, ts=T0, cost_nano=0))) == []
    first = await ledger.settle(event("r1", PLANNER, ts=T0, cost_nano=1))
    assert [(c.threshold, c.spent_nano, c.limit_nano) for c in first.alerts] == [
        (0.5, 1, 0), (0.8, 1, 0), (0.9, 1, 0), (1.0, 1, 0)]
    assert crossed(await ledger.settle(event("r2", PLANNER, ts=T0, cost_nano=1))) == []


async def test_thresholds_passed_before_the_budget_existed_do_not_alert(ledger: Ledger):
    await ledger.settle(event("r1", PLANNER, ts=T0, cost_nano=600))
    await ledger.set_budget("project", "acme", 1000, "day")
    assert crossed(await ledger.settle(event("r2", PLANNER, ts=T0, cost_nano=100))) == []
    assert crossed(await ledger.settle(event("r3", PLANNER, ts=T0, cost_nano=100))) == [("project", "acme", 0.8)]


async def test_a_limit_changed_mid_period_does_not_repeat_a_threshold(ledger: Ledger):
    await ledger.set_budget("project", "acme", 1000, "day", thresholds=[0.5])
    assert crossed(await ledger.settle(event("r1", PLANNER, ts=T0, cost_nano=600))) == [("project", "acme", 0.5)]
    await ledger.set_budget("project", "acme", 2000, "day", thresholds=[0.5])
    assert crossed(await ledger.settle(event("r2", PLANNER, ts=T0, cost_nano=600))) == []   # 600 → 1200 of 2000


async def test_without_thresholds_or_budgets_nothing_alerts(ledger: Ledger):
    assert (await ledger.settle(event("r1", PLANNER, ts=T0, cost_nano=10**6))).alerts == ()
    await ledger.set_budget("project", "acme", 1000, "day", thresholds=[])
    assert (await ledger.settle(event("r2", PLANNER, ts=T0, cost_nano=10**6))).alerts == ()


async def test_deleting_a_budget_drops_its_claims(ledger: Ledger, redis_client, key_prefix):
    await ledger.set_budget("project", "acme", 1000, "total", thresholds=[0.5])
    await ledger.settle(event("r1", PLANNER, ts=T0, cost_nano=600))
    assert await ledger.delete_budget("project", "acme")
    assert await redis_client.exists(Keys(key_prefix).alerted("acme", "project", "acme")) == 0


async def test_claims_of_earlier_periods_are_dropped_once_the_hash_grows(ledger: Ledger, redis_client, key_prefix):
    await ledger.set_budget("project", "acme", 100, "hour", mode="soft", thresholds=[i / 10 for i in range(1, 11)])
    for hour in range(8):   # 10 claims an hour
        outcome = await ledger.settle(event(f"r{hour}", PLANNER, ts=T0 + 3600 * hour, cost_nano=100))
        assert len(outcome.alerts) == 10
    fields = await redis_client.hkeys(Keys(key_prefix).alerted("acme", "project", "acme"))
    assert len(fields) <= 64
    assert {f.split(b"|")[0] for f in fields} >= {b"h2026112401"}   # the newest hour is kept


async def test_fifty_concurrent_settles_across_a_threshold_claim_it_once(redis_url, key_prefix, clock):
    pools = [aioredis.BlockingConnectionPool.from_url(redis_url, max_connections=64, timeout=10) for _ in range(2)]
    clients = [aioredis.Redis(connection_pool=pool) for pool in pools]
    try:
        # Two ledgers on separate connections, as two proxy processes would be.
        ledgers = [Ledger(client, prefix=key_prefix, clock=clock) for client in clients]
        await ledgers[0].set_budget("project", "acme", 1000, "day", thresholds=[0.5, 0.8])
        outcomes = await asyncio.gather(*(ledgers[i % 2].settle(event(f"r{i}", PLANNER, ts=T0, cost_nano=20))
                                          for i in range(50)))
        assert sorted(c.threshold for o in outcomes for c in o.alerts) == [0.5, 0.8]
        winners = {c.threshold: c.spent_nano for o in outcomes for c in o.alerts}
        assert winners == {0.5: 500, 0.8: 800}   # each claimed by the settle that reached it
    finally:
        for client in clients:
            await client.aclose()
