"""Budgets: config and status, hard refusals, soft ones that never refuse, holds and their release."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest
import redis.asyncio as aioredis

from proxy.ledger.keys import Keys
from proxy.domain import Attribution, BudgetView, ReserveOutcome, SettleOutcome
from proxy.ledger.ledger import Ledger
from tests.ledger.helpers import FakeClock, epoch, event
from proxy.ledger.reports import read_usage

T0 = epoch("2026-11-23T18:30:00")
USD = 10**9
PLANNER = Attribution("acme", "planner", "run-42", "k1")
CODER = Attribution("acme", "coder", "run-7")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def ledger(redis_client, key_prefix, clock) -> Ledger:
    return Ledger(redis_client, prefix=key_prefix, clock=clock)


async def test_set_budget_returns_its_status(ledger: Ledger):
    status = await ledger.set_budget("project", "acme", 50 * USD, "month")
    assert status == {
        "scope": "project", "id": "acme", "limit_usd": "50.00", "period": "month", "mode": "hard",
        "alert_thresholds": [0.5, 0.8, 0.9, 1.0], "spent_usd": "0.00", "reserved_usd": "0.00",
        "remaining_usd": "50.00", "percent": 0.0, "period_start": "2026-11-01T00:00:00Z",
        "resets_at": "2026-12-01T00:00:00Z",
    }
    assert await ledger.get_budget("project", "acme") == status


async def test_spent_counts_usage_recorded_before_the_budget_existed(ledger: Ledger):
    await ledger.settle(event("r1", PLANNER, ts=T0 - 86400, cost_nano=12_340_000_000))
    status = await ledger.set_budget("agent", "acme/planner", 50 * USD, "month", mode="soft", thresholds=[0.8, 0.5])
    assert status["spent_usd"] == "12.34" and status["remaining_usd"] == "37.66" and status["percent"] == 24.68
    assert status["alert_thresholds"] == [0.5, 0.8] and status["mode"] == "soft"
    day = await ledger.set_budget("agent", "acme/planner", 50 * USD, "day")
    assert day["spent_usd"] == "0.00" and day["period"] == "day" and day["mode"] == "hard"


async def test_status_shows_live_holds_and_percent_of_spend(ledger: Ledger):
    await ledger.set_budget("project", "acme", 10 * USD, "day")
    await ledger.settle(event("r1", PLANNER, ts=T0, cost_nano=2 * USD))
    assert (await ledger.reserve("r2", PLANNER, 3 * USD, deadline_s=60)).ok
    status = await ledger.get_budget("project", "acme")
    assert (status["spent_usd"], status["reserved_usd"], status["remaining_usd"], status["percent"]) == (
        "2.00", "3.00", "5.00", 20.0)


async def test_percent_of_a_soft_budget_spent_over_its_limit_is_not_capped(ledger: Ledger):
    await ledger.set_budget("project", "acme", 1 * USD, "day", mode="soft")
    await ledger.settle(event("r1", PLANNER, ts=T0, cost_nano=3_240_000_000))
    status = await ledger.get_budget("project", "acme")
    assert (status["spent_usd"], status["remaining_usd"], status["percent"]) == ("3.24", "0.00", 324.0)


async def test_percent_of_a_zero_limit_is_0_until_something_is_spent_then_100(ledger: Ledger):
    zero = await ledger.set_budget("agent", "acme/coder", 0, "day", mode="soft")
    assert (zero["limit_usd"], zero["spent_usd"], zero["percent"]) == ("0.00", "0.00", 0.0)
    await ledger.settle(event("r1", CODER, ts=T0, cost_nano=5 * USD))
    spent = await ledger.get_budget("agent", "acme/coder")
    assert (spent["spent_usd"], spent["remaining_usd"], spent["percent"]) == ("5.00", "0.00", 100.0)


async def test_list_and_delete(ledger: Ledger):
    await ledger.set_budget("session", "acme/run-42", 2 * USD, "total")
    await ledger.set_budget("project", "acme", 50 * USD, "month")
    await ledger.set_budget("project", "beta", 5 * USD, "week")
    await ledger.set_budget("agent", "acme/planner", 10 * USD, "day")
    listed = await ledger.list_budgets()
    assert [(b["scope"], b["id"]) for b in listed] == [
        ("project", "acme"), ("project", "beta"), ("agent", "acme/planner"), ("session", "acme/run-42")]
    assert [b["id"] for b in await ledger.list_budgets("project")] == ["acme", "beta"]
    assert [b["id"] for b in await ledger.list_budgets(project="acme")] == ["acme", "acme/planner", "acme/run-42"]
    total = next(b for b in listed if b["scope"] == "session")
    assert total["resets_at"] is None and total["period_start"] is None
    assert await ledger.delete_budget("project", "beta") is True
    assert await ledger.delete_budget("project", "beta") is False
    assert await ledger.get_budget("project", "beta") is None
    assert [b["id"] for b in await ledger.list_budgets("project")] == ["acme"]


@pytest.mark.parametrize("call, message", [
    (("team", "acme", 1, "day"), "unknown scope 'team': use one of project, agent, session, key"),
    (("model", "acme/gpt-4o", 1, "day"), "unknown scope 'model'"),
    (("project", "acme", 1, "year"), "unknown period 'year': use one of hour, day, week, month, total"),
    (("project", "acme", -1, "day"), "budget limit must not be negative"),
    (("project", "acme", 1.5, "day"), "budget limit must be an integer amount of nano-USD"),
    (("project", "acme", 2**53, "day"), "budget limit too large"),
    (("project", "ac/me", 1, "day"), "invalid project id 'ac/me'"),
    (("project", "x" * 129, 1, "day"), "ids are 1-128 characters of letters, digits and . _ - @"),
    (("agent", "planner", 1, "day"), "write it as PROJECT/AGENT"),
    (("agent", "acme/plan ner", 1, "day"), "invalid agent id 'plan ner'"),
    (("session", "acme/", 1, "day"), "invalid session id ''"),
])
async def test_invalid_budgets_are_value_errors_that_say_what_to_fix(ledger: Ledger, call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        await ledger.set_budget(*call)


async def test_invalid_mode_and_thresholds(ledger: Ledger):
    with pytest.raises(ValueError, match="unknown budget mode 'strict': use hard"):
        await ledger.set_budget("project", "acme", 1, "day", mode="strict")
    for bad in ([0], [-0.5], [float("nan")], "0.5", [True], [11]):
        with pytest.raises(ValueError, match="threshold"):
            await ledger.set_budget("project", "acme", 1, "day", thresholds=bad)
    assert await ledger.get_budget("project", "acme") is None


async def test_reserve_without_budgets_always_succeeds(ledger: Ledger):
    assert await ledger.reserve("r1", PLANNER, 10**15, deadline_s=60) == ReserveOutcome(
        ok=True, tightest=None, room_nano=None, reclaimed=0)


async def test_hard_budget_refuses_what_does_not_fit_and_names_itself(ledger: Ledger):
    await ledger.set_budget("project", "acme", 50 * USD, "month")
    await ledger.settle(event("r0", PLANNER, ts=T0, cost_nano=49_980_000_000))
    refused = await ledger.reserve("r1", PLANNER, 40_000_000, deadline_s=60)
    resets = datetime(2026, 12, 1, tzinfo=timezone.utc)
    assert refused == ReserveOutcome(ok=False, room_nano=20_000_000, reclaimed=0, tightest=BudgetView(
        scope="project", id="acme", period="month", limit_nano=50 * USD, spent_nano=49_980_000_000,
        reserved_nano=0, resets_at=resets))
    assert (await ledger.get_budget("project", "acme"))["reserved_usd"] == "0.00"
    fits = await ledger.reserve("r1", PLANNER, 20_000_000, deadline_s=60)
    assert fits.ok and fits.room_nano == 20_000_000
    assert fits.tightest.reserved_nano == 20_000_000 and fits.tightest.remaining_nano == 0


async def test_tightest_is_the_hard_budget_with_least_room(ledger: Ledger):
    await ledger.set_budget("project", "acme", 100, "month")
    await ledger.set_budget("agent", "acme/planner", 30, "day")
    await ledger.set_budget("session", "acme/run-42", 10, "total", mode="soft")
    ok = await ledger.reserve("r1", PLANNER, 20, deadline_s=60)
    assert ok.ok and ok.room_nano == 30
    assert (ok.tightest.scope, ok.tightest.id, ok.tightest.remaining_nano) == ("agent", "acme/planner", 10)
    refused = await ledger.reserve("r2", PLANNER, 11, deadline_s=60)
    assert not refused.ok and refused.room_nano == 10 and refused.tightest.id == "acme/planner"
    assert refused.tightest.reserved_nano == 20
    # the soft session budget is over its limit and still holds, for reporting
    assert (await ledger.get_budget("session", "acme/run-42"))["reserved_usd"] == "0.00000002"


async def test_a_refusal_holds_nothing_anywhere(ledger: Ledger):
    await ledger.set_budget("project", "acme", 100, "day")
    await ledger.set_budget("agent", "acme/planner", 10, "day")
    assert not (await ledger.reserve("r1", PLANNER, 50, deadline_s=60)).ok
    for scope, sid in (("project", "acme"), ("agent", "acme/planner")):
        assert (await ledger.budget_state(scope, sid)).reserved_nano == 0


async def test_agent_and_session_budgets_bind_only_their_own_requests(ledger: Ledger):
    await ledger.set_budget("agent", "acme/planner", 0, "day")
    await ledger.set_budget("session", "acme/run-7", 0, "day")
    assert not (await ledger.reserve("r1", PLANNER, 1, deadline_s=60)).ok
    assert not (await ledger.reserve("r2", CODER, 1, deadline_s=60)).ok
    assert (await ledger.reserve("r3", Attribution("acme", "coder", "run-8"), 1, deadline_s=60)).ok
    assert (await ledger.reserve("r4", Attribution("acme", "planner2"), 1, deadline_s=60)).ok
    assert (await ledger.reserve("r5", Attribution("other", "planner", "run-7"), 1, deadline_s=60)).ok


async def test_key_budgets_bind_requests_made_with_that_key(ledger: Ledger):
    await ledger.set_budget("key", "acme/k1", 5, "day")
    assert not (await ledger.reserve("r1", PLANNER, 6, deadline_s=60)).ok
    assert (await ledger.reserve("r2", Attribution("acme", "planner", "run-42", "k2"), 6, deadline_s=60)).ok
    refused = await ledger.reserve("r3", PLANNER, 6, deadline_s=60)
    assert refused.tightest.scope == "key" and refused.tightest.id == "acme/k1"


async def test_deleting_a_budget_lifts_its_block(ledger: Ledger):
    await ledger.set_budget("agent", "acme/planner", 0, "day")
    assert not (await ledger.reserve("r1", PLANNER, 1, deadline_s=60)).ok
    assert await ledger.delete_budget("agent", "acme/planner")
    assert (await ledger.reserve("r1", PLANNER, 1, deadline_s=60)).ok


async def test_soft_budgets_never_refuse_but_hold_and_count(ledger: Ledger):
    await ledger.set_budget("project", "acme", 10, "day", mode="soft")
    for i in range(3):
        outcome = await ledger.reserve(f"r{i}", PLANNER, 100, deadline_s=60)
        assert outcome == ReserveOutcome(ok=True, tightest=None, room_nano=None, reclaimed=0)
    assert (await ledger.budget_state("project", "acme")).reserved_nano == 300


async def test_settle_moves_the_hold_into_spend(ledger: Ledger):
    await ledger.set_budget("project", "acme", 1000, "day")
    await ledger.set_budget("session", "acme/run-42", 1000, "total")
    await ledger.reserve("r1", PLANNER, 600, deadline_s=60)
    assert await ledger.settle(event("r1", PLANNER, ts=T0, cost_nano=450)) == SettleOutcome(True, 600, 0)
    for scope, sid in (("project", "acme"), ("session", "acme/run-42")):
        state = await ledger.budget_state(scope, sid)
        assert (state.spent_nano, state.reserved_nano) == (450, 0)
    assert (await ledger.reserve("r2", PLANNER, 550, deadline_s=60)).ok
    assert not (await ledger.reserve("r3", PLANNER, 1, deadline_s=60)).ok


async def test_settle_records_a_cost_beyond_the_hold_and_reports_the_overrun(ledger: Ledger):
    await ledger.set_budget("project", "acme", 1000, "day")
    await ledger.reserve("r1", PLANNER, 100, deadline_s=60)
    assert await ledger.settle(event("r1", PLANNER, ts=T0, cost_nano=130)) == SettleOutcome(True, 100, 30)
    assert (await ledger.budget_state("project", "acme")).spent_nano == 130


async def test_release_drops_the_hold_and_charges_nothing(ledger: Ledger, redis_client, key_prefix):
    await ledger.set_budget("project", "acme", 1000, "day")
    await ledger.set_budget("agent", "acme/planner", 1000, "day")
    await ledger.reserve("r1", PLANNER, 700, deadline_s=60)
    assert await ledger.release("r1", PLANNER) == 700
    assert await ledger.release("r1", PLANNER) == 0
    for scope, sid in (("project", "acme"), ("agent", "acme/planner")):
        state = await ledger.budget_state(scope, sid)
        assert (state.spent_nano, state.reserved_nano) == (0, 0)
    k = Keys(key_prefix)
    assert await redis_client.zcard(k.reservations("acme", "project", "acme")) == 0
    assert await redis_client.hgetall(k.reservation_amounts("acme", "project", "acme")) == {b"": b"0"}
    assert (await read_usage(ledger, "project", "acme", "day"))["requests"] == 0


async def test_reserving_again_under_the_same_request_id_replaces_the_hold(ledger: Ledger):
    await ledger.set_budget("project", "acme", 1000, "day")
    assert (await ledger.reserve("r1", PLANNER, 900, deadline_s=60)).ok
    again = await ledger.reserve("r1", PLANNER, 1000, deadline_s=60)
    assert again.ok and again.room_nano == 1000
    assert (await ledger.budget_state("project", "acme")).reserved_nano == 1000
    assert (await ledger.reserve("r1", PLANNER, 300, deadline_s=60)).ok
    assert (await ledger.budget_state("project", "acme")).reserved_nano == 300


async def test_holds_past_their_deadline_stop_counting_and_are_reclaimed(ledger: Ledger, clock: FakeClock):
    await ledger.set_budget("project", "acme", 1000, "day")
    assert (await ledger.reserve("crashed", PLANNER, 1000, deadline_s=30)).ok
    assert not (await ledger.reserve("r2", PLANNER, 1, deadline_s=30)).ok
    clock.advance(30)  # deadline == now: still held
    assert not (await ledger.reserve("r2", PLANNER, 1, deadline_s=30)).ok
    clock.advance(0.001)
    assert (await ledger.budget_state("project", "acme")).reserved_nano == 0  # read-only view skips it
    outcome = await ledger.reserve("r2", PLANNER, 1000, deadline_s=30)
    assert outcome.ok and outcome.reclaimed == 1
    # the crashed request's late settle finds no hold and says so
    assert await ledger.settle(event("crashed", PLANNER, ts=clock.now, cost_nano=5)) == SettleOutcome(True, 0, 0)


async def test_many_concurrent_reservations_never_overspend(redis_url, key_prefix, clock):
    # A pool as large as the proxy's, so the 200 calls really are in flight together.
    pool = aioredis.BlockingConnectionPool.from_url(redis_url, max_connections=256, timeout=10)
    client = aioredis.Redis(connection_pool=pool)
    try:
        ledger = Ledger(client, prefix=key_prefix, clock=clock)
        await ledger.set_budget("project", "acme", 1000, "day")
        outcomes = await asyncio.gather(*(ledger.reserve(f"r{i}", PLANNER, 7, deadline_s=60) for i in range(200)))
        assert sum(o.ok for o in outcomes) == 1000 // 7
        assert {o.room_nano for o in outcomes if not o.ok} == {1000 - (1000 // 7) * 7}
        assert (await ledger.budget_state("project", "acme")).reserved_nano == (1000 // 7) * 7
    finally:
        await client.aclose()


async def test_scripts_survive_a_script_flush(ledger: Ledger, redis_client):
    await ledger.set_budget("project", "acme", 1000, "day")
    await ledger.settle(event("r0", PLANNER, ts=T0, cost_nano=1))
    await redis_client.script_flush()
    assert (await ledger.settle(event("r1", PLANNER, ts=T0, cost_nano=10))).recorded
    await redis_client.script_flush()
    assert (await ledger.reserve("r2", PLANNER, 100, deadline_s=60)).ok
    await redis_client.script_flush()
    assert await ledger.release("r2", PLANNER) == 100
    await redis_client.script_flush()
    assert (await ledger.budget_state("project", "acme")).spent_nano == 11
    await redis_client.script_flush()
    assert not (await ledger.settle(event("r1", PLANNER, ts=T0, cost_nano=10))).recorded


async def test_reserve_validates_its_input(ledger: Ledger):
    with pytest.raises(ValueError, match="amount_nano"):
        await ledger.reserve("r1", PLANNER, -1, deadline_s=60)
    with pytest.raises(ValueError, match="deadline_s"):
        await ledger.reserve("r1", PLANNER, 1, deadline_s=0)
    with pytest.raises(ValueError, match="invalid agent id"):
        await ledger.reserve("r1", Attribution("acme", "a b"), 1, deadline_s=60)


async def test_zero_amount_holds_reserve_release_settle_and_expire(ledger: Ledger, clock: FakeClock):
    await ledger.set_budget("project", "acme", 0, "day")
    assert (await ledger.reserve("r1", PLANNER, 0, deadline_s=60)).ok
    assert await ledger.release("r1", PLANNER) == 0
    assert (await ledger.reserve("r2", PLANNER, 0, deadline_s=60)).ok
    assert (await ledger.reserve("r2", PLANNER, 0, deadline_s=60)).ok
    assert await ledger.settle(event("r2", PLANNER, ts=T0, cost_nano=0)) == SettleOutcome(True, 0, 0)
    assert (await ledger.reserve("r3", PLANNER, 0, deadline_s=1)).ok
    clock.advance(2)
    assert (await ledger.reserve("r4", PLANNER, 0, deadline_s=1)).reclaimed == 1
    assert (await ledger.budget_state("project", "acme")).reserved_nano == 0
