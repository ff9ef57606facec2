"""The admin API's overview routes, with real traffic through farebox: every project's spend
(/admin/projects), a project's newest events (/admin/events/recent), the alert thresholds its
budgets crossed (/admin/alerts), what a token may do (/admin/access), budgets of one project."""

from __future__ import annotations

import httpx
import pytest

ADMIN = {"Authorization": "Bearer admin-secret"}
READ = {"Authorization": "Bearer read-secret"}
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 50}


@pytest.fixture
def stack(make_stack):
    return make_stack(admin_token="admin-secret", admin_read_token="read-secret")


def send(stack, project: str, agent: str = "planner", session: str | None = None) -> httpx.Response:
    headers = {"X-Project-Id": project, "X-Agent-Id": agent, **({"X-Session-Id": session} if session else {})}
    response = httpx.post(f"{stack.base_url}/chat/completions", headers=headers, json=BODY)
    assert response.status_code == 200, response.text
    return response


def get(stack, path: str, headers=ADMIN, **params) -> httpx.Response:
    return httpx.get(f"{stack.url}{path}", headers=headers, params=params)


def test_projects_lists_every_project_with_its_spend_today_and_this_month_costliest_first(stack):
    for _ in range(3):
        send(stack, "acme")
    send(stack, "beta")
    httpx.put(f"{stack.url}/admin/budgets/project/gamma", headers=ADMIN, json={"limit_usd": "5"})
    answer = get(stack, "/admin/projects")
    assert answer.status_code == 200
    data = answer.json()
    acme = get(stack, "/admin/usage", scope="project", id="acme", period="month").json()
    beta_day = get(stack, "/admin/usage", scope="project", id="beta", period="day").json()
    assert [p["id"] for p in data["projects"]] == ["acme", "beta", "gamma"]
    assert data["projects"][0] == {"id": "acme", "today_usd": acme["cost_usd"], "month_usd": acme["cost_usd"],
                                   "requests_today": 3, "requests_month": 3}
    assert data["projects"][1]["today_usd"] == beta_day["cost_usd"]
    assert data["projects"][2] == {"id": "gamma", "today_usd": "0.00", "month_usd": "0.00", "requests_today": 0,
                                   "requests_month": 0}
    assert data["requests_today"] == data["requests_month"] == 4
    nano = sum(int(round(float(p["month_usd"]) * 1e9)) for p in data["projects"])
    assert int(round(float(data["month_usd"]) * 1e9)) == nano
    assert data["month_start"].endswith("-01T00:00:00Z") and data["day_start"].endswith("T00:00:00Z")


def test_recent_events_are_the_newest_first_with_a_cursor_for_what_follows(stack):
    ids = [send(stack, "acme", session=f"run-{n}").headers["X-Request-Id"] for n in range(5)]
    recent = get(stack, "/admin/events/recent", project="acme", limit="3").json()
    assert [e["request_id"] for e in recent["events"]] == ids[::-1][:3]
    assert recent["events"][0]["session"] == "run-4" and recent["events"][0]["project"] == "acme"
    later = send(stack, "acme").headers["X-Request-Id"]
    page = get(stack, "/admin/events", project="acme", since=recent["next_since"])
    assert [line for line in page.text.splitlines() if later in line] and ids[4] not in page.text
    assert get(stack, "/admin/events/recent", project="nobody").json() == {"project": "nobody", "events": [],
                                                                             "next_since": "0-0"}


def test_alerts_list_the_thresholds_each_budget_crossed_newest_period_first(stack):
    send(stack, "acme")
    cost = get(stack, "/admin/usage", scope="project", id="acme", period="day").json()["cost_usd"]
    # A day budget that one more such request takes past 50 % and 80 %, not 100 %.
    limit = f"{float(cost) * 2.4:.9f}"
    httpx.put(f"{stack.url}/admin/budgets/project/acme", headers=ADMIN,
              json={"limit_usd": limit, "period": "day", "mode": "soft", "alert_thresholds": [0.5, 0.8, 1.0]})
    assert get(stack, "/admin/alerts", project="acme").json() == {"project": "acme", "alerts": [], "deliveries": []}
    send(stack, "acme")
    day_start = get(stack, "/admin/budgets/project/acme").json()["period_start"]
    alerts = get(stack, "/admin/alerts", project="acme").json()["alerts"]
    assert alerts == [
        {"scope": "project", "id": "acme", "period": "day", "period_start": day_start, "threshold": 0.8, "percent": 80},
        {"scope": "project", "id": "acme", "period": "day", "period_start": day_start, "threshold": 0.5, "percent": 50},
    ]


def test_alerts_say_what_became_of_each_delivery(make_stack):
    """A webhook that takes the alert and one that refuses it: each delivery is kept with its
    outcome, newest first, beside the thresholds crossed."""
    from aiohttp import web

    from tests.harness import LoopThread

    got: list[bytes] = []

    async def take(request: web.Request) -> web.Response:
        got.append(await request.read())
        return web.Response(status=204)

    async def refuse(request: web.Request) -> web.Response:
        return web.Response(status=410)

    receiver = web.Application()
    receiver.add_routes([web.post("/take", take), web.post("/refuse", refuse)])
    threads = LoopThread()
    try:
        hooks = threads.serve(receiver)
        stack = make_stack(admin_token="admin-secret", alert_webhook_urls=[f"{hooks}/take", f"{hooks}/refuse"],
                           alert_retry_base_s=0.01)
        httpx.put(f"{stack.url}/admin/budgets/project/acme", headers=ADMIN,
                  json={"limit_usd": "0.000001", "period": "day", "mode": "soft", "alert_thresholds": [1.0]})
        send(stack, "acme")
        stack.run(stack.services.settled())
        stack.run(stack.services.alerts.drain())
        answer = get(stack, "/admin/alerts", project="acme").json()
    finally:
        threads.close()
    assert len(got) == 1
    [crossed] = answer["alerts"]
    deliveries = sorted(answer["deliveries"], key=lambda d: d["outcome"], reverse=True)
    assert [(d["channel"], d["to"], d["outcome"], d["attempts"], d["problem"]) for d in deliveries] == [
        ("webhook", hooks, "failed", 1, "HTTP 410"), ("webhook", hooks, "delivered", 1, "")]
    for d in deliveries:
        assert (d["scope"], d["id"], d["threshold"], d["percent"], d["period"], d["period_start"]) == (
            "project", "acme", 1.0, 100, "day", crossed["period_start"])
        assert d["alert_id"] and d["at"].endswith("Z")


def test_access_says_what_the_token_may_do(stack):
    assert get(stack, "/admin/access").json() == {"access": "write"}
    assert get(stack, "/admin/access", headers=READ).json() == {"access": "read"}
    wrong = get(stack, "/admin/access", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.json() == {"error": {"message": "Missing or wrong admin token: send Authorization: Bearer "
                                                 "<admin token>.", "type": "authentication_error", "param": None,
                                      "code": "invalid_token"}}


def test_budgets_of_one_project(stack):
    for path in ("project/acme", "agent/acme/planner", "project/beta"):
        httpx.put(f"{stack.url}/admin/budgets/{path}", headers=ADMIN, json={"limit_usd": "5"})
    listed = get(stack, "/admin/budgets", project="acme").json()["budgets"]
    assert [(b["scope"], b["id"]) for b in listed] == [("project", "acme"), ("agent", "acme/planner")]


@pytest.mark.parametrize("path,params,message,param", [
    ("/admin/projects", {"x": "1"}, "Unknown query parameter 'x': /admin/projects takes none.", "x"),
    ("/admin/access", {"x": "1"}, "Unknown query parameter 'x': /admin/access takes none.", "x"),
    ("/admin/events/recent", {}, "Query parameter 'project' is required, e.g. ?project=acme.", "project"),
    ("/admin/events/recent", {"project": "acme", "limit": "0"},
     "Invalid limit '0': a number of events from 1 to 200.", "limit"),
    ("/admin/events/recent", {"project": "acme", "limit": "201"},
     "Invalid limit '201': a number of events from 1 to 200.", "limit"),
    ("/admin/events/recent", {"project": "a b"},
     "invalid project id 'a b': ids are 1-128 characters of letters, digits and . _ - @", "project"),
    ("/admin/events/recent", {"project": "acme", "since": "1"}, "Unknown query parameter 'since': use project, limit.",
     "since"),
    ("/admin/alerts", {}, "Query parameter 'project' is required, e.g. ?project=acme.", "project"),
    ("/admin/alerts", {"project": "acme", "top": "1"}, "Unknown query parameter 'top': use project.", "top"),
    ("/admin/budgets", {"project": "a b"},
     "invalid project id 'a b': ids are 1-128 characters of letters, digits and . _ - @", "project"),
    ("/admin/budgets", {"projects": "acme"}, "Unknown query parameter 'projects': use scope, project.", "projects"),
])
def test_bad_queries_are_400_saying_what_to_fix(stack, path, params, message, param):
    answer = get(stack, path, **params)
    assert answer.status_code == 400
    assert answer.json() == {"error": {"message": message, "type": "invalid_request_error", "param": param,
                                       "code": "invalid_value"}}


def test_overview_routes_need_a_token_and_the_read_token_may_read_them(stack):
    for path in ("/admin/projects", "/admin/events/recent?project=acme", "/admin/alerts?project=acme"):
        assert httpx.get(f"{stack.url}{path}").status_code == 401
        assert httpx.get(f"{stack.url}{path}", headers=READ).status_code == 200
