"""Anthropic Messages through farebox with the official ``anthropic`` SDK, against the fake upstream."""

from __future__ import annotations

import asyncio
import json
import time

import anthropic
import httpx
import pytest

from pricing.cost import Usage, cost_nano, worst_case_nano
from pricing.money import nano_to_usd
from proxy.apis.chat_prompt import count_completion
from proxy.apis.messages import MESSAGES
from proxy.fake_upstream.messages import bill_messages

ADMIN = {"Authorization": "Bearer admin-secret"}
HEADERS = {"X-Project-Id": "acme", "X-Agent-Id": "coder", "X-Session-Id": "s-1"}
MODEL = "claude-sonnet-4-5"
USER = [{"role": "user", "content": "Name a colour."}]
SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 2}


def client_for(stack, **headers) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.url, api_key="sk-ant-client", max_retries=0,
                               default_headers={**HEADERS, **headers})


def events_of(stack, project="acme", count=1):
    """The recorded events, once ``count`` are there (a stream is recorded after its last byte)."""
    deadline = time.monotonic() + 15
    while len(stack.events(project)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return stack.events(project)


def put_budget(stack, limit_nano: int) -> None:
    response = httpx.put(f"{stack.url}/admin/budgets/project/acme", headers=ADMIN,
                         json={"limit_usd": nano_to_usd(limit_nano), "period": "month", "mode": "hard"})
    assert response.status_code == 200, response.text


def bound_of(stack, **body) -> int:
    request = MESSAGES.parse(json.dumps({"model": MODEL, **body}).encode())
    return asyncio.run(MESSAGES.count_prompt(request, stack.services.catalog.resolve(MODEL)))


# sonnet 4.5, nano-USD per token: input 3000, cache read 300, 5m write 3750, 1h write 6000,
# output 15000; a web search 10_000_000 nano-USD.
def hand_cost(input_tokens, read, write_5m, write_1h, output, searches) -> int:
    return (input_tokens * 3000 + read * 300 + write_5m * 3750 + write_1h * 6000 + output * 15000
            + searches * 10_000_000)


CACHE = {"X-Fake-Cache-Read": "40", "X-Fake-Cache-Write-5m": "30", "X-Fake-Cache-Write-1h": "20"}


def test_create_is_charged_every_part_to_the_nano_dollar(make_stack):
    stack = make_stack(admin_token="admin-secret")
    raw = client_for(stack, **CACHE, **{"X-Fake-Web-Searches": "2"}).messages.with_raw_response.create(
        model=MODEL, max_tokens=200, system="Be terse.", messages=USER, tools=[SEARCH])
    message = raw.parse()
    usage = message.usage
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (40, 50)
    assert usage.server_tool_use.web_search_requests == 2
    expected = hand_cost(usage.input_tokens, 40, 30, 20, usage.output_tokens, 2)
    assert expected == cost_nano(stack.services.catalog.resolve(MODEL), Usage(
        usage.input_tokens + 90, usage.output_tokens, cached_tokens=40, cache_creation_tokens=50,
        cache_creation_1h_tokens=20, web_search_calls=2))
    assert raw.headers["X-Farebox-Cost-USD"] == nano_to_usd(expected)
    [event] = events_of(stack)
    assert (event["endpoint"], event["status"], event["estimated"], event["cost_nano"]) == (
        "messages", "200", "0", str(expected))
    assert (event["prompt_tokens"], event["cached_tokens"], event["cache_creation_tokens"]) == (
        str(usage.input_tokens + 90), "40", "50")
    assert event["completion_tokens"] == str(usage.output_tokens)
    assert (event["cache_creation_1h_tokens"], event["web_search_calls"]) == ("20", "2")
    [row] = [json.loads(line) for line in httpx.get(f"{stack.url}/admin/events?project=acme", headers=ADMIN).text.split()]
    assert (row["cache_creation_1h_tokens"], row["web_search_calls"], row["cost_nano"]) == (20, 2, expected)
    assert row["ttfb_ms"] is not None


def test_a_stream_is_charged_from_message_start_and_the_last_message_delta(make_stack):
    stack = make_stack()
    client = client_for(stack, **CACHE, **{"X-Fake-Web-Searches": "1"})
    with client.messages.stream(model=MODEL, max_tokens=200, messages=USER, tools=[SEARCH]) as stream:
        final = stream.get_final_message()
    usage = final.usage
    assert final.content[-1].text
    assert usage.server_tool_use.web_search_requests == 1
    [event] = events_of(stack)
    assert (event["stream"], event["estimated"], event["status"]) == ("1", "0", "200")
    assert event["prompt_tokens"] == str(usage.input_tokens + 90)
    assert event["completion_tokens"] == str(usage.output_tokens)
    assert event["cost_nano"] == str(hand_cost(usage.input_tokens, 40, 30, 20, usage.output_tokens, 1))


def test_count_tokens_passes_through_and_records_nothing(make_stack):
    stack = make_stack()
    counted = client_for(stack).messages.count_tokens(model=MODEL, messages=USER)
    assert counted.input_tokens == bill_messages(MODEL, {"messages": USER})
    assert stack.received[-1]["path"] == "/v1/messages/count_tokens"
    assert stack.events() == []


def test_a_402_raises_the_sdks_status_error_in_anthropics_shape(make_stack):
    stack = make_stack(admin_token="admin-secret", clamp_max_tokens=False)
    put_budget(stack, 1000)
    with pytest.raises(anthropic.APIStatusError) as refused:
        client_for(stack).messages.create(model=MODEL, max_tokens=100, messages=USER)
    assert refused.value.status_code == 402
    body = refused.value.body
    assert body["type"] == "error"
    error = body["error"]
    assert (error["type"], error["code"], error["scope"], error["scope_id"]) == (
        "billing_error", "budget_exceeded", "project", "acme")
    assert error["message"].startswith("Budget exceeded for project 'acme'")
    assert error["limit_usd"] == nano_to_usd(1000)
    worst = worst_case_nano(stack.services.catalog.resolve(MODEL), bound_of(stack, max_tokens=100, messages=USER), 100)
    assert error["request_max_cost_usd"] == nano_to_usd(worst)
    assert stack.received == []


def test_clamping_lowers_max_tokens(make_stack):
    stack = make_stack(admin_token="admin-secret", min_output_tokens=64)
    price = stack.services.catalog.resolve(MODEL)
    prompt = bound_of(stack, max_tokens=4000, messages=USER)
    put_budget(stack, worst_case_nano(price, prompt, 300))
    raw = client_for(stack, **{"X-Fake-Reply-Tokens": "1000"}).messages.with_raw_response.create(
        model=MODEL, max_tokens=4000, messages=USER)
    assert stack.received[-1]["body"]["max_tokens"] == 300
    assert raw.headers["X-Farebox-Max-Tokens-Clamped"] == "300"
    message = raw.parse()
    assert (message.stop_reason, message.usage.output_tokens) == ("max_tokens", 300)


def test_clamping_with_thinking_lowers_the_budget_below_max_tokens_or_refuses(make_stack):
    stack = make_stack(admin_token="admin-secret", min_output_tokens=64)
    price = stack.services.catalog.resolve(MODEL)
    thinking = {"type": "enabled", "budget_tokens": 4000}
    prompt = bound_of(stack, max_tokens=8000, messages=USER, thinking=thinking)
    put_budget(stack, worst_case_nano(price, prompt, 2000))
    client = client_for(stack)
    client.messages.create(model=MODEL, max_tokens=8000, messages=USER, thinking=thinking)
    sent = stack.received[-1]["body"]
    assert (sent["max_tokens"], sent["thinking"]) == (2000, {"type": "enabled", "budget_tokens": 1999})
    # Room for fewer than 1025 output tokens: thinking cannot run, so 402.
    stack2 = make_stack(admin_token="admin-secret", min_output_tokens=64)
    put_budget(stack2, worst_case_nano(price, prompt, 1000))
    with pytest.raises(anthropic.APIStatusError) as refused:
        client_for(stack2).messages.create(model=MODEL, max_tokens=8000, messages=USER, thinking=thinking)
    assert refused.value.status_code == 402
    assert stack2.received == []


def test_a_client_gone_mid_stream_is_charged_what_was_generated(make_stack):
    stack = make_stack()
    headers = {**HEADERS, "X-Fake-Chunk-Delay-Ms": "150", "X-Fake-Reply-Tokens": "64", "anthropic-version": "2023-06-01"}
    body = {"model": MODEL, "max_tokens": 200, "messages": USER, "stream": True}
    with httpx.Client(timeout=30) as http:
        with http.stream("POST", f"{stack.url}/v1/messages", headers=headers, json=body) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            next(line for line in lines if line == "event: content_block_delta")
    [event] = events_of(stack)
    assert (event["status"], event["estimated"]) == ("499", "1")
    assert event["prompt_tokens"] == str(bill_messages(MODEL, body))  # message_start's, not the bound
    assert 0 < int(event["completion_tokens"]) < 64


def test_an_upstream_error_passes_through_and_is_charged_nothing(make_stack):
    stack = make_stack(admin_token="admin-secret")
    put_budget(stack, 10**9)
    with pytest.raises(anthropic.APIStatusError) as failed:
        client_for(stack, **{"X-Fake-Status": "529"}).messages.create(model=MODEL, max_tokens=100, messages=USER)
    assert failed.value.status_code == 529
    assert failed.value.body == {"type": "error", "error": {"type": "overloaded_error",
                                                            "message": "Error 529, as asked for with X-Fake-Status."}}
    status = httpx.get(f"{stack.url}/admin/budgets/project/acme", headers=ADMIN).json()
    assert status["reserved_usd"] == "0.00" and status["spent_usd"] == "0.00"
    assert stack.events() == []


def test_an_error_event_mid_stream_is_charged_what_arrived(make_stack):
    stack = make_stack()
    client = client_for(stack, **{"X-Fake-Stream-Error": "overloaded_error"})
    with pytest.raises(anthropic.APIStatusError):
        with client.messages.stream(model=MODEL, max_tokens=200, messages=USER) as stream:
            stream.get_final_message()
    [event] = events_of(stack)
    assert event["estimated"] == "1"
    assert event["prompt_tokens"] == str(bill_messages(MODEL, {"messages": USER}))
    assert int(event["completion_tokens"]) > 0


def test_beta_query_and_anthropic_headers_reach_the_upstream(make_stack):
    stack = make_stack()
    # Claude Code asks for /v1/messages?beta=true; this SDK sends the betas as a header only.
    client_for(stack).beta.messages.create(model=MODEL, max_tokens=50, messages=USER,
                                           betas=["context-management-2025-06-27"], extra_query={"beta": "true"},
                                           extra_headers={"anthropic-version": "2023-06-01"})
    received = stack.received[-1]
    assert (received["path"], received["query"]) == ("/v1/messages", "beta=true")
    assert received["headers"]["anthropic-version"] == "2023-06-01"
    assert received["headers"]["anthropic-beta"] == "context-management-2025-06-27"
    assert received["headers"]["authorization"] == "Bearer sk-ant-client"  # the credential as the SDK sent it
    assert "x-project-id" not in received["headers"]


def test_claude_code_headers_attribute_the_request(make_stack):
    stack = make_stack()
    client = anthropic.Anthropic(base_url=stack.url, api_key="x", max_retries=0, default_headers={
        "X-Project-Id": "acme", "x-claude-code-session-id": "cc-7"})
    client.messages.create(model=MODEL, max_tokens=50, messages=USER)
    [event] = events_of(stack)
    assert event["session"] == "cc-7"


CODE_EXECUTION = ("tools.0: farebox cannot meter the server tool 'code_execution_20250825' (it is not billed by "
                  "tokens or per search); remove it or call the provider directly.")


@pytest.mark.parametrize(("body", "error"), [
    ({"model": MODEL, "messages": USER},
     {"type": "invalid_request_error", "message": "max_tokens: Field required", "code": "missing_required_parameter",
      "param": "max_tokens"}),
    ({"model": MODEL, "messages": USER, "max_tokens": 10,
      "tools": [{"type": "code_execution_20250825", "name": "code_execution"}]},
     {"type": "invalid_request_error", "message": CODE_EXECUTION, "code": "unsupported_tool", "param": "tools.0.type"}),
])
def test_bad_input_is_refused_in_anthropics_shape_and_not_forwarded(make_stack, body, error):
    stack = make_stack()
    response = httpx.post(f"{stack.url}/v1/messages", headers=HEADERS, json=body)
    assert response.status_code == 400
    assert response.json() == {"type": "error", "error": error}
    assert stack.received == []
    assert stack.events() == []


def test_estimated_output_matches_the_text_when_no_usage_comes(make_stack):
    stack = make_stack()
    response = httpx.post(f"{stack.url}/v1/messages", headers={**HEADERS, "X-Fake-No-Usage": "1"},
                          json={"model": MODEL, "max_tokens": 50, "messages": USER})
    text = response.json()["content"][0]["text"]
    [event] = events_of(stack)
    assert event["estimated"] == "1"
    assert event["completion_tokens"] == str(count_completion(MODEL, text))
    assert event["prompt_tokens"] == str(bound_of(stack, max_tokens=50, messages=USER))


def test_an_upstream_cut_mid_stream_is_charged_what_arrived(make_stack):
    stack = make_stack()
    client = client_for(stack, **{"X-Fake-Drop-After-Chunks": "5", "X-Fake-Reply-Tokens": "64"})
    with pytest.raises(Exception, match="incomplete chunked read"):  # the SDK's HTTP client's error
        with client.messages.stream(model=MODEL, max_tokens=200, messages=USER) as stream:
            stream.get_final_message()
    [event] = events_of(stack)
    # message_start, content_block_start, ping and two text deltas arrived.
    assert (event["estimated"], event["stream"]) == ("1", "1")
    assert event["prompt_tokens"] == str(bill_messages(MODEL, {"messages": USER}))
    assert 0 < int(event["completion_tokens"]) < 64


def test_a_stream_with_thinking_reaches_the_sdk_whole_and_is_charged_its_output(make_stack):
    stack = make_stack()
    with client_for(stack).messages.stream(model=MODEL, max_tokens=2000, messages=USER,
                                           thinking={"type": "enabled", "budget_tokens": 1024}) as stream:
        final = stream.get_final_message()
    assert [block.type for block in final.content] == ["thinking", "text"]
    [event] = events_of(stack)
    assert (event["estimated"], event["completion_tokens"]) == ("0", str(final.usage.output_tokens))
    assert final.usage.output_tokens == count_completion(MODEL, final.content[0].thinking + final.content[1].text)


async def test_concurrent_messages_never_overspend_a_hard_budget(make_stack):
    stack = make_stack(admin_token="admin-secret", clamp_max_tokens=False)
    price = stack.services.catalog.resolve(MODEL)
    request = MESSAGES.parse(json.dumps({"model": MODEL, "max_tokens": 16, "messages": USER}).encode())
    worst = worst_case_nano(price, await MESSAGES.count_prompt(request, price), 16)
    limit = 20 * worst + worst // 2
    put_budget(stack, limit)
    client = anthropic.AsyncAnthropic(base_url=stack.url, api_key="x", max_retries=0, default_headers=HEADERS)

    async def one(i: int):
        try:
            return await client.messages.create(model=MODEL, max_tokens=16, messages=USER)
        except anthropic.APIStatusError as exc:
            return exc

    results = await asyncio.gather(*[one(i) for i in range(100)])
    await client.close()
    allowed = [r for r in results if not isinstance(r, anthropic.APIStatusError)]
    refused = [r for r in results if isinstance(r, anthropic.APIStatusError)]
    assert len(allowed) >= 20 and refused
    assert all(r.status_code == 402 and r.body["error"]["type"] == "billing_error" for r in refused)
    assert len([r for r in stack.received if r["path"] == "/v1/messages"]) == len(allowed)
    events = events_of(stack, count=len(allowed))
    spent = sum(int(event["cost_nano"]) for event in events)
    assert spent == sum(hand_cost(r.usage.input_tokens, 0, 0, 0, r.usage.output_tokens, 0) for r in allowed)
    assert spent <= limit


def test_count_tokens_needs_no_project_header(make_stack):
    stack = make_stack()
    client = anthropic.Anthropic(base_url=stack.url, api_key="x", max_retries=0)
    assert client.messages.count_tokens(model=MODEL, messages=USER).input_tokens == bill_messages(
        MODEL, {"messages": USER})
    assert stack.events() == []
