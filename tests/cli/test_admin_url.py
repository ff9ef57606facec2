"""``--url`` / ``FAREBOX_URL``: the budget and reading commands act on the running proxy's own
ledger through its admin API, from any folder, and print what the direct path prints."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.cli.helpers import farebox
from tests.processes import free_port

TOKEN = "admin-secret"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}


def admin_get(stack, path: str, **params) -> httpx.Response:
    return httpx.get(f"{stack.url}{path}", params=params, headers={"Authorization": f"Bearer {TOKEN}"})


def test_budget_set_with_url_applies_to_the_proxys_next_request(make_stack, tmp_path):
    stack = make_stack(admin_token=TOKEN)
    before = httpx.post(f"{stack.base_url}/chat/completions", headers={"X-Project-Id": "foo"}, json=CHAT)
    assert before.status_code == 200
    result = farebox(["budget", "set", "project", "foo", "0", "--period", "total", "--url", stack.url,
                      "--admin-token", TOKEN], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("project foo: hard total limit $0.00, spent $")
    after = httpx.post(f"{stack.base_url}/chat/completions", headers={"X-Project-Id": "foo"}, json=CHAT)
    assert after.status_code == 402
    assert after.json()["error"]["scope_id"] == "foo"
    assert len(stack.received) == 1
    assert list(tmp_path.iterdir()) == []


def test_budget_commands_with_url_from_the_environment(make_stack, tmp_path):
    stack = make_stack(admin_token=TOKEN)
    env = {"FAREBOX_URL": f"{stack.url}/v1", "FAREBOX_ADMIN_TOKEN": TOKEN}  # the SDK's base URL works too
    created = farebox(["budget", "set", "agent", "acme/planner", "2.5", "--period", "day", "--mode", "soft",
                       "--json"], cwd=tmp_path, env=env)
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout) == admin_get(stack, "/admin/budgets/agent/acme/planner").json()
    listed = farebox(["budget", "list", "--json"], cwd=tmp_path, env=env)
    assert json.loads(listed.stdout) == admin_get(stack, "/admin/budgets").json()
    assert [b["id"] for b in json.loads(listed.stdout)["budgets"]] == ["acme/planner"]
    shown = farebox(["budget", "show", "agent", "acme/planner"], cwd=tmp_path, env=env)
    assert shown.returncode == 0 and shown.stdout.startswith("agent acme/planner: soft day limit $2.50, spent $")
    deleted = farebox(["budget", "delete", "agent", "acme/planner"], cwd=tmp_path, env=env)
    assert deleted.returncode == 0 and deleted.stdout == "deleted budget agent acme/planner\n"
    gone = farebox(["budget", "show", "agent", "acme/planner"], cwd=tmp_path, env=env)
    assert gone.returncode == 1 and gone.stderr == "farebox: no budget for agent 'acme/planner'\n"
    bad = farebox(["budget", "set", "project", "acme", "5", "--period", "year"], cwd=tmp_path, env=env)
    assert bad.returncode == 2 and bad.stderr.startswith("farebox: ") and "period" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_usage_forecast_series_and_export_with_url_show_the_proxys_requests(make_stack, tmp_path, redis_url,
                                                                           key_prefix):
    stack = make_stack(admin_token=TOKEN)
    response = httpx.post(f"{stack.base_url}/chat/completions",
                          headers={"X-Project-Id": "acme", "X-Agent-Id": "planner"}, json=CHAT)
    assert response.status_code == 200
    url = ["--url", stack.url, "--admin-token", TOKEN]

    report = farebox(["usage", "project", "acme", "--json", *url], cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout) == admin_get(stack, "/admin/usage", scope="project", id="acme").json()
    assert json.loads(report.stdout)["requests"] == 1
    text = farebox(["usage", "project", "acme", *url], cwd=tmp_path)
    assert text.stdout.splitlines()[1].split()[:2] == ["requests", "1"]
    direct = farebox(["usage", "project", "acme"], cwd=tmp_path,
                     env={"REDIS_URL": redis_url, "FAREBOX_REDIS_PREFIX": key_prefix})  # the proxy's own Redis
    assert text.stdout == direct.stdout

    series = json.loads(farebox(["usage", "project", "acme", "--series", "--granularity", "day", "--json", *url],
                                cwd=tmp_path).stdout)
    assert series["totals"]["requests"] == 1
    forecast = json.loads(farebox(["forecast", "project", "acme", "--json", *url], cwd=tmp_path).stdout)
    assert forecast["spent_usd"] == json.loads(report.stdout)["cost_usd"]

    exported = farebox(["events", "export", "--project", "acme", *url], cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    rows = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [r["request_id"] for r in rows] == [response.headers["X-Request-Id"]]
    assert exported.stdout == admin_get(stack, "/admin/events", project="acme").text
    assert exported.stderr.startswith("farebox: exported 1 events; continue after them with --since ")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("token,fragment", [
    (None, "needs the admin token (401)"),
    ("wrong", "refused the admin token (401)"),
])
def test_url_without_the_right_token_is_one_line_and_exit_2(make_stack, tmp_path, token, fragment):
    stack = make_stack(admin_token=TOKEN)
    args = ["budget", "set", "project", "foo", "0", "--url", stack.url] + (["--admin-token", token] if token else [])
    result = farebox(args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (f"farebox: the admin API at {stack.url} {fragment}: give the token `farebox serve` "
                             "runs with, by --admin-token or FAREBOX_ADMIN_TOKEN\n")


def test_url_of_a_proxy_without_admin_api_is_one_line_and_exit_2(make_stack, tmp_path):
    stack = make_stack()
    result = farebox(["usage", "project", "acme", "--url", stack.url, "--admin-token", TOKEN], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (f"farebox: the admin API at {stack.url} is disabled: start `farebox serve` with "
                             "--admin-token (or FAREBOX_ADMIN_TOKEN)\n")


def test_unreachable_url_is_one_line_and_exit_2(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    result = farebox(["budget", "list", "--url", url], cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"farebox: cannot reach farebox at {url}: ")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag", [["--redis-url", "redis://127.0.0.1:1/0"], ["--data-dir", "elsewhere"]])
def test_url_with_a_ledger_flag_is_refused(tmp_path, flag):
    result = farebox(["usage", "project", "acme", "--url", "http://127.0.0.1:1", *flag], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (f"farebox: {flag[0]} cannot be used with --url / FAREBOX_URL: the proxy at the URL "
                             "reads its own ledger\n")
