"""The fake upstream's Responses API: OpenAI's objects, events and errors, stream or not, the
stored-response endpoints, and through the official SDK."""

from __future__ import annotations

import json

import aiohttp
import pytest
from openai import AsyncOpenAI, BadRequestError, NotFoundError, RateLimitError

from proxy.apis.chat_prompt import count_completion
from proxy.fake_upstream.responses import SEARCH_RESULT_TOKENS
from proxy.fake_upstream.responses_billing import bill_responses

BODY = {"model": "gpt-4o-mini", "instructions": "Be terse.", "input": "Name a colour."}
WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                          "required": ["city", "days"]}}


async def create(client, body=None, headers=None):
    response = await client.post("/v1/responses", json=BODY if body is None else body, headers=headers or {})
    return response.status, await response.json()


async def stream(client, body, headers=None) -> list[tuple[str, dict]]:
    response = await client.post("/v1/responses", json={**body, "stream": True}, headers=headers or {})
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    text = await response.text()
    events = []
    for block in text.split("\n\n")[:-1]:
        kind, data = block.split("\n")
        assert kind.startswith("event: ") and data.startswith("data: ")
        payload = json.loads(data[6:])
        assert payload["type"] == kind[7:]
        events.append((kind[7:], payload))
    return events


async def test_a_response_has_openais_shape_and_counted_usage(fake):
    status, response = await create(fake)
    assert status == 200
    assert response["id"].startswith("resp_") and response["object"] == "response"
    assert (response["status"], response["incomplete_details"], response["model"]) == ("completed", None, "gpt-4o-mini")
    [message] = response["output"]
    assert (message["type"], message["role"], message["status"]) == ("message", "assistant", "completed")
    text = message["content"][0]["text"]
    assert message["content"][0]["type"] == "output_text"
    prompt = bill_responses("gpt-4o-mini", BODY)
    assert response["usage"] == {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0},
                                 "output_tokens": 16, "output_tokens_details": {"reasoning_tokens": 0},
                                 "total_tokens": prompt + 16}
    assert count_completion("gpt-4o-mini", text) == 16


async def test_max_output_tokens_cuts_the_reply_and_marks_it_incomplete(fake):
    status, response = await create(fake, {**BODY, "max_output_tokens": 16}, {"X-Fake-Reply-Tokens": "40"})
    assert (status, response["status"], response["incomplete_details"]) == (200, "incomplete",
                                                                             {"reason": "max_output_tokens"})
    assert response["usage"]["output_tokens"] == 16
    assert response["output"][0]["status"] == "incomplete"


async def test_function_tools_get_a_call_then_an_answer(fake):
    status, first = await create(fake, {**BODY, "tools": [WEATHER]})
    [call] = first["output"]
    assert (call["type"], call["name"], call["status"]) == ("function_call", "get_weather", "completed")
    arguments = json.loads(call["arguments"])
    assert set(arguments) == {"city", "days"} and isinstance(arguments["city"], str) and arguments["days"] == 3
    assert first["usage"]["output_tokens"] == count_completion(
        "gpt-4o-mini", "", [{"function": {"name": "get_weather", "arguments": call["arguments"]}}])
    follow = {**BODY, "tools": [WEATHER], "input": [{"role": "user", "content": "Weather?"}, call,
              {"type": "function_call_output", "call_id": call["call_id"], "output": "Sunny"}]}
    _, second = await create(fake, follow)
    assert [item["type"] for item in second["output"]] == ["message"]


async def test_web_searches_come_first_and_bill_a_step_each(fake):
    body = {**BODY, "tools": [{"type": "web_search"}], "max_tool_calls": 2}
    _, response = await create(fake, body, {"X-Fake-Web-Searches": "3"})  # at most max_tool_calls
    assert [item["type"] for item in response["output"]] == ["web_search_call", "web_search_call", "message"]
    assert response["tool_usage"] == {"web_search": {"num_requests": 2}}
    step = bill_responses("gpt-4o-mini", body)
    assert response["usage"]["input_tokens"] == 3 * step + 2 * SEARCH_RESULT_TOKENS
    _, plain = await create(fake, BODY, {"X-Fake-Web-Searches": "3"})  # no web search tool: no search
    assert [item["type"] for item in plain["output"]] == ["message"] and "tool_usage" not in plain
    status, refused = await create(fake, body, {"X-Fake-Web-Searches": "many"})
    assert (status, refused["error"]["param"]) == (400, "X-Fake-Web-Searches")


async def test_a_stream_sends_openais_events_in_order(fake):
    events = await stream(fake, {**BODY, "tools": [{"type": "web_search"}]}, {"X-Fake-Web-Searches": "1"})
    kinds = [kind for kind, _ in events]
    assert kinds == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.web_search_call.in_progress", "response.web_search_call.searching",
        "response.web_search_call.completed", "response.output_item.done",
        "response.output_item.added", "response.content_part.added",
        *["response.output_text.delta"] * 8,
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.completed"]
    assert [payload["sequence_number"] for _, payload in events] == list(range(len(events)))
    text = "".join(payload["delta"] for kind, payload in events if kind == "response.output_text.delta")
    final = events[-1][1]["response"]
    assert final["output"][1]["content"][0]["text"] == text
    assert final["usage"]["output_tokens"] == 16 and events[0][1]["response"]["usage"] is None


async def test_a_cut_stream_ends_with_response_incomplete(fake):
    events = await stream(fake, {**BODY, "max_output_tokens": 16}, {"X-Fake-Reply-Tokens": "30"})
    assert events[-1][0] == "response.incomplete"
    assert events[-1][1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


async def test_controls_apply_forced_errors_no_usage_and_dropped_streams(fake):
    status, refused = await create(fake, headers={"X-Fake-Status": "429"})
    assert (status, refused["error"]["code"]) == (429, "rate_limit_exceeded")
    _, response = await create(fake, headers={"X-Fake-No-Usage": "1"})
    assert response["usage"] is None
    reply = await fake.post("/v1/responses", json={**BODY, "stream": True}, headers={"X-Fake-Drop-After-Chunks": "4"})
    received = b""
    with pytest.raises(aiohttp.ClientPayloadError):
        async for data in reply.content.iter_any():
            received += data
    kinds = [block.split(b"\n")[0] for block in received.split(b"\n\n") if block]
    assert kinds == [b"event: response.created", b"event: response.in_progress", b"event: response.output_item.added",
                     b"event: response.content_part.added"]


async def test_stored_responses_can_be_read_listed_deleted_and_continued(fake):
    _, first = await create(fake)
    reply = await fake.get(f"/v1/responses/{first['id']}")
    assert (reply.status, await reply.json()) == (200, first)
    items = await (await fake.get(f"/v1/responses/{first['id']}/input_items")).json()
    assert items["object"] == "list" and items["data"][0]["content"] == [{"type": "input_text", "text": "Name a colour."}]
    status, second = await create(fake, {"model": "gpt-4o-mini", "input": "And another?",
                                         "previous_response_id": first["id"]})
    carried = first["usage"]["input_tokens"] + first["usage"]["output_tokens"]
    assert second["usage"]["input_tokens"] == carried + bill_responses("gpt-4o-mini", {"input": "And another?"})
    deleted = await (await fake.delete(f"/v1/responses/{first['id']}")).json()
    assert deleted == {"id": first["id"], "object": "response", "deleted": True}
    gone = await fake.get(f"/v1/responses/{first['id']}")
    assert gone.status == 404 and (await gone.json())["error"]["message"] == f"Response with id '{first['id']}' not found."
    status, refused = await create(fake, {"model": "gpt-4o-mini", "input": "x", "previous_response_id": first["id"]})
    assert (status, refused["error"]["param"]) == (400, "previous_response_id")


async def test_background_responses_are_queued_and_can_be_cancelled(fake):
    _, queued = await create(fake, {**BODY, "background": True})
    assert queued["status"] == "queued"
    cancelled = await (await fake.post(f"/v1/responses/{queued['id']}/cancel")).json()
    assert cancelled["status"] == "cancelled"
    _, done = await create(fake)
    refused = await fake.post(f"/v1/responses/{done['id']}/cancel")
    assert refused.status == 400


async def test_input_tokens_counts_what_a_response_would_bill(fake):
    reply = await fake.post("/v1/responses/input_tokens", json=BODY)
    assert await reply.json() == {"object": "response.input_tokens", "input_tokens": bill_responses("gpt-4o-mini", BODY)}


async def test_the_official_sdk_reads_it(fake):
    client = AsyncOpenAI(base_url=str(fake.make_url("/v1")), api_key="x", max_retries=0)
    response = await client.responses.create(**BODY)
    assert response.output_text and response.usage.output_tokens == 16
    async with client.responses.stream(**BODY) as events:
        final = await events.get_final_response()
    assert final.output_text == response.output_text
    retrieved = await client.responses.retrieve(response.id)
    assert retrieved.id == response.id
    counted = await client.responses.input_tokens.count(model="gpt-4o-mini", input="Name a colour.")
    assert counted.input_tokens > 0
    with pytest.raises(RateLimitError):
        await client.responses.create(**BODY, extra_headers={"X-Fake-Status": "429"})
    with pytest.raises(NotFoundError):
        await client.responses.retrieve("resp_missing")
    with pytest.raises(BadRequestError):
        await client.responses.create(model="gpt-4o-mini")
    await client.close()
