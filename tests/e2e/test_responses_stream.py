"""Streamed responses through farebox with the official OpenAI SDK, against the fake upstream:
forwarded event by event, charged after the last byte, and what a cut stream costs."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from pricing.cost import Usage, cost_nano
from pricing.money import nano_to_usd
from proxy.apis.chat_prompt import count_completion
from proxy.apis.responses_prompt import count_responses
from tests.e2e.test_responses import HEADERS, INPUT, MODEL, client_for, events_of, usage_of, wait_for


def settled_usage(stack, requests=1):
    """The report once ``requests`` are recorded: a stream is recorded after its last byte is out."""
    assert wait_for(lambda: usage_of(stack)["requests"] >= requests)
    return usage_of(stack)


async def test_a_stream_is_forwarded_event_by_event_and_charged_its_usage(make_stack, key_prefix):
    stack = make_stack()
    direct = AsyncOpenAI(base_url=f"{stack.upstream_url}/v1", api_key="x", max_retries=0)
    proxied = AsyncOpenAI(base_url=stack.base_url, api_key="x", default_headers=HEADERS, max_retries=0)

    async def collect(client):
        return [event async for event in await client.responses.create(model=MODEL, input=INPUT, stream=True)]

    theirs, ours = await collect(direct), await collect(proxied)
    assert [e.type for e in ours] == [e.type for e in theirs]
    assert [e.sequence_number for e in ours] == list(range(len(ours)))
    final = ours[-1].response
    assert ours[-1].type == "response.completed" and final.output_text == theirs[-1].response.output_text
    assert stack.received[-1]["body"] == {"model": MODEL, "input": INPUT, "stream": True}  # forwarded unchanged
    report = settled_usage(stack)
    assert (report["prompt_tokens"], report["completion_tokens"]) == (final.usage.input_tokens,
                                                                     final.usage.output_tokens)
    price = stack.services.catalog.resolve(MODEL)
    assert report["cost_usd"] == nano_to_usd(cost_nano(price, Usage(final.usage.input_tokens,
                                                                     final.usage.output_tokens)))
    [event] = events_of(stack, key_prefix)
    assert event[b"endpoint"] == b"responses" and event[b"estimated"] in (b"0", b"false", b"False")
    await direct.close()
    await proxied.close()


async def test_the_sdks_stream_helper_gets_the_final_response_and_searches_are_priced(make_stack):
    stack = make_stack()
    client = AsyncOpenAI(base_url=stack.base_url, api_key="x", default_headers=HEADERS, max_retries=0)
    usage = {"input_tokens": 2000, "input_tokens_details": {"cached_tokens": 500}, "output_tokens": 100,
             "output_tokens_details": {"reasoning_tokens": 60}, "total_tokens": 2100}
    async with client.responses.stream(model=MODEL, input=INPUT, tools=[{"type": "web_search_preview"}],
                                       max_tool_calls=3, extra_headers={"X-Fake-Web-Searches": "1",
                                                                        "X-Fake-Usage": json.dumps(usage)}) as stream:
        deltas = [event.delta async for event in stream if event.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert "".join(deltas) == final.output_text
    report = settled_usage(stack)
    # gpt-4o-mini: 1500 × 150 + 500 × 75 + 100 × 600 = 322_500 nano-USD of tokens, + 1 × 25_000_000 for the search.
    assert report["cost_usd"] == "0.0253225"
    assert stack.received[-1]["body"]["max_tool_calls"] == 3
    await client.close()


def test_a_client_that_leaves_mid_stream_is_charged_for_what_was_generated(make_stack, key_prefix):
    stack = make_stack()
    headers = {**HEADERS, "X-Fake-Chunk-Delay-Ms": "150", "X-Fake-Reply-Tokens": "64"}
    body = {"model": MODEL, "input": INPUT, "stream": True}
    with httpx.Client(timeout=30) as http:
        with http.stream("POST", f"{stack.base_url}/responses", headers=headers, json=body) as response:
            lines = response.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            assert json.loads(first[6:])["type"] == "response.created"
    report = settled_usage(stack)
    assert report["prompt_tokens"] == count_responses(MODEL, body).prompt
    assert 0 <= report["completion_tokens"] < 64
    [event] = events_of(stack, key_prefix)
    assert event[b"status"] == b"499" and event[b"estimated"] in (b"1", b"true", b"True")


def test_an_upstream_cut_mid_stream_is_charged_what_arrived(make_stack, key_prefix):
    stack = make_stack(upstream_options={"chunks": 8})
    client = client_for(stack.base_url)
    received = []
    with pytest.raises(openai.APIError):
        for event in client.responses.create(model=MODEL, input=INPUT, stream=True,
                                             extra_headers={"X-Fake-Drop-After-Chunks": "7"}):
            received.append(event)
    assert [e.type for e in received][:4] == ["response.created", "response.in_progress",
                                              "response.output_item.added", "response.content_part.added"]
    text = "".join(e.delta for e in received if e.type == "response.output_text.delta")
    assert text
    report = settled_usage(stack)
    assert report["completion_tokens"] == count_completion(MODEL, text)
    assert report["prompt_tokens"] == count_responses(MODEL, {"model": MODEL, "input": INPUT, "stream": True}).prompt
    [event] = events_of(stack, key_prefix)
    assert event[b"estimated"] in (b"1", b"true", b"True")


def test_a_streamed_upstream_error_is_charged_nothing(make_stack, key_prefix):
    stack = make_stack()
    with pytest.raises(openai.RateLimitError):
        for _ in client_for(stack.base_url).responses.create(model=MODEL, input=INPUT, stream=True,
                                                              extra_headers={"X-Fake-Status": "429"}):
            pass
    assert len(stack.received) == 1
    assert usage_of(stack)["requests"] == 0
    assert events_of(stack, key_prefix) == []
