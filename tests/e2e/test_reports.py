"""Reading spend over HTTP: usage reports, series, forecasts and event export, against a real
Redis holding known records, with the app's clock pinned at NOW.

Recorded (USD): acme Oct 31 0.30; Nov 2 1.59 (planner/run-1, gpt-4o); Nov 5 0.20 (coder/run-2,
gpt-4o-mini); Nov 10 23:30 0.43 (planner/run-1, gpt-4o); Nov 11 05:15 0.24 (coder/run-3,
gpt-4o-mini); beta Nov 11 04:00 0.05 (gpt-4o). Now is Nov 11 06:00: 246 hours into November.
"""

from __future__ import annotations

import csv
import io
import json
import time

import httpx
import pytest

from proxy.http.app import create_app
from proxy.http.appkeys import SERVICES
from proxy.domain import Attribution
from proxy.settings import Settings
from tests.harness import LoopThread
from tests.ledger.helpers import FakeClock, epoch, event

ADMIN = {"Authorization": "Bearer admin-secret"}
NOW = epoch("2026-11-11T06:00:00")
RECORDS = [
    ("r0", Attribution("acme", "planner", "run-0"), "2026-10-31T23:00:00", "gpt-4o", 300_000_000),
    ("r1", Attribution("acme", "planner", "run-1"), "2026-11-02T10:00:00", "gpt-4o", 1_590_000_000),
    ("r2", Attribution("acme", "coder", "run-2"), "2026-11-05T12:00:00", "gpt-4o-mini", 200_000_000),
    ("r3", Attribution("acme", "planner", "run-1"), "2026-11-10T23:30:00", "gpt-4o", 430_000_000),
    ("r4", Attribution("beta"), "2026-11-11T04:00:00", "gpt-4o", 50_000_000),
    ("r5", Attribution("acme", "coder", "run-3"), "2026-11-11T05:15:00", "gpt-4o-mini", 240_000_000),
]


class Admin:
    """farebox with a pinned clock and known records, and a client for its admin API."""

    def __init__(self, threads: LoopThread, url: str, app) -> None:
        self.threads, self.url, self.app = threads, url, app

    @property
    def ledger(self):
        return self.app[SERVICES].ledger

    def get(self, path: str, **params) -> httpx.Response:
        headers = {**ADMIN, **params.pop("headers", {})}
        return httpx.get(f"{self.url}{path}", headers=headers, params=params)


@pytest.fixture
def admin(redis_url, key_prefix, tmp_path):
    threads = LoopThread()
    settings = Settings(redis_url=redis_url, redis_prefix=key_prefix, data_dir=str(tmp_path / "data"),
                        admin_token="admin-secret", upstream="http://127.0.0.1:9/v1")
    app = create_app(settings, clock=FakeClock(NOW))
    try:
        a = Admin(threads, threads.serve(app, front=True), app)
        for rid, who, at, model, cost in RECORDS:
            threads.run(a.ledger.settle(event(rid, who, ts=epoch(at), model=model, cost_nano=cost, prompt=100,
                                              completion=10)))
        yield a
    finally:
        threads.close()


# -- usage ------------------------------------------------------------------------------------


def test_usage_report_has_top_sessions_and_its_parts_add_up(admin):
    report = admin.get("/admin/usage", scope="project", id="acme", period="month").json()
    assert report["period_start"] == "2026-11-01T00:00:00Z" and report["period_end"] == "2026-12-01T00:00:00Z"
    assert report["requests"] == 4 and report["cost_usd"] == "2.46"
    assert report["by_model"] == {
        "gpt-4o": {"requests": 2, "prompt_tokens": 200, "completion_tokens": 20, "cost_usd": "2.02"},
        "gpt-4o-mini": {"requests": 2, "prompt_tokens": 200, "completion_tokens": 20, "cost_usd": "0.44"},
    }
    assert {a: r["cost_usd"] for a, r in report["by_agent"].items()} == {"coder": "0.44", "planner": "2.02"}
    assert [(s["session"], s["requests"], s["cost_usd"]) for s in report["top_sessions"]] == [
        ("run-1", 2, "2.02"), ("run-3", 1, "0.24"), ("run-2", 1, "0.20")]
    top1 = admin.get("/admin/usage", scope="project", id="acme", period="month", top="1").json()
    assert [s["session"] for s in top1["top_sessions"]] == ["run-1"]


def test_usage_of_a_model_across_projects(admin):
    report = admin.get("/admin/usage", scope="model", id="gpt-4o", period="day").json()
    assert report["id"] == "gpt-4o" and report["requests"] == 1 and report["cost_usd"] == "0.05"
    assert set(report["by_project"]) == {"beta"}
    month = admin.get("/admin/usage", scope="model", id="gpt-4o", period="month").json()
    assert {p: r["cost_usd"] for p, r in month["by_project"].items()} == {"acme": "2.02", "beta": "0.05"}
    assert month["cost_usd"] == "2.07"


# -- series -----------------------------------------------------------------------------------


def test_hourly_series_is_zero_filled_and_sums_to_its_totals(admin):
    series = admin.get("/admin/usage/series", scope="project", id="acme", granularity="hour",
                       **{"from": "2026-11-10T22:00:00Z", "to": "2026-11-11T06:00:00Z"}).json()
    assert series["from"] == "2026-11-10T22:00:00Z" and series["to"] == "2026-11-11T06:00:00Z"
    assert [p["start"][11:13] for p in series["points"]] == ["22", "23", "00", "01", "02", "03", "04", "05"]
    assert [p["cost_usd"] for p in series["points"]] == ["0.00", "0.43", "0.00", "0.00", "0.00", "0.00", "0.00",
                                                         "0.24"]
    assert series["points"][1] == {"start": "2026-11-10T23:00:00Z", "requests": 1, "prompt_tokens": 100,
                                   "completion_tokens": 10, "total_tokens": 110, "cached_tokens": 0,
                                   "reasoning_tokens": 0, "estimated_requests": 0, "cost_usd": "0.43"}
    assert series["totals"]["cost_usd"] == "0.67" and series["totals"]["requests"] == 2


def test_series_defaults_to_the_last_24_hours_or_30_days(admin):
    hourly = admin.get("/admin/usage/series", scope="project", id="acme").json()
    assert hourly["granularity"] == "hour" and len(hourly["points"]) == 24
    assert hourly["from"] == "2026-11-10T06:00:00Z" and hourly["to"] == "2026-11-11T06:00:00Z"
    daily = admin.get("/admin/usage/series", scope="project", id="acme", granularity="day").json()
    assert len(daily["points"]) == 30 and daily["to"] == "2026-11-12T00:00:00Z"
    assert daily["totals"]["cost_usd"] == "2.76"  # October 31 included


def test_daily_series_of_agents_sessions_and_a_model_across_projects(admin):
    window = {"from": "2026-11-01", "to": "2026-11-12", "granularity": "day"}
    planner = admin.get("/admin/usage/series", scope="agent", id="acme/planner", **window).json()
    assert len(planner["points"]) == 11
    assert {p["start"][:10]: p["cost_usd"] for p in planner["points"] if p["requests"]} == {
        "2026-11-02": "1.59", "2026-11-10": "0.43"}
    model = admin.get("/admin/usage/series", scope="model", id="gpt-4o", **window).json()
    assert {p["start"][:10]: p["cost_usd"] for p in model["points"] if p["requests"]} == {
        "2026-11-02": "1.59", "2026-11-10": "0.43", "2026-11-11": "0.05"}


# -- forecast ---------------------------------------------------------------------------------


def test_forecast_names_its_methods_and_says_when_the_budget_runs_out(admin):
    admin.threads.run(admin.ledger.set_budget("project", "acme", 5_000_000_000, "month"))
    result = admin.get("/admin/forecast", scope="project", id="acme").json()
    assert result["period"] == "month" and result["now"] == "2026-11-11T06:00:00Z"
    assert result["spent_usd"] == "2.46"
    run_rate, trend = result["forecasts"]["run_rate"], result["forecasts"]["trend"]
    # 2.46 in 246 hours: 0.01 an hour, 7.20 over the 720 hours of November; 2.54 left lasts 254 hours.
    assert run_rate == {
        "method": "run_rate", "basis": "the average rate of this month so far, since 2026-11-01T00:00:00Z",
        "window_start": "2026-11-01T00:00:00Z", "window_end": "2026-11-11T06:00:00Z", "window_cost_usd": "2.46",
        "rate_usd_per_hour": "0.01", "projected_usd": "7.20", "runs_out_at": "2026-11-21T20:00:00Z"}
    # 0.87 since Nov 4 (174 hours): 0.005 an hour, + 2.37 over the 474 hours left; the budget lasts past the reset.
    assert trend["method"] == "trend" and trend["window_start"] == "2026-11-04T00:00:00Z"
    assert trend["basis"] == ("the average rate of the last 7 days and this day so far, since 2026-11-04T00:00:00Z")
    assert (trend["window_cost_usd"], trend["rate_usd_per_hour"], trend["projected_usd"]) == ("0.87", "0.005", "4.83")
    assert trend["runs_out_at"] is None
    assert result["budget"] == {"period": "month", "mode": "hard", "limit_usd": "5.00", "spent_usd": "2.46",
                                "remaining_usd": "2.54", "resets_at": "2026-12-01T00:00:00Z"}
    # The 10 complete days of November: 1.59, 0.20, 0.43 and seven $0 days. Sum 2.22, mean 0.222;
    # n·Σx² − (Σx)² = 10 × 2.753 − 4.9284 = 22.6016 ($²), whose root 4.754114 over 2.22 is a variation of
    # 2.141493 and over 10 a deviation of 0.475411401; coverage 10/14, score (10/14) / 3.141493 = 0.227.
    assert result["confidence"] == {
        "level": "low", "score": 0.227, "granularity": "day", "buckets_observed": 10, "buckets_for_full_coverage": 14,
        "observed_from": "2026-11-01T00:00:00Z", "observed_to": "2026-11-11T00:00:00Z", "mean_usd": "0.222",
        "stdev_usd": "0.475411401", "variation": 2.141}


def test_forecast_without_a_budget_and_for_a_day(admin):
    result = admin.get("/admin/forecast", scope="agent", id="acme/coder", period="day").json()
    assert result["budget"] is None and result["forecasts"]["run_rate"]["runs_out_at"] is None
    # 0.24 in the 6 hours of today: 0.96 by midnight; the trend window is the same 6 hours.
    assert result["spent_usd"] == "0.24" and result["forecasts"]["run_rate"]["projected_usd"] == "0.96"
    assert result["forecasts"]["trend"]["window_start"] == "2026-11-11T00:00:00Z"
    assert result["forecasts"]["trend"]["projected_usd"] == "0.96"
    # The six hours 00:00-06:00 are complete; only 05:00-06:00 spent anything (0.24). One spend among
    # six hours: variation sqrt(6 − 1) = 2.236, coverage 6/12, score 0.5 / 3.236 = 0.155.
    assert {k: result["confidence"][k] for k in ("level", "score", "buckets_observed", "variation")} == {
        "level": "low", "score": 0.155, "buckets_observed": 6, "variation": 2.236}


def test_forecast_of_a_spent_budget_runs_out_now(admin):
    admin.threads.run(admin.ledger.set_budget("agent", "acme/planner", 1_000_000_000, "month"))
    result = admin.get("/admin/forecast", scope="agent", id="acme/planner").json()
    assert result["budget"]["remaining_usd"] == "0.00"
    assert result["forecasts"]["run_rate"]["runs_out_at"] == "2026-11-11T06:00:00Z"


# -- events -----------------------------------------------------------------------------------


def test_events_export_as_ndjson_with_a_cursor(admin):
    response = admin.get("/admin/events", project="acme")
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("application/x-ndjson")
    rows = [json.loads(line) for line in response.text.splitlines()]
    assert [r["request_id"] for r in rows] == ["r0", "r1", "r2", "r3", "r5"]
    assert response.headers["X-Event-Count"] == "5" and response.headers["X-Next-Since"] == rows[-1]["id"]
    first = rows[1]
    assert {k: first[k] for k in ("time", "project", "agent", "session", "key_id", "model", "status", "stream",
                                  "estimated", "prompt_tokens", "completion_tokens", "cost_usd", "cost_nano",
                                  "latency_ms", "clamped_max_tokens")} == {
        "time": "2026-11-02T10:00:00.000Z", "project": "acme", "agent": "planner", "session": "run-1",
        "key_id": None, "model": "gpt-4o", "status": 200, "stream": False, "estimated": False,
        "prompt_tokens": 100, "completion_tokens": 10, "cost_usd": "1.59", "cost_nano": 1_590_000_000,
        "latency_ms": 42, "clamped_max_tokens": None}


def test_events_pages_follow_x_next_since_across_projects(admin):
    seen, since = [], None
    while True:
        params = {"limit": "2"} | ({"since": since} if since else {})
        response = admin.get("/admin/events", **params)
        rows = [json.loads(line) for line in response.text.splitlines()]
        since = response.headers["X-Next-Since"]
        if not rows:
            break
        seen += [r["request_id"] for r in rows]
    # Every event exactly once. Stream ids follow settle order within a project; two projects'
    # events written in the same millisecond have no defined order between them.
    assert sorted(seen) == ["r0", "r1", "r2", "r3", "r4", "r5"] and len(seen) == 6
    acme = [r for r in seen if r != "r4"]
    assert acme == sorted(acme)
    again = admin.get("/admin/events", since=since)
    assert again.text == "" and again.headers["X-Next-Since"] == since


def test_events_export_as_csv_by_format_or_accept(admin):
    by_format = admin.get("/admin/events", project="beta", format="csv")
    assert by_format.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(by_format.text)))
    assert len(rows) == 1 and rows[0]["request_id"] == "r4" and rows[0]["cost_usd"] == "0.05"
    assert rows[0]["session"] == "" and rows[0]["stream"] == "false" and rows[0]["project"] == "beta"
    by_accept = admin.get("/admin/events", project="beta", headers={"Accept": "text/csv"})
    assert by_accept.text == by_format.text


def test_events_since_a_time(admin):
    assert len(admin.get("/admin/events", since="2000-01-01").text.splitlines()) == 6
    future = admin.get("/admin/events", since="2999-01-01T00:00:00Z")
    assert future.text == "" and future.headers["X-Next-Since"] == "32472143999999-18446744073709551615"
    assert admin.get("/admin/events", since=future.headers["X-Next-Since"]).text == ""
    assert admin.get("/admin/events", project="nobody").text == ""


def test_events_written_now_are_read_from_a_time_just_before(admin):
    before = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 120))
    assert len(admin.get("/admin/events", since=before).text.splitlines()) == 6


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path,params,status,fragment", [
    ("/admin/usage", {"scope": "project", "id": "acme", "top": "-1"}, 400, "Invalid top"),
    ("/admin/usage", {"scope": "project", "id": "acme", "top": "1000"}, 400, "from 0 to 100"),
    ("/admin/usage", {"scope": "project", "id": "acme", "colour": "red"}, 400, "Unknown query parameter 'colour'"),
    ("/admin/usage", {"scope": "model", "id": "*/"}, 400, "invalid model id"),
    ("/admin/usage/series", {"scope": "project"}, 400, "'id' is required"),
    ("/admin/usage/series", {"scope": "galaxy", "id": "acme"}, 400, "unknown scope 'galaxy'"),
    ("/admin/usage/series", {"scope": "agent", "id": "planner"}, 400, "PROJECT/AGENT"),
    ("/admin/usage/series", {"scope": "project", "id": "acme", "granularity": "week"}, 400, "use hour or day"),
    ("/admin/usage/series", {"scope": "project", "id": "acme", "from": "yesterday"}, 400, "Invalid from"),
    ("/admin/usage/series", {"scope": "project", "id": "acme", "to": "2026-02-30"}, 400, "Invalid to"),
    ("/admin/usage/series", {"scope": "project", "id": "acme", "from": "2026-11-11", "to": "2026-11-10"}, 400,
     "from (2026-11-11T00:00:00Z) must be before to (2026-11-10T00:00:00Z)"),
    ("/admin/usage/series", {"scope": "project", "id": "acme", "from": "2026-11-10", "to": "2026-11-10"}, 400,
     "must be before"),
    ("/admin/usage/series", {"scope": "project", "id": "acme", "from": "2026-01-01", "to": "2026-03-01"}, 400,
     "at most 744 (31 days)"),
    ("/admin/usage/series", {"scope": "project", "id": "acme", "granularity": "day", "from": "2020-01-01"}, 400,
     "at most 366"),
    ("/admin/usage/series", {"scope": "project", "id": "acme", "from": "0001-01-01", "to": "9999-12-31"}, 400,
     "Range too large"),
    ("/admin/usage/series", {"scope": "project", "id": "acme", "to": "0001-01-01T03:00:00Z"}, 400, "out of range"),
    ("/admin/forecast", {"scope": "project", "id": "acme", "period": "total"}, 400, "needs a period that ends"),
    ("/admin/forecast", {"scope": "project", "id": "acme", "period": "year"}, 400, "Invalid period 'year'"),
    ("/admin/forecast", {"scope": "team", "id": "acme"}, 400, "unknown scope"),
    ("/admin/forecast", {"id": "acme"}, 400, "'scope' is required"),
    ("/admin/forecast", {"scope": "project", "id": "acme", "at": "2026-11-01"}, 400, "Unknown query parameter 'at'"),
    ("/admin/events", {"limit": "0"}, 400, "from 1 to 10000"),
    ("/admin/events", {"limit": "10001"}, 400, "from 1 to 10000"),
    ("/admin/events", {"limit": "many"}, 400, "Invalid limit"),
    ("/admin/events", {"since": "last tuesday"}, 400, "Invalid since"),
    ("/admin/events", {"since": "1732386600000"}, 400, "use a stream id such as"),
    ("/admin/events", {"format": "xml"}, 400, "use ndjson or csv"),
    ("/admin/events", {"project": "ac:me"}, 400, "invalid project id"),
    ("/admin/events", {"projcet": "acme"}, 400, "Unknown query parameter 'projcet'"),
])
def test_bad_input_is_a_400_saying_what_to_fix(admin, path, params, status, fragment):
    response = admin.get(path, **params)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert fragment in error["message"], error["message"]


@pytest.mark.parametrize("path", ["/admin/usage/series?scope=project&id=acme", "/admin/forecast?scope=project&id=acme",
                                  "/admin/events"])
def test_reading_endpoints_need_the_admin_token(admin, path):
    assert httpx.get(f"{admin.url}{path}").status_code == 401
