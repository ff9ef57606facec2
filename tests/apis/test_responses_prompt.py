"""The worst case of a Responses API body is never below what the provider bills for it.

Hypothesis makes Responses bodies of the shapes agents send (instructions, text and message
inputs, images, files, function calls and their outputs, reasoning items, function tools, JSON
schema formats, web search with its calls); each is parsed and counted by the shape and held
against what the fake upstream bills for the same body (``proxy.fake_upstream.responses_billing``,
built on the chat fake's billing, written apart from farebox's counting), web searches included.
Tables check what each kind of item counts for.
"""

from __future__ import annotations

import asyncio
import base64
import struct
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pricing.catalog import Catalog
from proxy.apis.chat_media import file_tokens, image_tokens
from proxy.apis.responses import RESPONSES
from proxy.apis.responses_prompt import byte_size, count_responses, count_responses_async
from proxy.fake_upstream.responses import SEARCH_RESULT_TOKENS
from proxy.fake_upstream.responses_billing import bill_responses
from proxy.tokens import count_text

CATALOG = Catalog.load()
MODELS = ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "o4-mini", "gpt-5", "gpt-3.5-turbo"]

TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60)
WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz ABC,.:;{}[]\"'_-0123456789\n", max_size=80)
TEXTS = st.one_of(WORDS, TEXT)


def png(width: int, height: int) -> str:
    head = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return "data:image/png;base64," + base64.b64encode(head + b"\0" * 16).decode()


@st.composite
def parts(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["input_text", "input_text", "output_text", "refusal", "input_image", "input_file"]))
    if kind == "input_image":
        width, height = draw(st.integers(1, 6000)), draw(st.integers(1, 6000))
        url = draw(st.sampled_from([png(width, height), f"https://img.example/{width}x{height}.jpg"]))
        return {"type": "input_image", "image_url": url, "detail": draw(st.sampled_from(["low", "high", "auto"]))}
    if kind == "input_file":
        data = base64.b64encode(draw(st.binary(max_size=300))).decode()
        return {"type": "input_file", "filename": draw(WORDS), "file_data": f"data:application/pdf;base64,{data}"}
    if kind == "refusal":
        return {"type": "refusal", "refusal": draw(TEXTS)}
    return {"type": kind, "text": draw(TEXTS)}


ARGUMENTS = st.dictionaries(WORDS, st.one_of(TEXTS, st.integers(-10**9, 10**9), st.booleans()), max_size=4).map(
    lambda value: orjson.dumps(value).decode())


@st.composite
def items(draw: st.DrawFn) -> Any:
    kind = draw(st.sampled_from(["easy", "message", "function_call", "function_call_output", "reasoning", "other"]))
    if kind == "easy":
        return {"role": draw(st.sampled_from(["user", "assistant", "system", "developer"])), "content": draw(TEXTS)}
    if kind == "message":
        return {"type": "message", "role": draw(st.sampled_from(["user", "assistant"])), "id": "msg_1",
                "content": draw(st.lists(parts(), max_size=3))}
    if kind == "function_call":
        return {"type": "function_call", "call_id": draw(WORDS), "name": draw(WORDS), "arguments": draw(ARGUMENTS)}
    if kind == "function_call_output":
        output = draw(st.one_of(TEXTS, st.lists(parts(), max_size=2)))
        return {"type": "function_call_output", "call_id": draw(WORDS), "output": output}
    if kind == "reasoning":
        return {"type": "reasoning", "id": "rs_1", "encrypted_content": base64.b64encode(draw(st.binary(min_size=1,
                max_size=400))).decode(), "summary": [{"type": "summary_text", "text": draw(TEXTS)}]}
    return {"type": "web_search_call", "id": "ws_1", "status": "completed",
            "action": {"type": "search", "query": draw(TEXTS)}}


SCHEMA = st.fixed_dictionaries({"type": st.just("object"), "properties": st.dictionaries(
    WORDS, st.fixed_dictionaries({"type": st.sampled_from(["string", "integer"]), "description": TEXTS}),
    max_size=3)})
TOOLS = st.lists(st.one_of(
    st.fixed_dictionaries({"type": st.just("function"), "name": WORDS, "description": TEXTS, "parameters": SCHEMA}),
    st.just({"type": "web_search"})), max_size=3)


@st.composite
def bodies(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"model": draw(st.sampled_from(MODELS)),
                            "input": draw(st.one_of(TEXTS, st.lists(items(), max_size=5)))}
    if draw(st.booleans()):
        body["instructions"] = draw(TEXTS)
    if draw(st.booleans()):
        body["tools"] = draw(TOOLS)
        body["tool_choice"] = draw(st.sampled_from(["auto", "required", {"type": "web_search"}]))
    if draw(st.booleans()):
        body["text"] = {"format": {"type": "json_schema", "name": draw(WORDS), "schema": draw(SCHEMA),
                                   "strict": True}, "verbosity": "low"}
    return body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies(), searches=st.integers(0, 3))
def test_the_reserved_prompt_is_never_below_the_billed_input(body, searches):
    model = body["model"]
    price = CATALOG.resolve(model)
    if price.web_search_call is None and any(tool.get("type") == "web_search" for tool in body.get("tools", ())):
        body = {**body, "max_tool_calls": 0}  # searches farebox cannot price are refused unless ruled out
    request = RESPONSES.parse(orjson.dumps(body))
    reserved = asyncio.run(RESPONSES.count_prompt(request, price))
    step = bill_responses(model, body)
    searched = min(searches, request.tool_calls)
    billed = step * (searched + 1) + searched * SEARCH_RESULT_TOKENS
    assert reserved >= billed
    # ... and never above the context window per sampling step.
    assert reserved <= price.max_input_tokens * (1 + request.tool_calls)


def test_items_count_for_their_text_and_their_framing():
    model = "gpt-4o"

    def tokens(text: str) -> int:
        return count_text(model, text)

    base = count_responses(model, {"input": []}).prompt
    assert base == 3
    assert count_responses(model, {"input": "hello there"}).prompt == 3 + 3 + tokens("user") + tokens("hello there")
    message = {"type": "message", "id": "msg_1", "status": "completed", "role": "user",
               "content": [{"type": "input_text", "text": "hello"}, {"type": "output_text", "text": " world",
                                                                    "annotations": []}]}
    assert count_responses(model, {"input": [message]}).prompt == 3 + 3 + tokens("user") + tokens("hello") + tokens(" world")
    call = {"type": "function_call", "id": "fc_1", "status": "completed", "call_id": "call_1", "name": "f",
            "arguments": "{\"a\":1}"}
    as_json = orjson.dumps({"call_id": "call_1", "name": "f", "arguments": "{\"a\":1}"}).decode()
    assert count_responses(model, {"input": [call]}).prompt == 3 + 6 + tokens(as_json)
    output = {"type": "function_call_output", "call_id": "call_1", "output": "42 degrees"}
    assert count_responses(model, {"input": [output]}).prompt == 3 + 4 + tokens("call_1") + tokens("42 degrees")
    assert count_responses(model, {"instructions": "Be terse.", "input": []}).prompt == 3 + 3 + tokens("developer") + tokens("Be terse.")


def test_what_cannot_be_counted_is_bounded_by_its_size_or_its_provider_bound():
    model = "gpt-4o-mini"
    reasoning = {"type": "reasoning", "id": "rs_1", "encrypted_content": "gAAAA" * 100, "summary": []}
    replayed = {"type": "web_search_call", "id": "ws_1", "action": {"type": "search", "query": "q"}}
    unknown_part = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
    assert count_responses(model, {"input": [reasoning]}).prompt == 3 + byte_size(reasoning)
    assert count_responses(model, {"input": [replayed]}).prompt == 3 + byte_size(replayed)
    user = {"role": "user", "content": [unknown_part]}
    assert count_responses(model, {"input": [user]}).prompt == 3 + 3 + 1 + byte_size(unknown_part)
    image = {"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y.png", "detail": "high"}]}
    assert count_responses(model, {"input": [image]}).prompt == 3 + 3 + 1 + image_tokens(model, "high", None)
    file = {"role": "user", "content": [{"type": "input_file", "file_id": "file_1"}]}
    assert count_responses(model, {"input": [file]}, 128_000).prompt == 3 + 3 + 1 + file_tokens(model, 128_000)
    assert count_responses(model, {"input": [], "new_field": "ünï"}).prompt == 3 + len("ünï".encode())
    assert count_responses(model, {"input": [], "temperature": 0.2, "store": False, "reasoning": {"effort": "high"}},
                           ).prompt == 3


@pytest.mark.parametrize(("body", "param"), [
    ({"previous_response_id": "resp_1"}, "previous_response_id"),
    ({"conversation": {"id": "conv_1"}}, "conversation"),
    ({"prompt": {"id": "pmpt_1", "variables": {"city": "Paris"}}}, "prompt"),
    ({"input": ["x", {"type": "item_reference", "id": "msg_1"}]}, "input"),
    ({"input": [{"type": "reasoning", "id": "rs_1", "summary": []}]}, "input"),
    ({"input": "hi", "tools": [{"type": "mcp", "server_url": "https://mcp.example"}]}, "tools[0]"),
])
def test_context_the_body_does_not_hold_is_named(body, param):
    counted = count_responses("gpt-4o", body)
    assert counted.unseen is not None and counted.unseen.param == param
    assert counted.prompt == 0


async def test_large_bodies_are_counted_off_the_event_loop_with_the_same_result():
    body = {"instructions": "Be terse. " * 3000, "input": [{"role": "user", "content": "word " * 5000}]}
    sync = count_responses("gpt-4o", body)
    assert await count_responses_async("gpt-4o", body, offload_threshold_chars=100) == sync
    assert await count_responses_async("gpt-4o", body) == sync
