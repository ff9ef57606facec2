"""Embeddings through farebox with the official OpenAI SDK, against the fake upstream."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone

import httpx
import openai
import pytest
from openai import OpenAI

from pricing.money import nano_to_usd
from proxy.ledger.reports import read_usage
from proxy.tokens import count_text

HEADERS = {"X-Project-Id": "acme", "X-Agent-Id": "indexer", "X-Session-Id": "crawl-7"}
ADMIN = {"Authorization": "Bearer admin-secret"}
MODEL = "text-embedding-3-small"
NANO_PER_TOKEN = 20  # text-embedding-3-small: $0.02 per million input tokens
TEXT = "The food was delicious and the waiter was friendly."


def client_for(url: str) -> OpenAI:
    return OpenAI(base_url=url, api_key="sk-test-client", default_headers=HEADERS, max_retries=0)


def usage_of(stack, scope="project", scope_id="acme"):
    return stack.run(read_usage(stack.services.ledger, scope, scope_id, "day", datetime.now(timezone.utc)))


def events_of(stack):
    stack.run(stack.services.settled())  # an answer goes out before its record is confirmed
    return stack.events()


def embedding_calls(stack):
    return [r for r in stack.received if r["path"] == "/v1/embeddings"]


@pytest.mark.parametrize(("value", "tokens"), [
    (TEXT, count_text(MODEL, TEXT)),
    ([TEXT, "A second line.", "third"], count_text(MODEL, TEXT) + count_text(MODEL, "A second line.")
     + count_text(MODEL, "third")),
    ([464, 2068, 7586, 21831], 4),
    ([[464, 2068, 7586], [21831, 18045], [1]], 6),
], ids=["string", "strings", "tokens", "token-arrays"])
def test_embeddings_are_charged_their_tokens_at_the_input_price(make_stack, value, tokens):
    stack = make_stack()
    raw = client_for(stack.base_url).embeddings.with_raw_response.create(model=MODEL, input=value)
    result = raw.parse()
    assert result.usage.prompt_tokens == tokens
    assert len(result.data) == (len(value) if isinstance(value[0], (str, list)) and not isinstance(value, str) else 1)
    cost = nano_to_usd(tokens * NANO_PER_TOKEN)
    assert raw.headers["X-Farebox-Cost-USD"] == cost
    report = usage_of(stack)
    assert (report["requests"], report["prompt_tokens"], report["completion_tokens"]) == (1, tokens, 0)
    assert report["cost_usd"] == cost
    assert usage_of(stack, "agent", "acme/indexer")["requests"] == 1
    [event] = events_of(stack)
    assert (event["endpoint"], event["upstream"], event["model"], event["stream"], event["estimated"]) == (
        "embeddings", "openai", MODEL, "0", "0")
    assert (event["agent"], event["session"], event["cost_nano"]) == ("indexer", "crawl-7", str(tokens * NANO_PER_TOKEN))
    assert embedding_calls(stack)[0]["body"]["input"] == value


def test_base64_embeddings_pass_through_byte_for_byte(make_stack):
    stack = make_stack()
    body = {"model": MODEL, "input": [TEXT, "other"], "encoding_format": "base64", "dimensions": 16}
    direct = httpx.post(f"{stack.upstream_url}/v1/embeddings", json=body)
    via = httpx.post(f"{stack.base_url}/embeddings", json=body, headers=HEADERS)
    assert via.status_code == 200
    assert via.content == direct.content
    assert len(base64.b64decode(via.json()["data"][1]["embedding"])) == 16 * 4
    # The SDK asks for base64 by default and decodes it: the same vectors as floats.
    floats = client_for(stack.base_url).embeddings.create(model=MODEL, input=[TEXT, "other"], dimensions=16)
    assert embedding_calls(stack)[-1]["body"]["encoding_format"] == "base64"
    plain = httpx.post(f"{stack.upstream_url}/v1/embeddings", json={**body, "encoding_format": "float"}).json()
    assert [d.embedding for d in floats.data] == [d["embedding"] for d in plain["data"]]
    assert usage_of(stack)["requests"] == 2


def test_without_usage_the_counted_input_is_charged_as_estimated(make_stack):
    stack = make_stack()
    result = client_for(stack.base_url).embeddings.create(model=MODEL, input=[TEXT, [1, 2, 3]],
                                                          extra_headers={"X-Fake-No-Usage": "1"})
    assert len(result.data) == 2
    tokens = count_text(MODEL, TEXT) + 3
    report = usage_of(stack)
    assert (report["prompt_tokens"], report["estimated_requests"]) == (tokens, 1)
    assert report["cost_usd"] == nano_to_usd(tokens * NANO_PER_TOKEN)
    assert events_of(stack)[0]["estimated"] == "1"


def test_a_budget_without_room_is_a_402_and_nothing_is_forwarded(make_stack):
    stack = make_stack(admin_token="admin-secret")
    tokens = count_text(MODEL, TEXT)
    limit = nano_to_usd(tokens * NANO_PER_TOKEN - 1)
    assert httpx.put(f"{stack.url}/admin/budgets/project/acme", headers=ADMIN,
                     json={"limit_usd": limit, "period": "day", "mode": "hard"}).status_code == 200
    with pytest.raises(openai.APIStatusError) as refused:
        client_for(stack.base_url).embeddings.create(model=MODEL, input=TEXT)
    assert refused.value.status_code == 402
    error = refused.value.response.json()["error"]
    assert (error["type"], error["scope"], error["request_max_cost_usd"]) == (
        "budget_exceeded", "project", nano_to_usd(tokens * NANO_PER_TOKEN))
    assert "would fit" not in error["message"]  # nothing to lower: no output bound
    assert embedding_calls(stack) == []
    assert usage_of(stack)["requests"] == 0
    # The same input at the limit fits exactly.
    assert httpx.put(f"{stack.url}/admin/budgets/project/acme", headers=ADMIN,
                     json={"limit_usd": nano_to_usd(tokens * NANO_PER_TOKEN), "period": "day",
                           "mode": "hard"}).status_code == 200
    assert client_for(stack.base_url).embeddings.create(model=MODEL, input=TEXT).usage.prompt_tokens == tokens


@pytest.mark.parametrize(("body", "param"), [
    ({"model": MODEL, "input": ""}, "input"),
    ({"model": MODEL, "input": []}, "input"),
    ({"model": MODEL, "input": ["a", 3]}, "input[1]"),
    ({"model": MODEL}, "input"),
    ({"input": "x"}, "model"),
    ({"model": "text-embedding-9", "input": "x"}, "model"),
])
def test_bad_input_is_a_400_with_nothing_forwarded_or_recorded(make_stack, body, param):
    stack = make_stack()
    response = httpx.post(f"{stack.base_url}/embeddings", json=body, headers=HEADERS)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert stack.received == []
    assert usage_of(stack)["requests"] == 0


def test_an_upstream_error_is_passed_through_and_charged_nothing(make_stack):
    stack = make_stack()
    body = {"error": {"message": "'$.input' is invalid.", "type": "invalid_request_error", "param": None,
                      "code": None}}
    with pytest.raises(openai.BadRequestError) as refused:
        client_for(stack.base_url).embeddings.create(
            model=MODEL, input=TEXT, extra_headers={"X-Fake-Status": "400", "X-Fake-Error-Body": json.dumps(body)})
    assert refused.value.response.json() == body
    assert len(embedding_calls(stack)) == 1
    assert usage_of(stack)["requests"] == 0
