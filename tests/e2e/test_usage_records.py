"""Usage records of compute end to end: exact prices, the same budgets (402), rate limits and
reports as LLM calls, execution summaries, and every bad input refused with nothing recorded."""

from __future__ import annotations

import httpx
import pytest
from openai import OpenAI

from pricing.money import usd_to_nano

ADMIN = {"Authorization": "Bearer admin-secret"}
HEADERS = {"X-Project-Id": "acme", "X-Agent-Id": "runner"}


@pytest.fixture
def stack(make_stack):
    return make_stack(admin_token="admin-secret")


def record(stack, body, headers=HEADERS) -> httpx.Response:
    return httpx.post(f"{stack.url}/v1/usage-records", headers=headers, json=body, timeout=30)


def events(stack, project="acme"):
    stack.run(stack.services.settled())
    return stack.events(project)


def usage(stack, scope="project", scope_id="acme", period="day"):
    answer = httpx.get(f"{stack.url}/admin/usage", headers=ADMIN,
                       params={"scope": scope, "id": scope_id, "period": period})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_usage_record_is_priced_exactly_and_recorded_as_a_usage_event(stack):
    answer = record(stack, {"resource": "gpu", "quantity": "0.5", "execution_id": "job-7"})
    assert answer.status_code == 201, answer.text
    rid = answer.headers["X-Request-Id"]
    assert answer.json() == {"id": rid, "resource": "gpu", "quantity": "0.5", "unit": "gpu-hour",
                             "usd_per_unit": "1.50", "cost_usd": "0.75", "execution_id": "job-7"}
    assert answer.headers["X-Farebox-Cost-USD"] == "0.75"
    (event,) = events(stack)
    assert {k: event[k] for k in ("request_id", "project", "agent", "session", "model", "priced_model", "endpoint",
                                  "upstream", "status", "prompt_tokens", "completion_tokens", "cost_nano")} == {
        "request_id": rid, "project": "acme", "agent": "runner", "session": "job-7", "model": "compute:gpu",
        "priced_model": "compute:gpu", "endpoint": "usage-records", "upstream": "", "status": "201",
        "prompt_tokens": "0", "completion_tokens": "0", "cost_nano": "750000000"}
    assert stack.received == []


@pytest.mark.parametrize("resource, quantity, cost_usd", [
    ("cpu", "0.333", "0.01665"), ("memory", "12", "0.12"), ("storage", "2.5", "0.25"),
    ("bandwidth", "0.1", "0.012"), ("sandbox", "0.0000001", "0.000000001"), ("gpu", 3, "4.50"),
])
def test_every_default_resource_is_priced_to_the_nano_dollar(stack, resource, quantity, cost_usd):
    answer = record(stack, {"resource": resource, "quantity": quantity})
    assert answer.status_code == 201, answer.text
    assert answer.json()["cost_usd"] == cost_usd
    assert [e["cost_nano"] for e in events(stack)] == [str(usd_to_nano(cost_usd))]


def test_reports_split_llm_and_compute_cost_and_count_by_resource(stack):
    client = OpenAI(base_url=stack.base_url, api_key="x", max_retries=0,
                    default_headers={**HEADERS, "X-Session-Id": "job-7"})
    reply = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    llm_nano = usd_to_nano(reply.headers["X-Farebox-Cost-USD"])
    for body in ({"resource": "gpu", "quantity": "0.5", "execution_id": "job-7"},
                 {"resource": "gpu", "quantity": "0.25", "execution_id": "job-7"},
                 {"resource": "cpu", "quantity": "2"}):
        assert record(stack, body).status_code == 201
    report = usage(stack)
    assert report["requests"] == 4 and report["compute_records"] == 3
    assert report["llm_cost_usd"] == reply.headers["X-Farebox-Cost-USD"]
    assert report["compute_cost_usd"] == "1.225"
    assert usd_to_nano(report["cost_usd"]) == llm_nano + 1_225_000_000
    assert list(report["by_model"]) == ["gpt-4o-mini"]
    assert report["by_resource"] == {"cpu": {"records": 1, "cost_usd": "0.10"},
                                     "gpu": {"records": 2, "cost_usd": "1.125"}}
    assert usage(stack, "agent", "acme/runner")["compute_cost_usd"] == "1.225"
    gpu = usage(stack, "model", "acme/compute:gpu")
    assert (gpu["cost_usd"], gpu["compute_cost_usd"], gpu["llm_cost_usd"], gpu["compute_records"]) == (
        "1.125", "1.125", "0.00", 2)
    llm = usage(stack, "model", "acme/gpt-4o-mini")
    assert (llm["compute_cost_usd"], llm["compute_records"]) == ("0.00", 0)

    summary = httpx.get(f"{stack.url}/admin/executions/acme/job-7", headers=ADMIN)
    assert summary.status_code == 200, summary.text
    llm_usd = reply.headers["X-Farebox-Cost-USD"]
    usage_reply = reply.parse().usage
    assert summary.json() == {
        "execution_id": "acme/job-7", "project": "acme", "execution": "job-7",
        "cost_usd": _usd(llm_nano + 1_125_000_000), "llm_cost_usd": llm_usd, "compute_cost_usd": "1.125",
        "llm": {"requests": 1, "prompt_tokens": usage_reply.prompt_tokens,
                "completion_tokens": usage_reply.completion_tokens, "cost_usd": llm_usd,
                "by_model": {"gpt-4o-mini": {"requests": 1, "prompt_tokens": usage_reply.prompt_tokens,
                                             "completion_tokens": usage_reply.completion_tokens, "cost_usd": llm_usd}}},
        "compute": {"records": 2, "cost_usd": "1.125", "by_resource": {"gpu": {"records": 2, "cost_usd": "1.125"}}}}


def _usd(nano: int) -> str:
    from pricing.money import nano_to_usd
    return nano_to_usd(nano)


@pytest.mark.parametrize("path, status, error", [
    ("/admin/executions/acme/job-9", 404, {
        "message": "No usage recorded for execution 'acme/job-9' (LLM calls with X-Session-Id or usage records with "
                   "execution_id set to it).", "type": "not_found_error", "param": "id", "code": "execution_not_found"}),
    ("/admin/executions/job-9", 400, {
        "message": "Invalid execution id 'job-9': write it as PROJECT/EXECUTION, e.g. acme/job-7.",
        "type": "invalid_request_error", "param": "id", "code": "invalid_value"}),
    ("/admin/executions/acme/job-9?period=day", 400, {
        "message": "Unknown query parameter 'period': use .", "type": "invalid_request_error", "param": "period",
        "code": "invalid_value"}),
])
def test_an_execution_summary_refuses_what_names_no_execution(stack, path, status, error):
    answer = httpx.get(f"{stack.url}{path}", headers=ADMIN)
    assert (answer.status_code, answer.json()) == (status, {"error": error})


def test_a_hard_budget_without_room_refuses_a_usage_record_with_402_and_records_nothing(stack):
    put = httpx.put(f"{stack.url}/admin/budgets/project/acme", headers=ADMIN,
                    json={"limit_usd": "1", "period": "total", "mode": "hard"})
    assert put.status_code == 200, put.text
    assert record(stack, {"resource": "gpu", "quantity": "0.5"}).status_code == 201
    answer = record(stack, {"resource": "gpu", "quantity": "0.5"})
    assert answer.status_code == 402
    assert "Retry-After" not in answer.headers
    assert answer.json() == {"error": {
        "message": "Budget exceeded for project 'acme': total limit $1.00, spent $0.75, this request may cost up to "
                   "$0.75; this budget never resets",
        "type": "budget_exceeded", "param": None, "code": "budget_exceeded", "scope": "project", "scope_id": "acme",
        "period": "total", "limit_usd": "1.00", "spent_usd": "0.75", "reserved_usd": "0.00",
        "request_max_cost_usd": "0.75", "resets_at": None}}
    assert [e["cost_nano"] for e in events(stack)] == ["750000000"]
    assert record(stack, {"resource": "cpu", "quantity": "5"}).status_code == 201   # exactly the $0.25 left
    assert httpx.get(f"{stack.url}/admin/budgets/project/acme", headers=ADMIN).json()["spent_usd"] == "1.00"


def test_an_execution_budget_is_a_session_budget(stack):
    httpx.put(f"{stack.url}/admin/budgets/session/acme/job-7", headers=ADMIN,
              json={"limit_usd": "0.10", "period": "total"}).raise_for_status()
    assert record(stack, {"resource": "cpu", "quantity": "2", "execution_id": "job-7"}).status_code == 201
    refused = record(stack, {"resource": "cpu", "quantity": "0.2", "execution_id": "job-7"})
    assert (refused.status_code, refused.json()["error"]["scope"], refused.json()["error"]["scope_id"]) == (
        402, "session", "acme/job-7")
    assert record(stack, {"resource": "cpu", "quantity": "0.2", "execution_id": "job-8"}).status_code == 201


def test_a_usage_record_counts_as_a_request_on_the_rate_limits(stack):
    httpx.put(f"{stack.url}/admin/limits/project/acme", headers=ADMIN, json={"rpm": 2}).raise_for_status()
    assert [record(stack, {"resource": "cpu", "quantity": "1"}).status_code for _ in range(3)] == [201, 201, 429]
    assert len(events(stack)) == 2


def test_a_farebox_key_attributes_a_usage_record_without_any_provider_key(stack):
    made = httpx.post(f"{stack.url}/admin/keys", headers=ADMIN, json={"project": "acme", "agent": "worker"})
    assert made.status_code == 201, made.text
    key = made.json()
    answer = record(stack, {"resource": "memory", "quantity": "4"}, headers={"Authorization": f"Bearer {key['key']}"})
    assert answer.status_code == 201, answer.text
    (event,) = events(stack)
    assert (event["agent"], event["key_id"]) == ("worker", key["id"])
    other = record(stack, {"resource": "memory", "quantity": "4"},
                   headers={"Authorization": f"Bearer {key['key']}", "X-Project-Id": "beta"})
    assert other.status_code == 403 and other.json()["error"]["code"] == "project_mismatch"


def test_the_price_table_is_configurable(make_stack):
    stack = make_stack(resource_prices={"gpu": {"unit": "gpu-hour", "usd_per_unit": "2.10"}, "cpu": None})
    assert record(stack, {"resource": "gpu", "quantity": "0.5"}).json()["cost_usd"] == "1.05"
    answer = record(stack, {"resource": "cpu", "quantity": "1"})
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == (
        "Unknown resource \"cpu\": farebox prices bandwidth, gpu, memory, sandbox, storage (resource_prices adds "
        "others).")


def _bad(message: str, param: str | None, code: str) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


BAD = [
    ({"quantity": "1"}, _bad("Missing required parameter: 'resource'.", "resource", "missing_required_parameter")),
    ({"resource": 7, "quantity": "1"}, _bad("Invalid type for 'resource': expected a string, got a number.",
                                            "resource", "invalid_type")),
    ({"resource": "tpu", "quantity": "1"}, _bad(
        "Unknown resource \"tpu\": farebox prices bandwidth, cpu, gpu, memory, sandbox, storage (resource_prices "
        "adds others).", "resource", "unknown_resource")),
    ({"resource": "gpu"}, _bad("Missing required parameter: 'quantity'.", "quantity", "missing_required_parameter")),
    ({"resource": "gpu", "quantity": None}, _bad("Missing required parameter: 'quantity'.", "quantity",
                                                 "missing_required_parameter")),
    ({"resource": "gpu", "quantity": "0"}, _bad(
        "Invalid quantity \"0\": a positive decimal string such as \"0.5\" (greater than 0).", "quantity",
        "invalid_value")),
    ({"resource": "gpu", "quantity": "-1"}, _bad(
        "Invalid quantity \"-1\": a positive decimal string such as \"0.5\".", "quantity", "invalid_value")),
    ({"resource": "gpu", "quantity": "abc"}, _bad(
        "Invalid quantity \"abc\": a positive decimal string such as \"0.5\".", "quantity", "invalid_value")),
    ({"resource": "gpu", "quantity": "NaN"}, _bad(
        "Invalid quantity \"NaN\": a positive decimal string such as \"0.5\".", "quantity", "invalid_value")),
    ({"resource": "gpu", "quantity": 0.5}, _bad(
        "Invalid quantity 0.5: a positive decimal string such as \"0.5\" (a JSON number with a fraction is not "
        "exact: send it as a string).", "quantity", "invalid_value")),
    ({"resource": "gpu", "quantity": -3}, _bad(
        "Invalid quantity -3: a positive decimal string such as \"0.5\" (greater than 0).", "quantity",
        "invalid_value")),
    ({"resource": "gpu", "quantity": True}, _bad(
        "Invalid quantity true: a positive decimal string such as \"0.5\" (a JSON number with a fraction is not "
        "exact: send it as a string).", "quantity", "invalid_value")),
    ({"resource": "gpu", "quantity": "1e-30"}, _bad(
        "Invalid quantity \"1e-30\": a quantity from 1e-18 to below 1e16.", "quantity", "invalid_value")),
    ({"resource": "gpu", "quantity": "100000"}, _bad(
        "This usage record costs $150000.00, more than farebox records at once ($100000.00); split it.",
        "quantity", "invalid_value")),
    ({"resource": "gpu", "quantity": "1", "execution_id": "job 7"}, {"error": {
        "message": "Invalid execution_id \"job 7\": ids are 1-128 characters of letters, digits and . _ - @.",
        "type": "invalid_request_error", "param": "execution_id", "code": "invalid_id"}}),
    ({"resource": "gpu", "quantity": "1", "execution_id": 7}, {"error": {
        "message": "Invalid execution_id 7: ids are 1-128 characters of letters, digits and . _ - @.",
        "type": "invalid_request_error", "param": "execution_id", "code": "invalid_id"}}),
    ({"resource": "gpu", "quantity": "1", "expires_in": "1h"}, _bad(
        "Unknown parameter 'expires_in': a usage record has resource, quantity, execution_id.", "expires_in",
        "unknown_parameter")),
]


@pytest.mark.parametrize("body, error", BAD)
def test_a_bad_usage_record_is_refused_with_400_and_nothing_recorded(stack, body, error):
    answer = record(stack, body)
    assert (answer.status_code, answer.json()) == (400, error)
    assert events(stack) == []


@pytest.mark.parametrize("raw, headers, status, error", [
    (b"", HEADERS, 400, _bad("The request body is empty; send a JSON object.", None, "invalid_json")),
    (b"[1]", HEADERS, 400, _bad("The request body must be a JSON object, not an array.", None, "invalid_json")),
    (b'{"resource": "gpu", "quantity": "1"}', {"X-Agent-Id": "runner"}, 400, _bad(
        "Missing X-Project-Id header: every request must name its project.", "X-Project-Id", "missing_project")),
    (b'{"resource": "gpu", "quantity": "1"}', {"X-Project-Id": "ac me"}, 400, {"error": {
        "message": "Invalid X-Project-Id header ac me: ids are 1-128 characters of letters, digits and . _ - @.",
        "type": "invalid_request_error", "param": "X-Project-Id", "code": "invalid_id"}}),
    (b'{"resource": "gpu", "quantity": "1"}', {"X-Project-Id": "acme", "Authorization": "Bearer fbk_nope"}, 401,
     {"error": {"message": "Invalid farebox key: it is not in the form farebox issues (fbk_ and 59 characters).",
                "type": "authentication_error", "param": None, "code": "invalid_api_key"}}),
])
def test_a_usage_record_without_a_body_or_a_payer_is_refused_and_nothing_recorded(stack, raw, headers, status, error):
    answer = httpx.post(f"{stack.url}/v1/usage-records", headers={**headers, "Content-Type": "application/json"},
                        content=raw)
    assert (answer.status_code, answer.json()) == (status, error)
    assert events(stack) == []
