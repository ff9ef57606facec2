"""The fake upstream: OpenAI's wire format, exact token counts, and its per-request controls."""

from __future__ import annotations

import base64
import gzip
import json
import time

import aiohttp
import pytest
from openai import AsyncOpenAI, RateLimitError

from proxy import fake_upstream
from proxy.fake_upstream import RECEIVED, create_fake_app
from proxy.apis.chat_prompt import count_chat_prompt, count_completion
from proxy.tokens import count_text

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour."}]
BODY = {"model": "gpt-4o-mini", "messages": MESSAGES}


@pytest.fixture
async def fake(aiohttp_client):
    return await aiohttp_client(create_fake_app())


async def post_chat(client, body=None, headers=None):
    response = await client.post(CHAT, json=BODY if body is None else body, headers=headers or {})
    return response.status, await response.json()


async def stream_events(client, body, headers=None) -> list:
    """The stream's data payloads: parsed JSON objects, and the final "[DONE]" as a string."""
    response = await client.post(CHAT, json={**body, "stream": True}, headers=headers or {})
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    text = await response.text()
    assert text.endswith("\n\n")
    events = []
    for block in text.split("\n\n")[:-1]:
        assert block.startswith("data: ")
        data = block[len("data: "):]
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


def counted_usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    }


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


# --- per-request controls --------------------------------------------------------------------

async def test_fake_status_answers_an_openai_error_without_usage(fake):
    status, body = await post_chat(fake, headers={"X-Fake-Status": "429"})
    assert status == 429
    assert body == {"error": {"message": "Rate limit reached for requests. Please try again later.",
                              "type": "requests", "param": None, "code": "rate_limit_exceeded"}}


async def test_fake_status_with_an_error_body_sends_that_body(fake):
    error = '{"error": {"message": "down", "type": "server_error", "param": null, "code": null}}'
    response = await fake.post(CHAT, json=BODY, headers={"X-Fake-Status": "503", "X-Fake-Error-Body": error})
    assert response.status == 503
    assert await response.text() == error


async def test_fake_status_applies_to_streams_too(fake):
    response = await fake.post(CHAT, json={**BODY, "stream": True}, headers={"X-Fake-Status": "500"})
    assert response.status == 500
    assert (await response.json())["error"]["type"] == "server_error"


async def test_no_usage_omits_usage_from_a_completion(fake):
    status, completion = await post_chat(fake, headers={"X-Fake-No-Usage": "1"})
    assert status == 200
    assert "usage" not in completion


async def test_no_usage_omits_usage_from_a_stream_even_when_asked(fake):
    body = {**BODY, "stream_options": {"include_usage": True}}
    events = await stream_events(fake, body, {"X-Fake-No-Usage": "true"})
    assert events[-1] == "[DONE]"
    assert all("usage" not in chunk and chunk["choices"] for chunk in events[:-1])


async def test_fake_usage_is_reported_exactly(fake):
    usage = {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500,
             "prompt_tokens_details": {"cached_tokens": 400}, "completion_tokens_details": {"reasoning_tokens": 100}}
    headers = {"X-Fake-Usage": json.dumps(usage)}
    _, completion = await post_chat(fake, headers=headers)
    assert completion["usage"] == usage
    events = await stream_events(fake, {**BODY, "stream_options": {"include_usage": True}}, headers)
    assert events[-2]["usage"] == usage


async def test_reply_tokens_header_sets_the_reply_length(fake):
    _, completion = await post_chat(fake, headers={"X-Fake-Reply-Tokens": "40"})
    assert count_completion("gpt-4o-mini", completion["choices"][0]["message"]["content"]) == 40
    assert completion["usage"]["completion_tokens"] == 40


async def test_replies_longer_than_the_word_sequence_still_count_exactly(fake):
    _, completion = await post_chat(fake, headers={"X-Fake-Reply-Tokens": "9000"})
    assert count_completion("gpt-4o-mini", completion["choices"][0]["message"]["content"]) == 9000


async def test_zero_reply_tokens_gives_an_empty_reply(fake):
    _, completion = await post_chat(fake, headers={"X-Fake-Reply-Tokens": "0"})
    assert completion["choices"][0]["message"]["content"] == ""
    assert completion["usage"]["completion_tokens"] == 0
    events = await stream_events(fake, BODY, {"X-Fake-Reply-Tokens": "0"})
    assert len(events) == 3  # role chunk, finish chunk, [DONE]


async def test_ignore_max_tokens_replies_longer_than_asked(fake):
    headers = {"X-Fake-Ignore-Max-Tokens": "1"}
    _, short_bound = await post_chat(fake, {**BODY, "max_tokens": 5}, headers)
    assert short_bound["usage"]["completion_tokens"] == 16
    _, long_bound = await post_chat(fake, {**BODY, "max_tokens": 50}, headers)
    assert long_bound["usage"]["completion_tokens"] == 51
    assert long_bound["choices"][0]["finish_reason"] == "stop"


async def test_latency_header_delays_the_response(fake):
    started = time.perf_counter()
    status, _ = await post_chat(fake, headers={"X-Fake-Latency-Ms": "200"})
    assert status == 200
    assert time.perf_counter() - started >= 0.2


async def test_latency_option_delays_every_response(aiohttp_client):
    client = await aiohttp_client(create_fake_app(latency_ms=150))
    started = time.perf_counter()
    await post_chat(client)
    assert time.perf_counter() - started >= 0.15


async def test_chunk_delay_header_spaces_the_stream_chunks(aiohttp_client):
    client = await aiohttp_client(create_fake_app(chunks=2))
    started = time.perf_counter()
    events = await stream_events(client, BODY, {"X-Fake-Chunk-Delay-Ms": "40"})
    assert len(events) == 5  # role, two pieces, finish, [DONE]: four gaps
    assert time.perf_counter() - started >= 4 * 0.04


async def test_chunk_delay_arrives_chunk_by_chunk(aiohttp_client):
    client = await aiohttp_client(create_fake_app(chunks=2, chunk_delay_ms=100))
    response = await client.post(CHAT, json={**BODY, "stream": True})
    first = await response.content.readuntil(b"\n\n")
    started = time.perf_counter()
    second = await response.content.readuntil(b"\n\n")
    assert time.perf_counter() - started >= 0.09
    assert b'"role":"assistant"' in first and b'"content":"' in second
    await response.read()


async def test_drop_after_chunks_cuts_the_stream_without_done(fake):
    body = {**BODY, "stream": True, "stream_options": {"include_usage": True}}
    response = await fake.post(CHAT, json=body, headers={"X-Fake-Drop-After-Chunks": "3"})
    assert response.status == 200
    received = b""
    with pytest.raises(aiohttp.ClientPayloadError):
        async for data in response.content.iter_any():
            received += data
    events = [block for block in received.split(b"\n\n") if block]
    assert len(events) == 3
    assert all(json.loads(event[len(b"data: "):])["choices"] for event in events)


async def test_gzip_header_compresses_the_body(fake):
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        async with session.post(fake.make_url(CHAT), json=BODY, headers={"X-Fake-Gzip": "1"}) as response:
            assert response.headers["Content-Encoding"] == "gzip"
            raw = await response.read()
    completion = json.loads(gzip.decompress(raw))
    assert completion["usage"]["completion_tokens"] == 16
    status, decoded = await post_chat(fake, headers={"X-Fake-Gzip": "1"})
    assert status == 200
    assert decoded["choices"] == completion["choices"]


async def test_content_encoding_header_labels_the_body_and_leaves_its_bytes(fake):
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        headers = {"X-Fake-Content-Encoding": "br"}
        async with session.post(fake.make_url(CHAT), json=BODY, headers=headers) as response:
            assert response.headers["Content-Encoding"] == "br"
            completion = json.loads(await response.read())
        async with session.post(fake.make_url(CHAT), json={**BODY, "stream": True}, headers=headers) as response:
            assert response.headers["Content-Encoding"] == "br"
            assert (await response.read()).endswith(b"data: [DONE]\n\n")
    assert completion["usage"]["completion_tokens"] == 16


@pytest.mark.parametrize(("name", "value"), [
    ("X-Fake-Status", "200"), ("X-Fake-Status", "abc"), ("X-Fake-Usage", "[1]"), ("X-Fake-Usage", "{"),
    ("X-Fake-Reply-Tokens", "-1"), ("X-Fake-Reply-Tokens", "1000001"), ("X-Fake-Latency-Ms", "soon"), ("X-Fake-Gzip", "maybe"),
])
async def test_unreadable_control_headers_get_a_400_naming_them(fake, name, value):
    status, body = await post_chat(fake, headers={name: value})
    assert status == 400
    assert body["error"]["param"] == name


# --- other endpoints -------------------------------------------------------------------------

async def test_models_is_an_openai_list(fake):
    response = await fake.get("/v1/models")
    assert response.status == 200
    listing = await response.json()
    assert listing["object"] == "list"
    assert {"id": "gpt-4o-mini", "object": "model", "created": 1721172741, "owned_by": "system"} in listing["data"]


async def test_legacy_completion_with_usage(fake):
    body = {"model": "gpt-3.5-turbo-instruct", "prompt": ["Once upon", "a time"], "max_tokens": 7}
    response = await fake.post("/v1/completions", json=body)
    completion = await response.json()
    assert completion["object"] == "text_completion"
    assert [c["index"] for c in completion["choices"]] == [0, 1]
    assert all(c["finish_reason"] == "length" for c in completion["choices"])
    prompt_tokens = count_text(body["model"], "Once upon") + count_text(body["model"], "a time")
    assert completion["usage"] == {"prompt_tokens": prompt_tokens, "completion_tokens": 14,
                                   "total_tokens": prompt_tokens + 14}


async def test_legacy_completion_stream_with_usage(fake):
    body = {"model": "gpt-3.5-turbo-instruct", "prompt": "Once upon", "stream": True,
            "stream_options": {"include_usage": True}}
    response = await fake.post("/v1/completions", json=body)
    blocks = (await response.text()).split("\n\n")[:-1]
    assert blocks[-1] == "data: [DONE]"
    chunks = [json.loads(block[len("data: "):]) for block in blocks[:-1]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 16
    assert all(chunk["usage"] is None for chunk in chunks[:-1])
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


async def test_embeddings_are_deterministic_with_usage(fake):
    body = {"model": "text-embedding-3-small", "input": ["hello world", "goodbye"], "dimensions": 8}
    first = await (await fake.post("/v1/embeddings", json=body)).json()
    again = await (await fake.post("/v1/embeddings", json=body)).json()
    assert first == again
    assert [len(item["embedding"]) for item in first["data"]] == [8, 8]
    assert first["data"][0]["embedding"] != first["data"][1]["embedding"]
    tokens = count_text(body["model"], "hello world") + count_text(body["model"], "goodbye")
    assert first["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    encoded = await (await fake.post("/v1/embeddings", json={**body, "encoding_format": "base64"})).json()
    assert len(base64.b64decode(encoded["data"][0]["embedding"])) == 8 * 4


# --- recording -------------------------------------------------------------------------------

async def test_requests_are_recorded_and_can_be_cleared(fake):
    await post_chat(fake, headers={"X-Trace": "one"})
    await fake.get("/v1/models")
    recorded = fake.app[RECEIVED]
    assert [(r["method"], r["path"], r["body"]) for r in recorded] == [
        ("POST", CHAT, BODY), ("GET", "/v1/models", None)]
    assert recorded[0]["headers"]["x-trace"] == "one"
    listed = await (await fake.get("/_fake/requests")).json()
    assert listed == recorded
    cleared = await fake.delete("/_fake/requests")
    assert cleared.status == 204
    assert fake.app[RECEIVED] == []
    assert await (await fake.get("/_fake/requests")).json() == []


async def test_recording_keeps_only_the_latest_requests(fake, monkeypatch):
    monkeypatch.setattr(fake_upstream.server, "RECORD_LIMIT", 3)
    for turn in range(5):
        await post_chat(fake, {**BODY, "user": str(turn)})
    assert [r["body"]["user"] for r in fake.app[RECEIVED]] == ["2", "3", "4"]


async def test_malformed_bodies_are_recorded_as_none(fake):
    await fake.post(CHAT, data=b"{oops", headers={"Content-Type": "application/json"})
    assert fake.app[RECEIVED][-1]["body"] is None


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
