"""The fake upstream's Anthropic Messages API: Anthropic's wire format, stream and not, cache
and search controls, errors, count_tokens; through the official ``anthropic`` SDK too."""

from __future__ import annotations

import json

import anthropic
import pytest

from proxy.apis.chat_prompt import count_completion
from proxy.fake_upstream.messages import SEARCH_RESULT_TOKENS, TOOL_SYSTEM_TOKENS, bill_messages
from proxy.tokens import count_text

MODEL = "claude-sonnet-4-5"
BODY = {"model": MODEL, "max_tokens": 100, "system": "You are terse.",
        "messages": [{"role": "user", "content": "Name a colour."}]}
SEARCH_TOOL = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}


async def post(client, body=None, headers=None, path="/v1/messages"):
    response = await client.post(path, json=BODY if body is None else body, headers=headers or {})
    return response.status, await response.json()


async def stream_events(client, body, headers=None) -> list[tuple[str, dict]]:
    response = await client.post("/v1/messages", json={**body, "stream": True}, headers=headers or {})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    text = await response.text()
    events = []
    for block in text.split("\n\n"):
        if not block:
            continue
        name, data = block.split("\n")
        assert name.startswith("event: ") and data.startswith("data: ")
        events.append((name[7:], json.loads(data[6:])))
    return events


def test_the_bill_counts_system_messages_and_tools():
    expected = count_text(MODEL, "You are terse.") + 3 + count_text(MODEL, "Name a colour.")
    assert bill_messages(MODEL, BODY) == expected
    tool = {"name": "f", "input_schema": {"type": "object"}}
    with_tool = bill_messages(MODEL, {**BODY, "tools": [tool]})
    assert with_tool == expected + TOOL_SYSTEM_TOKENS + count_text(MODEL, json.dumps(tool, separators=(",", ":")))


async def test_a_message_has_anthropics_shape_and_counted_usage(fake):
    status, message = await post(fake)
    assert status == 200
    text = message["content"][0]["text"]
    assert message == {
        "id": message["id"], "type": "message", "role": "assistant", "model": MODEL,
        "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": bill_messages(MODEL, BODY), "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0,
                  "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
                  "output_tokens": 16, "service_tier": "standard"},
    }
    assert message["id"].startswith("msg_")
    assert count_completion(MODEL, text) == 16


async def test_max_tokens_cuts_the_reply(fake):
    status, message = await post(fake, {**BODY, "max_tokens": 5})
    assert (status, message["stop_reason"], message["usage"]["output_tokens"]) == (200, "max_tokens", 5)


async def test_cache_headers_split_the_prompt_and_input_tokens_is_the_rest(fake):
    prompt = bill_messages(MODEL, BODY)
    status, message = await post(fake, headers={"X-Fake-Cache-Read": "4", "X-Fake-Cache-Write-5m": "3",
                                                "X-Fake-Cache-Write-1h": "2"})
    usage = message["usage"]
    assert usage["input_tokens"] == prompt - 9
    assert (usage["cache_read_input_tokens"], usage["cache_creation_input_tokens"]) == (4, 5)
    assert usage["cache_creation"] == {"ephemeral_5m_input_tokens": 3, "ephemeral_1h_input_tokens": 2}


async def test_searches_are_limited_by_max_uses_and_add_their_results(fake):
    body = {**BODY, "tools": [SEARCH_TOOL]}
    status, message = await post(fake, body, {"X-Fake-Web-Searches": "5"})
    assert message["usage"]["server_tool_use"] == {"web_search_requests": 3, "web_fetch_requests": 0}
    assert message["usage"]["input_tokens"] == bill_messages(MODEL, body) + 3 * SEARCH_RESULT_TOKENS
    kinds = [block["type"] for block in message["content"]]
    assert kinds == ["server_tool_use", "web_search_tool_result"] * 3 + ["text"]
    status, message = await post(fake, headers={"X-Fake-Web-Searches": "5"})
    assert "server_tool_use" not in message["usage"]


async def test_a_stream_sends_anthropics_events_in_order(fake):
    events = await stream_events(fake, {**BODY, "tools": [SEARCH_TOOL]}, {"X-Fake-Web-Searches": "1"})
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert names[1:5] == ["content_block_start", "content_block_delta", "content_block_stop", "content_block_start"]
    assert "ping" in names
    assert all(payload["type"] == name for name, payload in events)
    start = events[0][1]["message"]["usage"]
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"]["output_tokens"] == 16
    assert delta["usage"]["input_tokens"] == start["input_tokens"] + SEARCH_RESULT_TOKENS
    assert delta["usage"]["server_tool_use"]["web_search_requests"] == 1
    text = "".join(p["delta"].get("text", "") for n, p in events if n == "content_block_delta")
    assert count_completion(MODEL, text) == 16


async def test_a_forced_stream_error_ends_with_an_error_event(fake):
    events = await stream_events(fake, BODY, {"X-Fake-Stream-Error": "overloaded_error"})
    assert events[-1] == ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    assert "message_delta" not in [name for name, _ in events]


@pytest.mark.parametrize(("status", "kind"), [(400, "invalid_request_error"), (429, "rate_limit_error"),
                                              (529, "overloaded_error"), (500, "api_error")])
async def test_forced_errors_have_anthropics_shape(fake, status, kind):
    got, body = await post(fake, headers={"X-Fake-Status": str(status)})
    assert got == status
    assert body["type"] == "error" and body["error"]["type"] == kind


@pytest.mark.parametrize(("field", "message"), [("max_tokens", "max_tokens: Field required"),
                                                ("messages", "messages: Field required")])
async def test_missing_fields_are_refused_as_anthropic_does(fake, field, message):
    body = {k: v for k, v in BODY.items() if k != field}
    assert await post(fake, body) == (400, {"type": "error", "error": {"type": "invalid_request_error",
                                                                       "message": message}})


async def test_a_prompt_over_the_context_window_is_refused(fake):
    body = {**BODY, "messages": [{"role": "user", "content": "word " * 200_001}]}
    status, refused = await post(fake, body)
    assert status == 400 and refused["error"]["message"].startswith("prompt is too long")


async def test_count_tokens_answers_the_input_tokens(fake):
    body = {k: v for k, v in BODY.items() if k != "max_tokens"}
    assert await post(fake, body, path="/v1/messages/count_tokens") == (200, {"input_tokens": bill_messages(MODEL, BODY)})


async def test_the_sdk_reads_messages_streams_and_counts(fake):
    url = str(fake.make_url("/"))
    client = anthropic.AsyncAnthropic(base_url=url, api_key="x", max_retries=0)
    message = await client.messages.create(**BODY)
    assert message.usage.input_tokens == bill_messages(MODEL, BODY)
    async with client.messages.stream(**BODY) as stream:
        final = await stream.get_final_message()
    assert final.content[0].text == message.content[0].text
    assert final.usage.output_tokens == 16
    counted = await client.messages.count_tokens(model=MODEL, messages=BODY["messages"], system=BODY["system"])
    assert counted.input_tokens == bill_messages(MODEL, BODY)
    with pytest.raises(anthropic.RateLimitError):
        await client.messages.create(**BODY, extra_headers={"X-Fake-Status": "429"})
    await client.close()


async def test_thinking_comes_first_and_counts_as_output(fake):
    body = {**BODY, "max_tokens": 2000, "thinking": {"type": "enabled", "budget_tokens": 1024}}
    status, message = await post(fake, body)
    thinking, text = message["content"]
    assert (thinking["type"], text["type"]) == ("thinking", "text")
    assert thinking["signature"]
    assert message["usage"]["output_tokens"] == count_completion(MODEL, thinking["thinking"]) + 16 == 8 + 16
    events = await stream_events(fake, body)
    deltas = [p["delta"]["type"] for n, p in events if n == "content_block_delta"]
    assert deltas[:2] == ["thinking_delta", "signature_delta"] and set(deltas[2:]) == {"text_delta"}
    assert events[-2][1]["usage"]["output_tokens"] == 24


async def test_thinking_and_text_together_stay_within_max_tokens(fake):
    body = {**BODY, "max_tokens": 10, "thinking": {"type": "enabled", "budget_tokens": 1024}}
    status, message = await post(fake, body)
    assert (message["stop_reason"], message["usage"]["output_tokens"]) == ("max_tokens", 10)
