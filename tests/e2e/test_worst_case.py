"""The worst case covers every billed part of a chat body, end to end: a hard budget holds against
bodies whose cost is mostly outside their messages (schemas, images, predictions)."""

from __future__ import annotations

import asyncio
import base64
import struct

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from pricing.cost import Usage, cost_nano, worst_case_nano
from pricing.money import nano_to_usd, usd_to_nano
from proxy.apis.chat_prompt import count_chat
from tests.e2e.test_budgets import ADMIN, HEADERS, _check_settled, put_budget, spent

HI = [{"role": "user", "content": "Fill in the form."}]
SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {
    "name": "form", "schema": {"type": "object", "description": " ".join(["field"] * 20_000)}}}


def png(width: int, height: int) -> str:
    head = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", width, height) + b"\x08\x02\0\0\0"
    return "data:image/png;base64," + base64.b64encode(head).decode()


def chat_calls(stack) -> list:
    return [r for r in stack.received if r["path"] == "/v1/chat/completions"]


@pytest.mark.parametrize("limit_usd", ["0.01", "0.12"])
async def test_ten_concurrent_requests_with_a_large_schema_never_overspend_a_small_budget(make_stack, limit_usd):
    stack = make_stack(admin_token="admin-secret")
    limit = usd_to_nano(limit_usd)
    put_budget(stack, "project", "acme", limit_usd, period="total")
    client = AsyncOpenAI(base_url=stack.base_url, api_key="x", default_headers=HEADERS, max_retries=0, timeout=60)

    async def one():
        try:
            return await client.chat.completions.create(model="gpt-4o", messages=HI, max_tokens=16,
                                                        response_format=SCHEMA_FORMAT)
        except openai.APIStatusError as exc:
            return exc

    try:
        results = await asyncio.gather(*[one() for _ in range(10)])
    finally:
        await client.close()

    allowed = [r for r in results if not isinstance(r, openai.APIStatusError)]
    refused = [r for r in results if isinstance(r, openai.APIStatusError)]
    price = stack.services.catalog.resolve("gpt-4o")
    assert all(r.usage.prompt_tokens > 20_000 for r in allowed)  # the upstream bills the schema
    counted = count_chat("gpt-4o", {"messages": HI, "max_tokens": 16, "response_format": SCHEMA_FORMAT})
    assert counted.prompt > 20_000
    worst = worst_case_nano(price, counted.prompt, 16)
    # Each may cost about $0.05: the worst case counts the schema, so as many go through as
    # the budget pays worst cases for, none in $0.01, two in $0.12.
    assert len(allowed) == limit // worst == {"0.01": 0, "0.12": 2}[limit_usd]
    assert len(refused) == 10 - len(allowed)
    assert {r.status_code for r in refused} == {402}
    assert {r.body["type"] for r in refused} == {"budget_exceeded"}
    assert len(chat_calls(stack)) == len(allowed)
    charged = sum(cost_nano(price, Usage(r.usage.prompt_tokens, r.usage.completion_tokens)) for r in allowed)
    assert spent(stack, period="total") == charged <= limit
    _check_settled(stack, charged)


async def test_a_schema_request_within_its_budget_is_reserved_and_charged_what_the_upstream_bills(make_stack):
    stack = make_stack(admin_token="admin-secret")
    put_budget(stack, "project", "acme", "1", period="total")
    client = OpenAI(base_url=stack.base_url, api_key="x", default_headers=HEADERS, max_retries=0)

    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HI, max_tokens=16,
                                                           response_format=SCHEMA_FORMAT)

    reply = raw.parse()
    price = stack.services.catalog.resolve("gpt-4o")
    counted = count_chat("gpt-4o", {"messages": HI, "max_tokens": 16, "response_format": SCHEMA_FORMAT})
    worst = worst_case_nano(price, counted.prompt, 16)
    charged = cost_nano(price, Usage(reply.usage.prompt_tokens, reply.usage.completion_tokens))
    assert reply.usage.prompt_tokens > 20_000
    assert counted.prompt >= reply.usage.prompt_tokens
    assert worst >= charged
    # A whole answer's remaining room is after its actual cost (what the upstream billed).
    assert raw.headers["X-Farebox-Budget-Remaining-USD"] == nano_to_usd(usd_to_nano("1") - charged)
    assert raw.headers["X-Farebox-Cost-USD"] == nano_to_usd(charged)
    _check_settled(stack, charged)


def test_an_image_request_is_refused_when_its_image_does_not_fit(make_stack):
    stack = make_stack(admin_token="admin-secret")
    price = stack.services.catalog.resolve("gpt-4o")
    text_only = count_chat("gpt-4o", {"messages": [{"role": "user", "content": [{"type": "text", "text": "What is it?"}]}]})
    put_budget(stack, "project", "acme", nano_to_usd(worst_case_nano(price, text_only.prompt + 1000, 16)))
    content = [{"type": "text", "text": "What is it?"}, {"type": "image_url", "image_url": {"url": png(4000, 3000)}}]

    response = httpx.post(f"{stack.base_url}/chat/completions", headers=HEADERS,
                          json={"model": "gpt-4o", "messages": [{"role": "user", "content": content}], "max_tokens": 16})

    # Its size is read from its header: 4000×3000 → 2048×1536 → 1024×768, 2×2 tiles, 85 + 170 × 4
    # = 765 tokens, which fit; an image of unknown size counts 8 tiles (1445), which do not.
    assert response.status_code == 200, response.text
    billed = response.json()["usage"]["prompt_tokens"]
    assert billed == text_only.prompt + 765
    unknown = [{"type": "text", "text": "What is it?"}, {"type": "image_url", "image_url": {"url": "https://img.test/a.png"}}]
    refused = httpx.post(f"{stack.base_url}/chat/completions", headers=HEADERS,
                         json={"model": "gpt-4o", "messages": [{"role": "user", "content": unknown}], "max_tokens": 16})
    assert refused.status_code == 402
    assert refused.json()["error"]["request_max_cost_usd"] == nano_to_usd(
        worst_case_nano(price, text_only.prompt + 1445, 16))
    assert len(chat_calls(stack)) == 1


def test_a_prediction_is_reserved_as_output_and_clamping_leaves_room_for_it(make_stack):
    stack = make_stack(admin_token="admin-secret", min_output_tokens=10)
    model = "gpt-4o"
    price = stack.services.catalog.resolve(model)
    code = "def add(a, b):\n    return a + b\n" * 20
    body = {"model": model, "messages": HI, "prediction": {"type": "content", "content": code}}
    counted = count_chat(model, body)
    assert counted.predicted > 100
    # Room for the prompt, the prediction and 50 tokens of reply.
    limit = worst_case_nano(price, counted.prompt, counted.predicted + 50)
    put_budget(stack, "project", "acme", nano_to_usd(limit), period="total")

    raw = OpenAI(base_url=stack.base_url, api_key="x", default_headers=HEADERS, max_retries=0) \
        .chat.completions.with_raw_response.create(**body, extra_headers={"X-Fake-Reply-Tokens": "1000"})

    reply = raw.parse()
    assert raw.headers["X-Farebox-Max-Tokens-Clamped"] == "50"
    assert chat_calls(stack)[-1]["body"]["max_completion_tokens"] == 50
    assert reply.usage.completion_tokens == 50 + counted.predicted
    assert reply.usage.completion_tokens_details.rejected_prediction_tokens == counted.predicted
    assert spent(stack, period="total") == cost_nano(price, Usage(reply.usage.prompt_tokens, 50 + counted.predicted))
    assert spent(stack, period="total") <= limit
    status = httpx.get(f"{stack.url}/admin/budgets/project/acme", headers=ADMIN).json()
    assert usd_to_nano(status["spent_usd"]) <= usd_to_nano(status["limit_usd"])
