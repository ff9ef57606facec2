"""The Responses API through farebox with the official OpenAI SDK, against the fake upstream:
exact costs, budgets, clamping, and the bodies farebox refuses."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import httpx
import openai
import pytest
from openai import OpenAI

from pricing.cost import Usage, cost_nano, max_output_for_budget, worst_case_nano
from pricing.money import nano_to_usd, usd_to_nano
from proxy.apis.responses_prompt import count_responses
from proxy.ledger.reports import read_usage

HEADERS = {"X-Project-Id": "acme", "X-Agent-Id": "planner", "X-Session-Id": "run-42"}
ADMIN = {"Authorization": "Bearer admin-secret"}
MODEL = "gpt-4o-mini"
INPUT = "Say something."


def client_for(url: str) -> OpenAI:
    return OpenAI(base_url=url, api_key="sk-test-client", default_headers=HEADERS, max_retries=0)


def usage_of(stack, scope="project", scope_id="acme", period="day"):
    return stack.run(read_usage(stack.services.ledger, scope, scope_id, period, datetime.now(timezone.utc)))


def wait_for(predicate, timeout=15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def events_of(stack, key_prefix):
    return [fields for _, fields in stack.run(stack.services.ledger.redis.xrange(f"{key_prefix}:{{acme}}:events"))]


def put_budget(stack, limit, period="month"):
    response = httpx.put(f"{stack.url}/admin/budgets/project/acme", headers=ADMIN,
                         json={"limit_usd": limit, "period": period, "mode": "hard"})
    assert response.status_code == 200, response.text


def test_a_response_is_the_upstreams_and_its_cost_is_recorded(make_stack, key_prefix):
    stack = make_stack()
    direct = client_for(f"{stack.upstream_url}/v1").responses.create(model=MODEL, input=INPUT, instructions="Be terse.")
    raw = client_for(stack.base_url).responses.with_raw_response.create(model=MODEL, input=INPUT,
                                                                        instructions="Be terse.")
    via = raw.parse()
    assert via.output_text == direct.output_text
    assert via.usage.input_tokens == direct.usage.input_tokens
    price = stack.services.catalog.resolve(MODEL)
    expected = cost_nano(price, Usage(via.usage.input_tokens, via.usage.output_tokens))
    assert raw.headers["X-Farebox-Cost-USD"] == nano_to_usd(expected)
    report = usage_of(stack)
    assert (report["requests"], report["prompt_tokens"], report["completion_tokens"]) == (
        1, via.usage.input_tokens, via.usage.output_tokens)
    assert report["cost_usd"] == nano_to_usd(expected)
    [event] = events_of(stack, key_prefix)
    assert (event[b"endpoint"], event[b"model"], event[b"stream"] in (b"0", b"false", b"False")) == (
        b"responses", MODEL.encode(), True)
    assert usage_of(stack, "agent", "acme/planner")["requests"] == 1
    assert usage_of(stack, "session", "acme/run-42")["requests"] == 1
    assert stack.received[-1]["body"] == {"model": MODEL, "input": INPUT, "instructions": "Be terse."}


def test_cached_reasoning_and_search_parts_are_each_priced_once(make_stack):
    stack = make_stack()
    usage = {"input_tokens": 1200, "input_tokens_details": {"cached_tokens": 1000}, "output_tokens": 300,
             "output_tokens_details": {"reasoning_tokens": 250}, "total_tokens": 1500}
    raw = client_for(stack.base_url).responses.with_raw_response.create(
        model=MODEL, input=INPUT, tools=[{"type": "web_search"}],
        extra_headers={"X-Fake-Usage": json.dumps(usage), "X-Fake-Web-Searches": "2"})
    assert [item.type for item in raw.parse().output] == ["web_search_call", "web_search_call", "message"]
    # gpt-4o-mini: $0.15/M input, $0.075/M cached input, $0.60/M output (reasoning too), $0.025 a search:
    # 200 × 150 + 1000 × 75 + 300 × 600 = 285_000 nano-USD of tokens, + 2 × 25_000_000 of searches.
    assert raw.headers["X-Farebox-Cost-USD"] == "0.050285"
    report = usage_of(stack)
    assert (report["cost_usd"], report["prompt_tokens"], report["completion_tokens"]) == ("0.050285", 1200, 300)
    assert stack.received[-1]["body"]["max_tool_calls"] == 8  # farebox bounds the searches it reserved for


def test_a_hard_budget_without_room_refuses_with_402_and_forwards_nothing(make_stack):
    stack = make_stack(admin_token="admin-secret", clamp_max_tokens=False)
    put_budget(stack, "0.000001", period="day")
    with pytest.raises(openai.APIStatusError) as refused:
        client_for(stack.base_url).responses.create(model=MODEL, input=INPUT, max_output_tokens=100)
    assert refused.value.status_code == 402
    error = refused.value.response.json()["error"]
    price = stack.services.catalog.resolve(MODEL)
    worst = worst_case_nano(price, count_responses(MODEL, {"model": MODEL, "input": INPUT}).prompt, 100)
    assert (error["code"], error["scope"], error["request_max_cost_usd"]) == ("budget_exceeded", "project",
                                                                               nano_to_usd(worst))
    assert stack.received == []
    assert usage_of(stack)["requests"] == 0


def test_clamping_sets_max_output_tokens_to_what_the_budget_pays_for(make_stack):
    stack = make_stack(admin_token="admin-secret", min_output_tokens=64)
    price = stack.services.catalog.resolve(MODEL)
    prompt = count_responses(MODEL, {"model": MODEL, "input": INPUT}).prompt
    limit = worst_case_nano(price, prompt, 300)  # room for 300 output tokens, no more
    put_budget(stack, nano_to_usd(limit))
    raw = client_for(stack.base_url).responses.with_raw_response.create(
        model=MODEL, input=INPUT, extra_headers={"X-Fake-Reply-Tokens": "1000"})
    response = raw.parse()
    assert stack.received[-1]["body"]["max_output_tokens"] == 300
    assert raw.headers["X-Farebox-Max-Tokens-Clamped"] == "300"
    assert (response.status, response.usage.output_tokens) == ("incomplete", 300)
    assert usd_to_nano(usage_of(stack, period="month")["cost_usd"]) <= limit


def test_previous_response_id_reserves_the_context_window_and_is_charged_its_usage(make_stack):
    stack = make_stack(admin_token="admin-secret", min_output_tokens=64)
    client = client_for(stack.base_url)
    first = client.responses.create(model=MODEL, input=INPUT)
    price = stack.services.catalog.resolve(MODEL)
    stack.run(stack.services.settled())  # the first request's settle may still be queued
    spent = usd_to_nano(usage_of(stack, period="month")["cost_usd"])
    room = worst_case_nano(price, 128_000, 1000)  # the window and 1000 output tokens
    put_budget(stack, nano_to_usd(spent + room))
    second = client.responses.create(model=MODEL, input="And another?", previous_response_id=first.id)
    # The hidden context counts as the model's whole window: the output bound left is what remains.
    assert stack.received[-1]["body"]["max_output_tokens"] == max_output_for_budget(price, 128_000, room) == 1000
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    report = usage_of(stack)
    assert report["prompt_tokens"] == first.usage.input_tokens + second.usage.input_tokens


def test_an_upstream_error_is_passed_through_and_charged_nothing(make_stack, key_prefix):
    stack = make_stack(admin_token="admin-secret")
    put_budget(stack, "1.00")
    with pytest.raises(openai.InternalServerError):
        client_for(stack.base_url).responses.create(model=MODEL, input=INPUT, extra_headers={"X-Fake-Status": "500"})
    assert len(stack.received) == 1
    assert usage_of(stack)["requests"] == 0 and usage_of(stack, period="month")["cost_usd"] == "0.00"
    assert events_of(stack, key_prefix) == []


GOOD = {"model": MODEL, "input": INPUT}
BAD = [
    ("background", {**GOOD, "background": True}, "background", "unsupported_parameter",
     "farebox cannot meter a background response: it is generated after this request ends, with nothing left to "
     "measure and settle it. Send the request without 'background' (a stream gives the same freedom to leave and "
     "come back to nothing)."),
    ("file search", {**GOOD, "tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}, "tools[0]",
     "unsupported_tool", "farebox cannot meter the hosted tool 'file_search' (tools[0]): the provider bills it at "
     "prices farebox does not know, so a budget could not hold. Tools farebox meters: function, custom, "
     "web_search, web_search_preview and mcp."),
    ("web search unpriced", {**GOOD, "model": "gpt-4o", "tools": [{"type": "web_search"}]}, "tools[0]",
     "unsupported_tool", "farebox has no price for web search calls on model 'gpt-4o' (the catalog's "
     "web_search_call), so this request's searches could not be metered. Add web_search_call to its price in a "
     "price file, or set 'max_tool_calls' to 0."),
    ("missing input", {"model": MODEL}, "input", "missing_required_parameter", "Missing required parameter: 'input'."),
    ("input a number", {**GOOD, "input": 5}, "input", "invalid_type",
     "Invalid type for 'input': expected a string or an array of items, got a number."),
    ("missing model", {"input": INPUT}, "model", "missing_required_parameter", "Missing required parameter: 'model'."),
    ("max_output_tokens zero", {**GOOD, "max_output_tokens": 0}, "max_output_tokens", "invalid_value",
     "Invalid value for 'max_output_tokens': must be at least 1, got 0."),
    ("max_tool_calls a string", {**GOOD, "max_tool_calls": "3"}, "max_tool_calls", "invalid_type",
     "Invalid type for 'max_tool_calls': expected an integer, got a string."),
    ("stream a number", {**GOOD, "stream": 1}, "stream", "invalid_type",
     "Invalid type for 'stream': expected a boolean, got a number."),
    ("unknown model", {**GOOD, "model": "no-such-model-xyz"}, "model", "model_not_found", None),
]


@pytest.mark.parametrize(("body", "param", "code", "message"), [case[1:] for case in BAD], ids=[c[0] for c in BAD])
def test_bad_bodies_get_400_in_openais_shape_and_nothing_is_forwarded_or_recorded(make_stack, key_prefix, body,
                                                                                 param, code, message):
    stack = make_stack()
    response = httpx.post(f"{stack.base_url}/responses", headers=HEADERS, json=body, timeout=30)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    if message is not None:
        assert error["message"] == message
    assert stack.received == []
    assert stack.run(_keys(stack, key_prefix)) == []


async def _keys(stack, key_prefix):
    layout = stack.services.ledger.keys.layout().encode()  # written at start, by no request
    return [k async for k in stack.services.ledger.redis.scan_iter(match=f"{key_prefix}:*") if k != layout]


def test_stored_responses_and_token_counts_pass_through_unmetered(make_stack):
    stack = make_stack()
    client = OpenAI(base_url=stack.base_url, api_key="sk-test-client", max_retries=0)  # no project header needed
    created = client_for(stack.base_url).responses.create(model=MODEL, input=INPUT)
    assert client.responses.retrieve(created.id).output_text == created.output_text
    [item] = client.responses.input_items.list(created.id).data
    assert item.content[0].text == INPUT
    counted = client.responses.input_tokens.count(model=MODEL, input=INPUT)
    assert counted.input_tokens == created.usage.input_tokens
    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    assert usage_of(stack)["requests"] == 1  # only the response that generated anything
