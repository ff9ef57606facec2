"""The fake upstream's chat completions: OpenAI's wire format and exact token counts, stream or not,
through the official SDK too."""

from __future__ import annotations

import time

import pytest
from openai import AsyncOpenAI, RateLimitError

from proxy import fake_upstream
from proxy.apis.chat_prompt import count_chat_prompt, count_completion
from proxy.fake_upstream import RECEIVED, create_fake_app
from proxy.tokens import count_text
from tests.fake_upstream.conftest import BODY, CHAT, MESSAGES, counted_usage, post_chat, stream_events


# --- chat completions, not streamed ----------------------------------------------------------

async def test_chat_completion_has_openai_shape_and_counted_usage(fake):
    status, completion = await post_chat(fake)
    assert status == 200
    content = completion["choices"][0]["message"]["content"]
    assert completion == {
        "id": completion["id"],
        "object": "chat.completion",
        "created": completion["created"],
        "model": "gpt-4o-mini",
        "choices": [{"index": 0,
                     "message": {"role": "assistant", "content": content, "refusal": None, "annotations": []},
                     "logprobs": None, "finish_reason": "stop"}],
        "service_tier": "default",
        "system_fingerprint": fake_upstream.SYSTEM_FINGERPRINT,
        "usage": counted_usage(count_chat_prompt("gpt-4o-mini", BODY), 16),
    }
    assert completion["id"].startswith("chatcmpl-")
    assert abs(completion["created"] - time.time()) < 60
    assert count_completion("gpt-4o-mini", content) == 16


async def test_completion_ids_differ_between_requests(fake):
    _, first = await post_chat(fake)
    _, second = await post_chat(fake)
    assert first["id"] != second["id"]


async def test_same_request_gets_the_same_reply(fake, aiohttp_client):
    _, first = await post_chat(fake)
    _, again = await post_chat(fake)
    other_server = await aiohttp_client(create_fake_app())
    _, elsewhere = await post_chat(other_server)
    reply = first["choices"][0]["message"]["content"]
    assert again["choices"][0]["message"]["content"] == reply
    assert elsewhere["choices"][0]["message"]["content"] == reply


async def test_reply_depends_on_the_last_user_message(fake):
    _, first = await post_chat(fake)
    other = {**BODY, "messages": [*MESSAGES[:1], {"role": "user", "content": "Name a fruit."}]}
    _, second = await post_chat(fake, other)
    assert first["choices"][0]["message"]["content"] != second["choices"][0]["message"]["content"]


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-3.5-turbo", "some-local-llama"])
async def test_reply_tokens_option_is_the_exact_completion_token_count(aiohttp_client, model):
    client = await aiohttp_client(create_fake_app(reply_tokens=300))
    _, completion = await post_chat(client, {**BODY, "model": model})
    content = completion["choices"][0]["message"]["content"]
    assert count_completion(model, content) == 300
    assert completion["usage"]["completion_tokens"] == 300
    assert completion["usage"]["prompt_tokens"] == count_chat_prompt(model, {**BODY, "model": model})


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
async def test_max_tokens_cuts_the_reply_to_exactly_that_many_tokens(fake, field):
    _, completion = await post_chat(fake, {**BODY, field: 5})
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "length"
    assert count_completion("gpt-4o-mini", choice["message"]["content"]) == 5
    assert completion["usage"]["completion_tokens"] == 5
    _, whole = await post_chat(fake)
    assert whole["choices"][0]["message"]["content"].startswith(choice["message"]["content"])


async def test_the_smaller_of_two_output_bounds_applies(fake):
    _, completion = await post_chat(fake, {**BODY, "max_tokens": 9, "max_completion_tokens": 4})
    assert completion["usage"]["completion_tokens"] == 4


async def test_max_tokens_above_the_reply_length_changes_nothing(fake):
    _, completion = await post_chat(fake, {**BODY, "max_tokens": 100})
    assert completion["choices"][0]["finish_reason"] == "stop"
    assert completion["usage"]["completion_tokens"] == 16


async def test_n_gives_that_many_different_choices_and_counts_them_all(fake):
    _, completion = await post_chat(fake, {**BODY, "n": 2})
    choices = completion["choices"]
    assert [choice["index"] for choice in choices] == [0, 1]
    assert choices[0]["message"]["content"] != choices[1]["message"]["content"]
    assert [count_completion("gpt-4o-mini", c["message"]["content"]) for c in choices] == [16, 16]
    assert completion["usage"]["completion_tokens"] == 32


@pytest.mark.parametrize(("data", "param"), [
    (b"{not json", None),
    (b"[1, 2]", None),
    (b'{"messages": []}', "model"),
    (b'{"model": 5, "messages": []}', "model"),
    (b'{"model": "gpt-4o", "messages": "hi"}', "messages"),
    (b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "n": 0}', "n"),
    (b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "max_tokens": "9"}', "max_tokens"),
    (b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "stream"),
])
async def test_malformed_requests_get_an_openai_shaped_400(fake, data, param):
    response = await fake.post(CHAT, data=data, headers={"Content-Type": "application/json"})
    assert response.status == 400
    error = (await response.json())["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


# --- chat completions, streamed --------------------------------------------------------------

async def test_stream_without_include_usage_has_no_usage_anywhere(fake):
    events = await stream_events(fake, BODY)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all("usage" not in chunk for chunk in chunks)
    assert len({(c["id"], c["created"]) for c in chunks}) == 1
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": None},
                                     "logprobs": None, "finish_reason": None}]
    assert chunks[-1]["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]
    pieces = [chunk["choices"][0]["delta"]["content"] for chunk in chunks[1:-1]]
    assert len(pieces) == 8  # the default number of pieces
    _, whole = await post_chat(fake)
    assert "".join(pieces) == whole["choices"][0]["message"]["content"]


async def test_stream_with_include_usage_ends_with_a_usage_chunk_and_null_usage_before(fake):
    body = {**BODY, "stream_options": {"include_usage": True}}
    events = await stream_events(fake, body)
    assert events[-1] == "[DONE]"
    *chunks, usage_chunk = events[:-1]
    assert all(chunk["usage"] is None and len(chunk["choices"]) == 1 for chunk in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == counted_usage(count_chat_prompt("gpt-4o-mini", {**body, "stream": True}), 16)
    assert usage_chunk["id"] == chunks[0]["id"]


async def test_stream_include_usage_false_is_the_same_as_not_asking(fake):
    events = await stream_events(fake, {**BODY, "stream_options": {"include_usage": False}})
    assert all("usage" not in chunk for chunk in events[:-1])


async def test_stream_cut_by_max_tokens_ends_with_length(fake):
    events = await stream_events(fake, {**BODY, "max_tokens": 3})
    pieces = [c["choices"][0]["delta"].get("content", "") for c in events[1:-2]]
    assert count_completion("gpt-4o-mini", "".join(pieces)) == 3
    assert len(pieces) == 3  # fewer tokens than pieces: one piece per token
    assert events[-2]["choices"][0]["finish_reason"] == "length"


async def test_stream_with_n_sends_every_choice_in_full(aiohttp_client):
    client = await aiohttp_client(create_fake_app(chunks=3))
    body = {**BODY, "n": 2, "stream_options": {"include_usage": True}}
    events = await stream_events(client, body)
    chunks = events[:-2]
    assert all(len(chunk["choices"]) == 1 for chunk in chunks)
    texts = {0: "", 1: ""}
    for chunk in chunks:
        choice = chunk["choices"][0]
        texts[choice["index"]] += choice["delta"].get("content") or ""
    assert [c["choices"][0]["delta"].get("role") for c in chunks[:2]] == ["assistant", "assistant"]
    finishes = [(c["choices"][0]["index"], c["choices"][0]["finish_reason"]) for c in chunks[-2:]]
    assert finishes == [(0, "stop"), (1, "stop")]
    assert len(chunks) == 2 + 2 * 3 + 2
    _, whole = await post_chat(client, {**BODY, "n": 2})
    assert texts == {i: whole["choices"][i]["message"]["content"] for i in (0, 1)}
    assert events[-2]["usage"]["completion_tokens"] == 32


# --- the official SDK ------------------------------------------------------------------------

def sdk(client) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key="sk-test", max_retries=0)


async def test_openai_sdk_parses_a_completion(fake):
    async with sdk(fake) as openai:
        completion = await openai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, n=2,
                                                          extra_headers={"X-Fake-Reply-Tokens": "6"})
    assert completion.object == "chat.completion"
    assert [choice.finish_reason for choice in completion.choices] == ["stop", "stop"]
    assert completion.usage.completion_tokens == 12
    assert completion.usage.prompt_tokens_details.cached_tokens == 0
    assert completion.usage.completion_tokens_details.reasoning_tokens == 0
    assert fake.app[RECEIVED][-1]["headers"]["x-fake-reply-tokens"] == "6"


async def test_openai_sdk_parses_a_stream_with_usage(fake):
    async with sdk(fake) as openai:
        stream = await openai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True,
                                                      stream_options={"include_usage": True})
        chunks = [chunk async for chunk in stream]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert count_completion("gpt-4o-mini", text) == 16
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 16
    assert all(chunk.usage is None for chunk in chunks[:-1])


async def test_openai_sdk_sees_a_forced_rate_limit(fake):
    async with sdk(fake) as openai:
        with pytest.raises(RateLimitError) as caught:
            await openai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                                 extra_headers={"X-Fake-Status": "429"})
    assert caught.value.code == "rate_limit_exceeded"


async def test_openai_sdk_reads_embeddings_in_its_default_base64(fake):
    async with sdk(fake) as openai:
        result = await openai.embeddings.create(model="text-embedding-3-small", input="hello", dimensions=4)
    assert len(result.data[0].embedding) == 4
    assert result.usage.prompt_tokens == count_text("text-embedding-3-small", "hello")
