"""Chat completions through farebox with the official OpenAI SDK, against the fake upstream."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest
from aiohttp import web
from openai import AsyncOpenAI, OpenAI

from pricing.cost import Usage, cost_nano
from proxy.apis.chat_prompt import count_chat_prompt, count_completion
from tests.harness import LoopThread
from proxy.ledger.reports import read_usage

HEADERS = {"X-Project-Id": "acme", "X-Agent-Id": "planner", "X-Session-Id": "run-42"}
MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say something."}]


def client_for(url: str, **kw) -> OpenAI:
    return OpenAI(base_url=url, api_key="sk-test-client", default_headers=HEADERS, max_retries=0, **kw)


def usage_of(stack, scope="project", scope_id="acme", period="day"):
    return stack.run(read_usage(stack.services.ledger, scope, scope_id, period, _now()))


def settled_usage(stack, requests=1, scope="project", scope_id="acme"):
    """The report once ``requests`` are recorded: a stream is recorded after its last byte is out."""
    assert _wait_for(lambda: usage_of(stack, scope, scope_id)["requests"] >= requests)
    return usage_of(stack, scope, scope_id)


def _now():
    from datetime import datetime, timezone
    return datetime.now(timezone.utc)


def test_non_stream_content_is_the_upstreams_and_cost_is_recorded(make_stack):
    stack = make_stack()
    direct = client_for(f"{stack.upstream_url}/v1").chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    raw = client_for(stack.base_url).chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    via = raw.parse()
    assert via.choices[0].message.content == direct.choices[0].message.content
    assert via.usage.prompt_tokens == direct.usage.prompt_tokens == count_chat_prompt("gpt-4o-mini", {"messages": MESSAGES})
    price = stack.services.catalog.resolve("gpt-4o-mini")
    expected = cost_nano(price, Usage(via.usage.prompt_tokens, via.usage.completion_tokens))
    report = usage_of(stack)
    assert report["requests"] == 1
    assert report["prompt_tokens"] == via.usage.prompt_tokens
    assert report["completion_tokens"] == via.usage.completion_tokens
    assert report["cost_usd"] == raw.headers["X-Farebox-Cost-USD"]
    from pricing.money import nano_to_usd
    assert report["cost_usd"] == nano_to_usd(expected)
    assert len(raw.headers["X-Request-Id"]) == 32
    assert usage_of(stack, "agent", "acme/planner")["requests"] == 1
    assert usage_of(stack, "session", "acme/run-42")["requests"] == 1


def test_exact_cost_for_a_known_usage_with_cached_tokens(make_stack):
    stack = make_stack()
    usage = {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500,
             "prompt_tokens_details": {"cached_tokens": 200}}
    raw = client_for(stack.base_url).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers={"X-Fake-Usage": json.dumps(usage)})
    # gpt-4o-mini: $0.15/M input, $0.075/M cached input, $0.60/M output
    # 800 × 150 + 200 × 75 + 500 × 600 = 120_000 + 15_000 + 300_000 = 435_000 nano-USD
    assert raw.headers["X-Farebox-Cost-USD"] == "0.000435"
    report = usage_of(stack)
    assert report["cost_usd"] == "0.000435"
    assert report["by_model"]["gpt-4o-mini"]["cost_usd"] == "0.000435"


async def test_stream_is_identical_and_the_added_usage_chunk_is_removed(make_stack):
    stack = make_stack()
    direct = AsyncOpenAI(base_url=f"{stack.upstream_url}/v1", api_key="x", max_retries=0)
    proxied = AsyncOpenAI(base_url=stack.base_url, api_key="x", default_headers=HEADERS, max_retries=0)

    async def collect(client):
        chunks = [c async for c in await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)]
        return chunks

    d, p = await collect(direct), await collect(proxied)
    assert "".join(c.choices[0].delta.content or "" for c in p if c.choices) == \
        "".join(c.choices[0].delta.content or "" for c in d if c.choices)
    assert len(p) == len(d)
    assert all(c.choices for c in p), "the usage-only chunk farebox asked for must not reach the client"
    assert stack.received[-1]["body"]["stream_options"] == {"include_usage": True}
    report = settled_usage(stack)
    assert report["requests"] == 1
    assert report["completion_tokens"] > 0
    await direct.close()
    await proxied.close()


async def test_stream_keeps_the_usage_chunk_when_the_client_asked(make_stack):
    stack = make_stack()
    client = AsyncOpenAI(base_url=stack.base_url, api_key="x", default_headers=HEADERS, max_retries=0)
    chunks = [c async for c in await client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True})]
    assert chunks[-1].choices == []
    assert chunks[-1].usage.prompt_tokens == count_chat_prompt("gpt-4o", {"messages": MESSAGES})
    report = settled_usage(stack)
    assert report["prompt_tokens"] == chunks[-1].usage.prompt_tokens
    assert report["completion_tokens"] == chunks[-1].usage.completion_tokens
    await client.close()


@pytest.mark.parametrize("stream", [False, True])
def test_usage_is_estimated_when_the_upstream_reports_none(make_stack, key_prefix, stream):
    stack = make_stack()
    client = client_for(stack.base_url)
    extra = {"X-Fake-No-Usage": "1"}
    if stream:
        text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_headers=extra) if c.choices)
    else:
        response = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, extra_headers=extra)
        assert response.usage is None
        text = response.choices[0].message.content
    report = settled_usage(stack)
    assert report["prompt_tokens"] == count_chat_prompt("gpt-4o-mini", {"messages": MESSAGES})
    assert report["completion_tokens"] == count_completion("gpt-4o-mini", text)
    events = stack.run(stack.services.ledger.redis.xrange(f"{key_prefix}:{{acme}}:events"))
    assert len(events) == 1
    assert events[0][1][b"estimated"] in (b"1", b"true", b"True")


def test_stream_reaches_the_client_before_the_upstream_finishes(make_stack, redis_url, key_prefix, tmp_path):
    """A gated upstream: it sends the second chunk only after the client has seen the first."""
    gate = asyncio.Event()
    threads = LoopThread()

    async def gated(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        first = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
                 "choices": [{"index": 0, "delta": {"role": "assistant", "content": "first"}, "finish_reason": None}]}
        await response.write(b"data: " + json.dumps(first).encode() + b"\n\n")
        await asyncio.wait_for(gate.wait(), 20)
        last = {**first, "choices": [{"index": 0, "delta": {"content": " last"}, "finish_reason": "stop"}]}
        usage = {**first, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}
        await response.write(b"data: " + json.dumps(last).encode() + b"\n\ndata: " + json.dumps(usage).encode()
                             + b"\n\ndata: [DONE]\n\n")
        await response.write_eof()
        return response

    try:
        upstream = web.Application()
        upstream.router.add_post("/v1/chat/completions", gated)
        upstream_url = threads.serve(upstream)
        from proxy.http.app import create_app
        from proxy.settings import Settings
        app = create_app(Settings(upstream=f"{upstream_url}/v1", redis_url=redis_url, redis_prefix=key_prefix,
                                  data_dir=str(tmp_path)))
        url = threads.serve(app, front=True)
        stream = client_for(f"{url}/v1", timeout=30).chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True)
        first = next(iter(stream))
        assert first.choices[0].delta.content == "first"
        threads.loop.call_soon_threadsafe(gate.set)
        rest = list(stream)
        assert [c.choices[0].delta.content for c in rest] == [" last"]
    finally:
        threads.close()


def test_upstream_error_is_passed_through_and_nothing_is_charged(make_stack, redis_client, key_prefix):
    stack = make_stack()
    body = {"error": {"message": "Rate limit reached", "type": "requests", "param": None, "code": "rate_limit_exceeded"}}
    with pytest.raises(openai.RateLimitError) as info:
        client_for(stack.base_url).chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES,
            extra_headers={"X-Fake-Status": "429", "X-Fake-Error-Body": json.dumps(body)})
    assert info.value.status_code == 429
    assert info.value.response.json() == body
    assert usage_of(stack)["requests"] == 0


def test_unreachable_upstream_is_502(make_stack):
    stack = make_stack(upstream="http://127.0.0.1:9/v1")
    response = httpx.post(f"{stack.base_url}/chat/completions", headers=HEADERS,
                          json={"model": "gpt-4o-mini", "messages": MESSAGES})
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "upstream_unreachable"
    assert usage_of(stack)["requests"] == 0


def test_an_upstream_silent_after_the_request_is_504_and_its_prompt_is_charged_as_estimated(make_stack):
    stack = make_stack(upstream_timeout_s=0.3)
    response = httpx.post(f"{stack.base_url}/chat/completions", headers={**HEADERS, "X-Fake-Latency-Ms": "3000"},
                          json={"model": "gpt-4o-mini", "messages": MESSAGES})
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "upstream_timeout"
    report = usage_of(stack)   # the upstream had the request: a provider may bill it
    assert (report["requests"], report["estimated_requests"]) == (1, 1)
    assert report["prompt_tokens"] == count_chat_prompt("gpt-4o-mini", {"messages": MESSAGES})
    assert report["completion_tokens"] == 0


def test_upstream_key_replaces_the_clients_and_attribution_headers_stay_home(make_stack):
    stack = make_stack(upstream_api_key="sk-upstream-secret")
    client_for(stack.base_url).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    headers = {k.lower(): v for k, v in stack.received[-1]["headers"].items()}
    assert headers["authorization"] == "Bearer sk-upstream-secret"
    assert "x-project-id" not in headers and "x-agent-id" not in headers and "x-session-id" not in headers


def test_client_key_is_forwarded_without_an_upstream_key(make_stack):
    stack = make_stack()
    client_for(stack.base_url).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    headers = {k.lower(): v for k, v in stack.received[-1]["headers"].items()}
    assert headers["authorization"] == "Bearer sk-test-client"


def test_gzip_upstream_body_reaches_the_client_decoded_and_is_metered(make_stack):
    stack = make_stack()
    raw = client_for(stack.base_url).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers={"X-Fake-Gzip": "1"})
    assert raw.parse().choices[0].message.content
    assert "content-encoding" not in {k.lower() for k in raw.headers}
    assert usage_of(stack)["requests"] == 1


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_an_upstream_body_in_an_encoding_farebox_cannot_decode_is_a_502_charged_as_estimated(make_stack, stream):
    stack = make_stack()
    with pytest.raises(openai.APIStatusError) as refused:
        client_for(stack.base_url).chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=stream, extra_headers={"X-Fake-Content-Encoding": "br"})
    assert refused.value.status_code == 502
    error = refused.value.response.json()["error"]
    assert (error["type"], error["code"]) == ("upstream_unreachable", "unsupported_content_encoding")
    assert error["message"] == (f"The upstream {stack.upstream_url}/v1 answered in Content-Encoding 'br', which "
                                "farebox cannot decode (and did not ask for); nothing was passed on.")
    assert stack.received[-1]["headers"]["accept-encoding"] == "identity"
    report = usage_of(stack)   # answered 200, so served: charged for its prompt, estimated
    assert (report["requests"], report["estimated_requests"]) == (1, 1)
    assert report["prompt_tokens"] == count_chat_prompt("gpt-4o-mini", {"messages": MESSAGES})


def test_models_pass_through(make_stack):
    stack = make_stack()
    models = client_for(stack.base_url).models.list()
    assert len(models.data) > 0
    assert stack.received[-1]["path"] == "/v1/models"


async def test_async_client_many_concurrent_requests_are_all_recorded(make_stack):
    stack = make_stack()
    client = AsyncOpenAI(base_url=stack.base_url, api_key="x", default_headers=HEADERS, max_retries=0)
    results = await asyncio.gather(*[client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"q{i}"}]) for i in range(20)])
    await client.close()
    report = usage_of(stack)
    assert report["requests"] == 20
    assert report["completion_tokens"] == sum(r.usage.completion_tokens for r in results)


def _wait_for(predicate, timeout=15.0):
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_client_disconnect_mid_stream_charges_what_was_generated(make_stack, key_prefix):
    stack = make_stack()
    headers = {**HEADERS, "X-Fake-Chunk-Delay-Ms": "150", "X-Fake-Reply-Tokens": "64"}
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
    with httpx.Client(timeout=30) as http:
        with http.stream("POST", f"{stack.base_url}/chat/completions", headers=headers, json=body) as response:
            lines = response.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            assert json.loads(first[6:])["object"] == "chat.completion.chunk"
    assert _wait_for(lambda: usage_of(stack)["requests"] == 1)
    report = usage_of(stack)
    assert report["prompt_tokens"] == count_chat_prompt("gpt-4o-mini", {"messages": MESSAGES})
    assert 0 <= report["completion_tokens"] < 64
    events = stack.run(stack.services.ledger.redis.xrange(f"{key_prefix}:{{acme}}:events"))
    assert events[0][1][b"status"] == b"499"


def test_upstream_cut_mid_stream_charges_what_arrived_and_cuts_the_client_too(make_stack):
    stack = make_stack(upstream_options={"chunks": 8})
    client = client_for(stack.base_url)
    received = []
    with pytest.raises(openai.APIError):
        for chunk in client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True,
                                                   extra_headers={"X-Fake-Drop-After-Chunks": "3"}):
            received.append(chunk)
    assert len(received) == 3
    report = settled_usage(stack)
    assert report["requests"] == 1
    text = "".join(c.choices[0].delta.content or "" for c in received if c.choices)
    assert report["completion_tokens"] == count_completion("gpt-4o-mini", text)


def test_aggregate_ttls_follow_the_settings(make_stack, key_prefix):
    stack = make_stack(ttl_hour_s=3600, ttl_day_s=0)
    client_for(stack.base_url).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    stack.run(stack.services.settled())  # the settle may still be queued (up to 5 ms) when the answer is out
    redis = stack.services.ledger.redis
    hour_keys = stack.run(_scan(redis, f"{key_prefix}:{{acme}}:u:project:h*"))
    day_keys = stack.run(_scan(redis, f"{key_prefix}:{{acme}}:u:project:d*"))
    assert len(hour_keys) == 1 and len(day_keys) == 1
    assert 3500 < stack.run(redis.ttl(hour_keys[0])) <= 3600
    assert stack.run(redis.ttl(day_keys[0])) == -1


async def _scan(redis, pattern):
    return [k async for k in redis.scan_iter(match=pattern)]
