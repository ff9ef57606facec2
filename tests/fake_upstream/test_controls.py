"""The fake upstream's per-request controls (X-Fake-* headers)."""

from __future__ import annotations

import gzip
import json
import time

import aiohttp
import pytest

from proxy.apis.chat_prompt import count_completion
from proxy.fake_upstream import create_fake_app
from tests.fake_upstream.conftest import BODY, CHAT, post_chat, stream_events


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
