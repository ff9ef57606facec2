"""Recommendations from a project's own usage mix: a crafted mix recorded through the real ledger
(and real requests through the fake upstream) gives the expected advice, with savings worked
out by hand from the bundled catalog's prices.

Prices used (USD per million tokens): gpt-4o input 2.50, output 10; gpt-4o-mini input 0.15,
output 0.60; claude-sonnet-4-5 input 3, cached 0.30, cache write 3.75, output 15.
"""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from proxy.control.advice import Window, smaller_siblings
from proxy.domain import Attribution
from proxy.http.app import create_app
from proxy.http.appkeys import SERVICES
from proxy.settings import Settings
from tests.harness import LoopThread
from tests.ledger.helpers import FakeClock, epoch, event

ADMIN = {"Authorization": "Bearer admin-secret"}
NOW = epoch("2026-11-11T00:00:00")      # 240 hours into November: a month (720 hours) is 3 times that
GPT4O_SHORT = 1000 * 2_500 + 100 * 10_000          # nano-USD: 3,500,000
GPT4O_LONG = 1000 * 2_500 + 2000 * 10_000          # 22,500,000
SONNET = 4000 * 3_000 + 300 * 15_000                # 16,500,000


def _mix() -> list:
    """acme's November: 20 short and 5 long answers of gpt-4o for 'support'; 12 long prompts to
    claude-sonnet-4-5 from 'rag', a minute apart, none read from the cache; one October call."""
    support, rag = Attribution("acme", "support"), Attribution("acme", "rag")
    t0 = epoch("2026-11-03T09:00:00")
    out = [event(f"s{i}", support, ts=t0 + i, model="gpt-4o", prompt=1000, completion=100, cost_nano=GPT4O_SHORT)
           for i in range(20)]
    out += [event(f"l{i}", support, ts=t0 + 100 + i, model="gpt-4o", prompt=1000, completion=2000,
                  cost_nano=GPT4O_LONG) for i in range(5)]
    out += [event(f"r{i}", rag, ts=t0 + 3600 + 60 * i, model="claude-sonnet-4-5", prompt=4000, completion=300,
                  cost_nano=SONNET) for i in range(12)]
    out.append(event("old", support, ts=epoch("2026-10-30T12:00:00"), model="gpt-4o", prompt=1000, completion=100,
                     cost_nano=GPT4O_SHORT))
    return out


class Admin:
    def __init__(self, threads: LoopThread, url: str, app) -> None:
        self.threads, self.url, self.app = threads, url, app

    def get(self, **params) -> httpx.Response:
        return httpx.get(f"{self.url}/admin/recommendations", headers=ADMIN, params=params)


@pytest.fixture
def admin(redis_url, key_prefix, tmp_path):
    threads = LoopThread()
    settings = Settings(redis_url=redis_url, redis_prefix=key_prefix, data_dir=str(tmp_path / "data"),
                        admin_token="admin-secret", upstream="http://127.0.0.1:9/v1")
    app = create_app(settings, clock=FakeClock(NOW))
    try:
        a = Admin(threads, threads.serve(app, front=True), app)
        ledger = app[SERVICES].ledger
        for e in _mix():
            threads.run(ledger.settle(e))
        threads.run(ledger.set_budget("project", "quiet", 1_000_000_000, "month"))   # known, but no usage
        yield a
    finally:
        threads.close()


def test_a_crafted_mix_gives_a_cheaper_model_and_prompt_caching_with_hand_computed_savings(admin):
    response = admin.get(scope="project", id="acme", period="month")
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["period_start"], result["now"], result["events"], result["events_complete"]) == (
        "2026-11-01T00:00:00Z", "2026-11-11T00:00:00Z", 37, True)
    window = {"elapsed_hours": "240.00", "month_hours": 720,
              "events_cost_usd": "0.3805", "recorded_cost_usd": "0.3805"}   # 20×3.5M + 5×22.5M + 12×16.5M nano
    cheaper, caching = result["recommendations"]
    # The 20 short answers: 20 × 3,500,000 = $0.07 on gpt-4o; on gpt-4o-mini 20 × (1000×150 + 100×600)
    # = 20 × 210,000 = $0.0042. Saving $0.0658 in 240 hours: $0.1974 a month.
    assert cheaper == {
        "type": "cheaper_model", "priority": "low",
        "title": "Use gpt-4o-mini for the short answers now asked of gpt-4o",
        "description": "20 of 25 calls to gpt-4o returned at most 256 output tokens (100 on average). At "
                       "gpt-4o-mini's prices (same provider) they would have cost $0.0042 instead of $0.07: "
                       "$0.0658 less in this period, about $0.20 a month.",
        "current_model": "gpt-4o", "recommended_model": "gpt-4o-mini", "estimated_monthly_savings_usd": "0.1974",
        "based_on": {"calls": 25, "short_calls": 20, "short_output_max_tokens": 256,
                     "short_calls_prompt_tokens": 20_000, "short_calls_output_tokens": 2000,
                     "short_calls_average_output_tokens": 100, "short_calls_cost_usd": "0.07",
                     "short_calls_cost_at_recommended_usd": "0.0042", "observed_savings_usd": "0.0658", **window},
    }
    # 12 prompts of 4000 tokens, none cached: assumed repeated prefix 2000. The first call writes
    # the cache (2000 × (3.75 − 3) = $0.0015 more), the 11 others (a minute apart) read it:
    # 11 × 2000 × (3 − 0.30) = $0.0594 less. Saving $0.0579 in 240 hours: $0.1737 a month.
    assert caching == {
        "type": "prompt_caching", "priority": "low",
        "title": "Cache the repeated prompt prefix of agent 'rag' on claude-sonnet-4-5",
        "description": "Agent 'rag' sent 12 prompts of at least 1024 tokens to claude-sonnet-4-5 (48000 tokens) and "
                       "only 0% of them came from the prompt cache. If the first 2000 tokens (half the shortest of "
                       "those prompts) are the same every time, putting them first and unchanged lets the provider "
                       "cache them: $0.0579 less in this period, about $0.17 a month.",
        "current_model": "claude-sonnet-4-5", "recommended_model": None, "estimated_monthly_savings_usd": "0.1737",
        "based_on": {"agent": "rag", "long_prompt_calls": 12, "long_prompt_min_tokens": 1024, "prompt_tokens": 48_000,
                     "cached_tokens": 0, "cached_share": "0%", "assumed_repeated_prefix_tokens": 2000,
                     "cache_reads": 11, "cache_writes": 1, "input_price_usd_per_million": "3.00",
                     "cached_price_usd_per_million": "0.30", "observed_savings_usd": "0.0579", **window},
    }


def test_a_week_reads_only_its_own_events(admin):
    # Nov 9 (Monday) to Nov 11: nothing recorded, so nothing to advise.
    result = admin.get(scope="project", id="acme", period="week").json()
    assert (result["period_start"], result["events"], result["recommendations"]) == ("2026-11-09T00:00:00Z", 0, [])


def test_a_known_project_without_usage_gets_an_empty_list(admin):
    response = admin.get(scope="project", id="quiet")
    assert response.status_code == 200 and response.json()["recommendations"] == []


@pytest.mark.parametrize(("params", "status", "error"), [
    ({"scope": "agent", "id": "acme/support"}, 400,
     {"message": "Invalid scope 'agent': recommendations are made for a project; use scope=project.",
      "type": "invalid_request_error", "param": "scope", "code": "invalid_value"}),
    ({"scope": "project", "id": "ac:me"}, 400,
     {"message": "Invalid project id 'ac:me': 1-128 letters, digits and . _ - @.", "type": "invalid_request_error",
      "param": "id", "code": "invalid_value"}),
    ({"scope": "project", "id": "acme", "period": "year"}, 400,
     {"message": "Invalid period 'year' for recommendations: use day, week or month.",
      "type": "invalid_request_error", "param": "period", "code": "invalid_value"}),
    ({"scope": "project"}, 400,
     {"message": "Query parameter 'id' is required (scope, id), e.g. ?scope=project&id=acme.",
      "type": "invalid_request_error", "param": "id", "code": "invalid_value"}),
    ({"scope": "project", "id": "acme", "at": "2026-11-01"}, 400,
     {"message": "Unknown query parameter 'at': use scope, id, period.", "type": "invalid_request_error",
      "param": "at", "code": "invalid_value"}),
    ({"scope": "project", "id": "nobody"}, 404,
     {"message": "No usage or budget recorded for project 'nobody'.", "type": "not_found_error", "param": None,
      "code": "project_not_found"}),
])
def test_bad_input_gets_its_status_and_exact_body(admin, params, status, error):
    response = admin.get(**params)
    assert response.status_code == status
    assert response.json() == {"error": error}


# -- through real requests ---------------------------------------------------------------------


def test_output_bounds_far_above_the_answers_are_flagged(make_stack):
    stack = make_stack(admin_token="admin-secret")
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "One line, please."}], "max_tokens": 4000}
    for _ in range(10):
        response = httpx.post(f"{stack.base_url}/chat/completions", json=body,
                              headers={"X-Project-Id": "acme", "X-Agent-Id": "writer"}, timeout=30)
        assert response.status_code == 200
    stack.run(stack.services.settled())
    events = stack.events()
    assert {int(e["output_bound"]) for e in events} == {4000}
    longest = max(int(e["completion_tokens"]) for e in events)
    held = sum(int(e["reserved_nano"]) for e in events) // 10
    spent = sum(int(e["cost_nano"]) for e in events) // 10
    result = httpx.get(f"{stack.url}/admin/recommendations", headers=ADMIN,
                       params={"scope": "project", "id": "acme"}).json()
    [rec] = result["recommendations"]
    suggested = 2 * longest
    # gpt-4o-mini output is $0.60 per million: (4000 − suggested) × 600 nano-USD less held per call.
    freed = (4000 - suggested) * 600
    assert rec["type"] == "output_bound" and rec["priority"] == "low"
    assert rec["title"] == f"Lower the output bound of agent 'writer' on gpt-4o-mini to {suggested} tokens"
    assert (rec["current_model"], rec["recommended_model"], rec["estimated_monthly_savings_usd"]) == (
        "gpt-4o-mini", None, "0.00")
    from pricing.money import nano_to_usd
    assert rec["based_on"] == {"agent": "writer", "calls": 10, "median_output_bound_tokens": 4000,
                               "longest_output_tokens": longest, "suggested_output_bound_tokens": suggested,
                               "held_per_call_usd": nano_to_usd(held), "spent_per_call_usd": nano_to_usd(spent),
                               "freed_per_call_usd": nano_to_usd(freed), "clamped_calls": 0}
    assert rec["description"].endswith("It lowers no bill.")


# -- the CLI -----------------------------------------------------------------------------------


def test_recommend_command_prints_the_api_json_and_text(admin, redis_url, key_prefix):
    def run(*args: str) -> subprocess.CompletedProcess:
        env = {"REDIS_URL": redis_url, "FAREBOX_REDIS_PREFIX": key_prefix, "PATH": "/usr/bin:/bin"}
        return subprocess.run([sys.executable, "-m", "proxy", "recommend", *args], capture_output=True, text=True,
                              env=env, timeout=120)

    remote = run("acme", "--json", "--url", admin.url, "--admin-token", "admin-secret")
    assert remote.returncode == 0, remote.stderr
    assert json.loads(remote.stdout) == admin.get(scope="project", id="acme").json()
    text = run("acme", "--url", admin.url, "--admin-token", "admin-secret").stdout.splitlines()
    assert text[0] == "project acme — 2 recommendations from 37 requests this month (since 2026-11-01T00:00:00Z)"
    assert text[1] == "1. [low] Use gpt-4o-mini for the short answers now asked of gpt-4o: about $0.1974 a month"
    missing = run("nobody", "--url", admin.url, "--admin-token", "admin-secret")
    assert missing.returncode == 1 and missing.stderr == "farebox: No usage or budget recorded for project 'nobody'.\n"
    bad = run("acme", "--period", "year")            # straight on the Redis: the same check
    assert bad.returncode == 2
    assert bad.stderr == "farebox: Invalid period 'year' for recommendations: use day, week or month.\n"
    local = run("acme", "--period", "week", "--json")
    assert local.returncode == 0, local.stderr
    assert json.loads(local.stdout)["id"] == "acme"


# -- the arithmetic on its own -----------------------------------------------------------------


def test_smaller_siblings_by_family():
    assert smaller_siblings("gpt-4o-2024-08-06") == ["gpt-4o-mini"]
    assert smaller_siblings("gpt-4.1-mini") == ["gpt-4.1-nano"]
    assert smaller_siblings("o3-pro") == ["o3", "o3-pro-mini", "o3-flash"]
    assert smaller_siblings("claude-opus-4-5") == ["claude-opus-4-5-mini", "claude-sonnet-4-5"]
    assert smaller_siblings("gemini/gemini-2.5-flash") == ["gemini/gemini-2.5-flash-mini",
                                                           "gemini/gemini-2.5-flash-lite"]


def test_monthly_extrapolation_is_explicit():
    day = 86_400_000
    assert Window(0, 10 * day, 100, 100).monthly(7) == 21                   # × 30 / 10
    assert Window(0, 10 * day, 100, 400).monthly(7) == 84                   # events show a quarter of the spend
    assert Window(0, 60_000, 0, 0).monthly(1) == 720                        # under an hour counts as an hour
    assert Window(0, 7 * day, 100, 100).monthly(1) == 4                     # 30/7 = 4.29 → 4 (half up)
