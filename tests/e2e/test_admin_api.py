"""The admin HTTP API: auth, budget CRUD and validation, usage reports."""

from __future__ import annotations

import httpx
import pytest

ADMIN = {"Authorization": "Bearer admin-secret"}


@pytest.fixture
def stack(make_stack):
    return make_stack(admin_token="admin-secret")


def test_admin_api_needs_the_token(stack):
    assert httpx.get(f"{stack.url}/admin/budgets").status_code == 401
    wrong = httpx.get(f"{stack.url}/admin/budgets", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["type"] == "authentication_error"


def test_admin_api_is_disabled_without_a_token(make_stack):
    stack = make_stack()
    response = httpx.get(f"{stack.url}/admin/budgets", headers=ADMIN)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "admin_disabled"


def test_budget_put_get_list_delete(stack):
    put = httpx.put(f"{stack.url}/admin/budgets/project/acme", headers=ADMIN,
                    json={"limit_usd": "50", "period": "month", "mode": "hard", "alert_thresholds": [0.5, 0.9]})
    assert put.status_code == 200
    status = put.json()
    assert status["scope"] == "project" and status["id"] == "acme"
    assert status["limit_usd"] == "50.00" and status["spent_usd"] == "0.00" and status["remaining_usd"] == "50.00"
    assert status["reserved_usd"] == "0.00" and status["percent"] == 0
    assert status["period"] == "month" and status["mode"] == "hard"
    assert status["period_start"].endswith("-01T00:00:00Z") and status["resets_at"].endswith("-01T00:00:00Z")
    assert httpx.get(f"{stack.url}/admin/budgets/project/acme", headers=ADMIN).json() == status
    httpx.put(f"{stack.url}/admin/budgets/agent/acme/planner", headers=ADMIN, json={"limit_usd": "5", "period": "day"})
    encoded = httpx.get(f"{stack.url}/admin/budgets/agent/acme%2Fplanner", headers=ADMIN)
    assert encoded.status_code == 200 and encoded.json()["id"] == "acme/planner"
    listed = httpx.get(f"{stack.url}/admin/budgets", headers=ADMIN).json()["budgets"]
    assert {(b["scope"], b["id"]) for b in listed} == {("project", "acme"), ("agent", "acme/planner")}
    only_agents = httpx.get(f"{stack.url}/admin/budgets?scope=agent", headers=ADMIN).json()["budgets"]
    assert [(b["scope"], b["id"]) for b in only_agents] == [("agent", "acme/planner")]
    assert httpx.delete(f"{stack.url}/admin/budgets/project/acme", headers=ADMIN).status_code == 200
    missing = httpx.get(f"{stack.url}/admin/budgets/project/acme", headers=ADMIN)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "budget_not_found"
    assert httpx.delete(f"{stack.url}/admin/budgets/project/acme", headers=ADMIN).status_code == 404


@pytest.mark.parametrize("path,body,param,fragment", [
    ("project/acme", {"limit_usd": "-1"}, "limit_usd", "at least 0"),
    ("project/acme", {"limit_usd": "ten"}, "limit_usd", "decimal amount"),
    ("project/acme", {}, "limit_usd", "'limit_usd' is required"),
    ("project/acme", {"limit_usd": "5", "period": "year"}, None, "period"),
    ("project/acme", {"limit_usd": "5", "mode": "strict"}, None, "mode"),
    ("project/acme", {"limit_usd": "5", "alert_thresholds": "half"}, "alert_thresholds", "alert_thresholds"),
    ("project/acme", {"limit_usd": "5", "colour": "red"}, None, "Unknown budget field"),
    ("planet/acme", {"limit_usd": "5"}, None, "scope"),
    ("project/ac:me", {"limit_usd": "5"}, None, "id"),
    ("agent/planner", {"limit_usd": "5"}, None, "PROJECT/"),
])
def test_budget_put_rejects_bad_input(stack, redis_client, key_prefix, path, body, param, fragment):
    response = httpx.put(f"{stack.url}/admin/budgets/{path}", headers=ADMIN, json=body)
    assert response.status_code == 400
    err = response.json()["error"]
    assert err["type"] == "invalid_request_error"
    if param:
        assert err["param"] == param
    assert fragment in err["message"]
    assert httpx.get(f"{stack.url}/admin/budgets", headers=ADMIN).json()["budgets"] == []


def test_budget_put_rejects_a_non_json_body(stack):
    response = httpx.put(f"{stack.url}/admin/budgets/project/acme", headers=ADMIN, content=b"limit=5")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


def test_usage_report_after_a_request(stack):
    httpx.post(f"{stack.base_url}/chat/completions", headers={"X-Project-Id": "acme", "X-Agent-Id": "planner"},
               json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    report = httpx.get(f"{stack.url}/admin/usage", headers=ADMIN,
                       params={"scope": "project", "id": "acme", "period": "day"}).json()
    assert report["requests"] == 1
    assert set(report["by_model"]) == {"gpt-4o-mini"}
    assert set(report["by_agent"]) == {"planner"}
    assert report["total_tokens"] == report["prompt_tokens"] + report["completion_tokens"]
    agent = httpx.get(f"{stack.url}/admin/usage", headers=ADMIN,
                      params={"scope": "agent", "id": "acme/planner", "period": "month"}).json()
    assert agent["requests"] == 1 and agent["cost_usd"] == report["cost_usd"]


@pytest.mark.parametrize("params,fragment", [
    ({"scope": "project"}, "'scope' and 'id' are required"),
    ({"scope": "galaxy", "id": "acme"}, "scope"),
    ({"scope": "project", "id": "acme", "period": "decade"}, "period"),
    ({"scope": "project", "id": "acme", "at": "yesterday"}, "Invalid at 'yesterday'"),
    ({"scope": "project", "id": "acme", "at": "2026-13-45"}, "Invalid at"),
])
def test_usage_report_rejects_bad_input(stack, params, fragment):
    response = httpx.get(f"{stack.url}/admin/usage", headers=ADMIN, params=params)
    assert response.status_code == 400
    assert fragment in response.json()["error"]["message"]


def test_health_and_readiness(stack):
    assert httpx.get(f"{stack.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{stack.url}/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
