"""usage_report: the PRODUCT.md shape, money as USD strings, totals equal to the sum of parts."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from proxy.domain import Attribution
from proxy.ledger.ledger import Ledger
from tests.ledger.helpers import FakeClock, epoch, event
from proxy.ledger.reports import read_usage

T0 = epoch("2026-11-23T18:30:00")


@pytest.fixture
async def ledger(redis_client, key_prefix) -> Ledger:
    ledger = Ledger(redis_client, prefix=key_prefix, clock=FakeClock(T0))
    planner, coder = Attribution("acme", "planner", "run-1"), Attribution("acme", "coder", "run-2")
    await ledger.settle(event("r1", planner, ts=T0, model="gpt-4o", cost_nano=2_500_000, prompt=1000, completion=100))
    await ledger.settle(event("r2", planner, ts=T0, model="gpt-4o-mini", cost_nano=150, prompt=10, completion=5))
    await ledger.settle(event("r3", coder, ts=T0, model="gpt-4o", cost_nano=1_000_000_000, prompt=7, completion=1,
                              cached=3, reasoning=1, estimated=True))
    await ledger.settle(event("r4", coder, ts=epoch("2026-11-22T10:00:00"), model="gpt-4o", cost_nano=9))
    await ledger.settle(event("r5", Attribution("other"), ts=T0, cost_nano=1))
    return ledger


async def test_project_day_report_has_the_documented_shape(ledger: Ledger):
    report = await read_usage(ledger, "project", "acme", "day", datetime(2026, 11, 23, 12, tzinfo=timezone.utc))
    assert report == {
        "scope": "project", "id": "acme", "period": "day",
        "period_start": "2026-11-23T00:00:00Z", "period_end": "2026-11-24T00:00:00Z",
        "requests": 3, "prompt_tokens": 1017, "completion_tokens": 106, "total_tokens": 1123,
        "cached_tokens": 3, "cache_creation_tokens": 0, "reasoning_tokens": 1, "estimated_requests": 1,
        "cost_usd": "1.00250015",
        "llm_cost_usd": "1.00250015", "compute_cost_usd": "0.00", "compute_records": 0, "by_resource": {},
        "by_model": {
            "gpt-4o": {"requests": 2, "prompt_tokens": 1007, "completion_tokens": 101, "cost_usd": "1.0025"},
            "gpt-4o-mini": {"requests": 1, "prompt_tokens": 10, "completion_tokens": 5, "cost_usd": "0.00000015"},
        },
        "by_agent": {
            "coder": {"requests": 1, "prompt_tokens": 7, "completion_tokens": 1, "cost_usd": "1.00"},
            "planner": {"requests": 2, "prompt_tokens": 1010, "completion_tokens": 105, "cost_usd": "0.00250015"},
        },
        "top_sessions": [
            {"session": "run-2", "requests": 1, "prompt_tokens": 7, "completion_tokens": 1, "cost_usd": "1.00"},
            {"session": "run-1", "requests": 2, "prompt_tokens": 1010, "completion_tokens": 105,
             "cost_usd": "0.00250015"},
        ],
    }


async def test_totals_equal_the_sum_of_models_and_of_agents(ledger: Ledger):
    from pricing.money import usd_to_nano

    for period in ("hour", "day", "week", "month", "total"):
        report = await read_usage(ledger, "project", "acme", period)
        for part in ("by_model", "by_agent"):
            parts = report[part].values()
            assert sum(p["requests"] for p in parts) == report["requests"]
            assert sum(p["prompt_tokens"] for p in parts) == report["prompt_tokens"]
            assert sum(p["completion_tokens"] for p in parts) == report["completion_tokens"]
            assert sum(usd_to_nano(p["cost_usd"]) for p in parts) == usd_to_nano(report["cost_usd"])


async def test_week_and_total_include_the_previous_day(ledger: Ledger):
    week = await read_usage(ledger, "project", "acme", "week")
    # 2026-11-22 is the Sunday of ISO week 47: not in this week.
    assert week["requests"] == 3 and week["period_start"] == "2026-11-23T00:00:00Z"
    month = await read_usage(ledger, "project", "acme", "month")
    assert month["requests"] == 4 and month["period_end"] == "2026-12-01T00:00:00Z"
    total = await read_usage(ledger, "project", "acme", "total")
    assert total["requests"] == 4 and total["period_start"] is None and total["period_end"] is None
    yesterday = await read_usage(ledger, "project", "acme", "day", datetime(2026, 11, 22))
    assert yesterday["requests"] == 1 and yesterday["cost_usd"] == "0.000000009"


async def test_agent_report_is_qualified_by_project_and_has_no_by_agent(ledger: Ledger):
    report = await read_usage(ledger, "agent", "acme/planner", "day")
    assert report["id"] == "acme/planner" and "by_agent" not in report
    assert report["requests"] == 2 and report["cost_usd"] == "0.00250015"
    assert set(report["by_model"]) == {"gpt-4o", "gpt-4o-mini"}


async def test_session_and_model_reports(ledger: Ledger):
    session = await read_usage(ledger, "session", "acme/run-2", "day")
    assert session["id"] == "acme/run-2" and session["requests"] == 1 and session["cost_usd"] == "1.00"
    model = await read_usage(ledger, "model", "acme/gpt-4o", "day")
    assert model["requests"] == 2 and model["cost_usd"] == "1.0025"


async def test_unknown_scope_period_or_id_form_is_a_value_error_saying_what_to_use(ledger: Ledger):
    with pytest.raises(ValueError, match="unknown scope 'team': use one of project, agent, session, key, model"):
        await read_usage(ledger, "team", "acme", "day")
    with pytest.raises(ValueError, match="unknown period 'year': use one of hour, day, week, month, total"):
        await read_usage(ledger, "project", "acme", "year")
    with pytest.raises(ValueError, match="PROJECT/AGENT"):
        await read_usage(ledger, "agent", "planner", "day")
    with pytest.raises(ValueError, match="invalid project id"):
        await read_usage(ledger, "project", "ac me", "day")


async def test_report_of_an_unknown_project_is_zero(ledger: Ledger):
    report = await read_usage(ledger, "project", "nobody", "day")
    assert report["requests"] == 0 and report["cost_usd"] == "0.00" and report["by_model"] == {}
    assert report["by_agent"] == {}
