"""Usage reports read back: top sessions, a model across projects, parts that add up exactly."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pricing.money import usd_to_nano
from proxy.ledger import reports
from proxy.domain import Attribution
from proxy.ledger.ledger import Ledger
from tests.ledger.helpers import FakeClock, epoch, event

T0 = epoch("2026-11-23T18:30:00")


@pytest.fixture
async def ledger(redis_client, key_prefix) -> Ledger:
    ledger = Ledger(redis_client, prefix=key_prefix, clock=FakeClock(T0))
    recorded = [
        ("r1", Attribution("acme", "planner", "run-1"), T0, "gpt-4o", 2_500_000),
        ("r2", Attribution("acme", "planner", "run-1"), T0, "gpt-4o-mini", 150),
        ("r3", Attribution("acme", "coder", "run-2"), T0, "gpt-4o", 1_000_000_000),
        ("r4", Attribution("acme", "coder", "run-1"), T0, "gpt-4o", 7),
        ("r5", Attribution("acme", "planner"), T0, "gpt-4o-mini", 40),
        ("r6", Attribution("beta", "default", "s-9"), T0, "gpt-4o", 11),
        ("r7", Attribution("acme", "coder", "run-3"), epoch("2026-11-22T10:00:00"), "gpt-4o", 9),
        ("r8", Attribution("beta"), T0, "openrouter/llama", 5),
    ]
    for rid, who, ts, model, cost in recorded:
        await ledger.settle(event(rid, who, ts=ts, model=model, cost_nano=cost, prompt=10, completion=2))
    return ledger


async def test_project_report_lists_its_costliest_sessions_first(ledger: Ledger):
    report = await reports.read_usage(ledger, "project", "acme", "day")
    assert report["top_sessions"] == [
        {"session": "run-2", "requests": 1, "prompt_tokens": 10, "completion_tokens": 2, "cost_usd": "1.00"},
        {"session": "run-1", "requests": 3, "prompt_tokens": 30, "completion_tokens": 6, "cost_usd": "0.002500157"},
    ]
    assert report["requests"] == 5 and report["cost_usd"] == "1.002500197"


async def test_top_sessions_are_cut_at_top_and_follow_the_period(ledger: Ledger):
    one = await reports.read_usage(ledger, "project", "acme", "day", top=1)
    assert [s["session"] for s in one["top_sessions"]] == ["run-2"]
    none = await reports.read_usage(ledger, "project", "acme", "day", top=0)
    assert none["top_sessions"] == []
    month = await reports.read_usage(ledger, "project", "acme", "month")
    assert [(s["session"], s["cost_usd"]) for s in month["top_sessions"]] == [
        ("run-2", "1.00"), ("run-1", "0.002500157"), ("run-3", "0.000000009")]
    yesterday = await reports.read_usage(ledger, "project", "acme", "day", datetime(2026, 11, 22))
    assert [s["session"] for s in yesterday["top_sessions"]] == ["run-3"]


async def test_only_project_reports_list_top_sessions(ledger: Ledger):
    agent = await reports.read_usage(ledger, "agent", "acme/planner", "day")
    assert "top_sessions" not in agent and agent["requests"] == 3


async def test_a_bare_model_name_reads_every_project(ledger: Ledger):
    report = await reports.read_usage(ledger, "model", "gpt-4o", "day")
    assert report["id"] == "gpt-4o" and report["period_start"] == "2026-11-23T00:00:00Z"
    assert report["requests"] == 4 and report["cost_usd"] == "1.002500018"
    assert report["prompt_tokens"] == 40 and report["total_tokens"] == 48
    assert report["by_project"] == {
        "acme": {"requests": 3, "prompt_tokens": 30, "completion_tokens": 6, "cost_usd": "1.002500007"},
        "beta": {"requests": 1, "prompt_tokens": 10, "completion_tokens": 2, "cost_usd": "0.000000011"},
    }
    one = await reports.read_usage(ledger, "model", "acme/gpt-4o", "day")
    assert one["requests"] == 3 and "by_project" not in one


async def test_a_model_whose_name_has_a_slash_is_read_across_projects_with_a_star(ledger: Ledger):
    report = await reports.read_usage(ledger, "model", "*/openrouter/llama", "day")
    assert report["id"] == "*/openrouter/llama" and report["requests"] == 1
    assert set(report["by_project"]) == {"beta"}
    nowhere = await reports.read_usage(ledger, "model", "gpt-5", "day")
    assert nowhere["requests"] == 0 and nowhere["cost_usd"] == "0.00" and nowhere["by_project"] == {}


@pytest.mark.parametrize("scope,scope_id,fragment", [
    ("model", "*/", "invalid model id"),
    ("model", "", "invalid model id"),
    ("agent", "planner", "PROJECT/AGENT"),
    ("galaxy", "acme", "unknown scope"),
])
def test_targets_that_name_nothing_are_value_errors(scope, scope_id, fragment):
    with pytest.raises(ValueError, match=fragment):
        reports.target(scope, scope_id)


# -- parts add up to totals, exactly, whatever was recorded ------------------------------------

EVENTS = st.lists(st.tuples(
    st.sampled_from(["a1", "a2", "a3"]),
    st.sampled_from([None, "s1", "s2", "s3"]),
    st.sampled_from([None, "k1"]),
    st.sampled_from(["gpt-4o", "gpt-4o-mini", "odd|model", "openrouter/x:y"]),
    st.integers(0, 10**12),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
), min_size=1, max_size=25)


def _sums(rows) -> tuple[int, int, int, int]:
    rows = list(rows)
    return (sum(r["requests"] for r in rows), sum(r["prompt_tokens"] for r in rows),
            sum(r["completion_tokens"] for r in rows), sum(usd_to_nano(r["cost_usd"]) for r in rows))


def _totals(report) -> tuple[int, int, int, int]:
    return report["requests"], report["prompt_tokens"], report["completion_tokens"], usd_to_nano(report["cost_usd"])


async def _check_parts(redis_url: str, recorded) -> None:
    prefix = f"fbt{uuid.uuid4().hex[:12]}"
    client = aioredis.Redis.from_url(redis_url)
    try:
        ledger = Ledger(client, prefix=prefix, clock=FakeClock(T0))
        for n, (agent, session, key, model, cost, prompt, completion) in enumerate(recorded):
            await ledger.settle(event(f"r{n}", Attribution("acme", agent, session, key), ts=T0, model=model,
                                      cost_nano=cost, prompt=prompt, completion=completion))
        expected = (len(recorded), sum(r[5] for r in recorded), sum(r[6] for r in recorded), sum(r[4] for r in recorded))
        project = await reports.read_usage(ledger, "project", "acme", "day", top=100)
        assert _totals(project) == expected
        assert _sums(project["by_model"].values()) == expected
        assert _sums(project["by_agent"].values()) == expected
        with_session = [r for r in recorded if r[1] is not None]
        assert _sums(project["top_sessions"]) == (len(with_session), sum(r[5] for r in with_session),
                                                  sum(r[6] for r in with_session), sum(r[4] for r in with_session))
        scopes = ([("agent", f"acme/{a}") for a in {r[0] for r in recorded}]
                  + [("session", f"acme/{s}") for s in {r[1] for r in recorded} if s]
                  + [("key", f"acme/{k}") for k in {r[2] for r in recorded} if k])
        for scope, scope_id in scopes:
            report = await reports.read_usage(ledger, scope, scope_id, "day")
            assert _sums(report["by_model"].values()) == _totals(report)
        models = [await reports.read_usage(ledger, "model", f"*/{m}", "day") for m in {r[3] for r in recorded}]
        assert _sums(models) == expected
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(recorded=EVENTS)
def test_models_agents_sessions_add_up_to_the_totals_exactly(redis_url, recorded):
    asyncio.run(_check_parts(redis_url, recorded))
