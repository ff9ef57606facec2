"""Legacy completions through farebox with the official OpenAI SDK, against the fake upstream."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from pricing.cost import worst_case_nano
from pricing.money import nano_to_usd
from proxy.ledger.reports import read_usage
from proxy.tokens import count_text

HEADERS = {"X-Project-Id": "acme", "X-Agent-Id": "writer", "X-Session-Id": "draft-3"}
ADMIN = {"Authorization": "Bearer admin-secret"}
MODEL = "gpt-3.5-turbo-instruct"
IN_NANO, OUT_NANO = 1500, 2000  # gpt-3.5-turbo-instruct: $1.50 / $2.00 per million tokens
PROMPT = "Write a tagline for an ice cream shop."


def client_for(url: str) -> OpenAI:
    return OpenAI(base_url=url, api_key="sk-test-client", default_headers=HEADERS, max_retries=0)


def usage_of(stack, scope="project", scope_id="acme"):
    return stack.run(read_usage(stack.services.ledger, scope, scope_id, "day", datetime.now(timezone.utc)))


def settled_usage(stack, requests=1):
    """The report once ``requests`` are recorded: a stream is recorded after its last byte is out."""
    deadline = time.monotonic() + 15
    while usage_of(stack)["requests"] < requests and time.monotonic() < deadline:
        time.sleep(0.05)
    return usage_of(stack)


def events_of(stack):
    stack.run(stack.services.settled())  # an answer goes out before its record is confirmed
    return stack.events()


def completion_calls(stack):
    return [r for r in stack.received if r["path"] == "/v1/completions"]


def put_budget(stack, limit_nano):
    response = httpx.put(f"{stack.url}/admin/budgets/project/acme", headers=ADMIN,
                         json={"limit_usd": nano_to_usd(limit_nano), "period": "day", "mode": "hard"})
    assert response.status_code == 200, response.text


def test_a_completion_is_charged_its_usage_at_the_catalog_price(make_stack):
    stack = make_stack()
    raw = client_for(stack.base_url).completions.with_raw_response.create(
        model=MODEL, prompt=[PROMPT, [464, 2068, 7586]], n=2, best_of=3, max_tokens=7,
        extra_headers={"X-Fake-Reply-Tokens": "5"})
    completion = raw.parse()
    assert len(completion.choices) == 4
    prompt = count_text(MODEL, PROMPT) + 3
    completion_tokens = 2 * 3 * 5  # two prompts, three candidates each, five tokens apiece
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (prompt, completion_tokens)
    cost = nano_to_usd(prompt * IN_NANO + completion_tokens * OUT_NANO)
    assert raw.headers["X-Farebox-Cost-USD"] == cost
    report = usage_of(stack)
    assert (report["requests"], report["prompt_tokens"], report["completion_tokens"], report["cost_usd"]) == (
        1, prompt, completion_tokens, cost)
    [event] = events_of(stack)
    assert (event["endpoint"], event["upstream"], event["stream"], event["estimated"]) == (
        "completions", "openai", "0", "0")
    assert event["cost_nano"] == str(prompt * IN_NANO + completion_tokens * OUT_NANO)
    assert completion_calls(stack)[0]["body"]["max_tokens"] == 7


def test_without_max_tokens_farebox_sends_the_apis_default_of_16(make_stack):
    stack = make_stack()
    completion = client_for(stack.base_url).completions.create(
        model=MODEL, prompt=PROMPT, extra_headers={"X-Fake-Reply-Tokens": "100"})
    assert completion_calls(stack)[0]["body"]["max_tokens"] == 16
    assert completion.usage.completion_tokens == 16
    assert completion.choices[0].finish_reason == "length"


async def test_a_stream_is_charged_and_the_usage_chunk_it_did_not_ask_for_is_kept_from_it(make_stack):
    stack = make_stack()
    direct = AsyncOpenAI(base_url=f"{stack.upstream_url}/v1", api_key="x", max_retries=0)
    proxied = AsyncOpenAI(base_url=stack.base_url, api_key="x", default_headers=HEADERS, max_retries=0)

    async def collect(client):
        return [c async for c in await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=12,
                                                                 stream=True)]

    d, p = await collect(direct), await collect(proxied)
    await direct.close()
    await proxied.close()
    assert "".join(c.choices[0].text for c in p) == "".join(c.choices[0].text for c in d)
    assert len(p) == len(d)
    assert all(c.choices for c in p), "the usage-only chunk farebox asked for must not reach the client"
    sent = completion_calls(stack)[-1]["body"]
    assert sent["stream_options"] == {"include_usage": True}
    report = settled_usage(stack)
    prompt = count_text(MODEL, PROMPT)
    assert (report["prompt_tokens"], report["completion_tokens"], report["estimated_requests"]) == (prompt, 12, 0)
    assert report["cost_usd"] == nano_to_usd(prompt * IN_NANO + 12 * OUT_NANO)


def test_a_stream_keeps_the_usage_chunk_when_the_client_asked(make_stack):
    stack = make_stack()
    chunks = list(client_for(stack.base_url).completions.create(
        model=MODEL, prompt=PROMPT, stream=True, stream_options={"include_usage": True}, n=2))
    assert chunks[-1].choices == []
    usage = chunks[-1].usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (count_text(MODEL, PROMPT), 2 * 16)
    report = settled_usage(stack)
    assert report["cost_usd"] == nano_to_usd(usage.prompt_tokens * IN_NANO + usage.completion_tokens * OUT_NANO)
    assert events_of(stack)[0]["stream"] == "1"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_without_usage_the_text_is_counted_and_marked_estimated(make_stack, stream):
    stack = make_stack()
    client = client_for(stack.base_url)
    extra = {"X-Fake-No-Usage": "1"}
    if stream:
        text = "".join(c.choices[0].text for c in client.completions.create(
            model=MODEL, prompt=PROMPT, max_tokens=9, echo=True, stream=True, extra_headers=extra) if c.choices)
    else:
        text = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=9, echo=True,
                                          extra_headers=extra).choices[0].text
    assert text.startswith(PROMPT)
    report = settled_usage(stack)
    assert report["estimated_requests"] == 1
    assert report["prompt_tokens"] == count_text(MODEL, PROMPT)
    assert report["completion_tokens"] == count_text(MODEL, text[len(PROMPT):]) == 9


def test_clamping_lowers_max_tokens_to_what_the_budget_pays_for(make_stack):
    stack = make_stack(admin_token="admin-secret", min_output_tokens=256)
    price = stack.services.catalog.resolve(MODEL)
    prompt = count_text(MODEL, PROMPT)
    put_budget(stack, worst_case_nano(price, prompt, 2 * 300))  # two completions of 300 tokens, no more
    raw = client_for(stack.base_url).completions.with_raw_response.create(
        model=MODEL, prompt=PROMPT, n=2, max_tokens=1000, extra_headers={"X-Fake-Reply-Tokens": "2000"})
    assert completion_calls(stack)[-1]["body"]["max_tokens"] == 300
    assert raw.headers["X-Farebox-Max-Tokens-Clamped"] == "300"
    assert raw.parse().usage.completion_tokens == 600
    # Less than the minimum output is left now: refused, and not forwarded.
    with pytest.raises(openai.APIStatusError) as refused:
        client_for(stack.base_url).completions.create(model=MODEL, prompt=PROMPT, max_tokens=1000)
    assert refused.value.status_code == 402
    assert len(completion_calls(stack)) == 1


def test_a_budget_without_room_is_a_402_and_nothing_is_forwarded(make_stack):
    stack = make_stack(admin_token="admin-secret", clamp_max_tokens=False)
    price = stack.services.catalog.resolve(MODEL)
    prompt = count_text(MODEL, "a") + count_text(MODEL, "b")
    worst = worst_case_nano(price, prompt, 3 * 2 * 50)  # best_of 3 on two prompts, 50 tokens each
    put_budget(stack, worst - 1)
    with pytest.raises(openai.APIStatusError) as refused:
        client_for(stack.base_url).completions.create(model=MODEL, prompt=["a", "b"], n=2, best_of=3, max_tokens=50)
    assert refused.value.status_code == 402
    error = refused.value.response.json()["error"]
    assert (error["type"], error["scope"], error["request_max_cost_usd"]) == (
        "budget_exceeded", "project", nano_to_usd(worst))
    assert completion_calls(stack) == []
    assert usage_of(stack)["requests"] == 0


@pytest.mark.parametrize(("body", "param"), [
    ({"model": MODEL}, "prompt"),
    ({"model": MODEL, "prompt": []}, "prompt"),
    ({"model": MODEL, "prompt": [1, "x"]}, "prompt[1]"),
    ({"model": MODEL, "prompt": "x", "max_tokens": -1}, "max_tokens"),
    ({"model": MODEL, "prompt": "x", "best_of": 0}, "best_of"),
    ({"model": MODEL, "prompt": "x", "suffix": ["y"]}, "suffix"),
    ({"model": MODEL, "prompt": "x", "stream": "yes"}, "stream"),
    ({"model": "gpt-0-instruct", "prompt": "x"}, "model"),
])
def test_bad_input_is_a_400_with_nothing_forwarded_or_recorded(make_stack, body, param):
    stack = make_stack()
    response = httpx.post(f"{stack.base_url}/completions", json=body, headers=HEADERS)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert stack.received == []
    assert usage_of(stack)["requests"] == 0


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_an_upstream_error_is_passed_through_and_charged_nothing(make_stack, stream):
    stack = make_stack()
    body = {"error": {"message": "Rate limit reached", "type": "requests", "param": None,
                      "code": "rate_limit_exceeded"}}
    with pytest.raises(openai.RateLimitError) as refused:
        client_for(stack.base_url).completions.create(
            model=MODEL, prompt=PROMPT, stream=stream,
            extra_headers={"X-Fake-Status": "429", "X-Fake-Error-Body": json.dumps(body)})
    assert refused.value.response.json() == body
    assert len(completion_calls(stack)) == 1
    assert usage_of(stack)["requests"] == 0


def test_a_stream_cut_short_is_charged_what_arrived_as_estimated(make_stack):
    stack = make_stack(upstream_options={"chunks": 8})
    received = []
    with pytest.raises(openai.APIError):
        for chunk in client_for(stack.base_url).completions.create(
                model=MODEL, prompt=PROMPT, max_tokens=16, stream=True,
                extra_headers={"X-Fake-Drop-After-Chunks": "3"}):
            received.append(chunk)
    assert len(received) == 3
    report = settled_usage(stack)
    assert (report["requests"], report["estimated_requests"]) == (1, 1)
    assert report["prompt_tokens"] == count_text(MODEL, PROMPT)
    assert report["completion_tokens"] == count_text(MODEL, "".join(c.choices[0].text for c in received)) == 6
