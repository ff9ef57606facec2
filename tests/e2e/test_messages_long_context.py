"""Anthropic's long-context beta: a window beyond the catalog's, billed at rates the catalog does
not carry, so a request that may exceed the catalog's window is refused before forwarding."""

from __future__ import annotations

import asyncio
import json

import anthropic
import pytest
from multidict import CIMultiDict

from pricing.catalog import Catalog
from proxy.apis.messages import MESSAGES
from proxy.errors import BadRequest
from tests.e2e.test_messages import MODEL, SEARCH, USER, client_for

BETA = "interleaved-thinking-2025-05-14, context-1m-2025-08-07"
LONG_TEXT = "word " * 300_000  # 1.5 MB: more than the catalog's 200,000-token window by its byte bound


def bound(body: dict, headers=None) -> int:
    request = MESSAGES.parse(json.dumps({"model": MODEL, "max_tokens": 100, **body}).encode(), headers)
    return asyncio.run(MESSAGES.count_prompt(request, Catalog.load().resolve(MODEL)))


@pytest.mark.parametrize("headers,expected", [
    (None, False), ({}, False), ({"anthropic-beta": "interleaved-thinking-2025-05-14"}, False),
    ({"anthropic-beta": BETA}, True), (CIMultiDict([("Anthropic-Beta", "x"), ("anthropic-beta", "context-1m-2025-08-07")]), True),
])
def test_the_beta_is_read_from_any_anthropic_beta_value(headers, expected):
    request = MESSAGES.parse(json.dumps({"model": MODEL, "max_tokens": 10, "messages": USER}).encode(), headers)
    assert request.long_context is expected


def test_a_short_request_with_the_beta_has_the_same_bound():
    assert bound({"messages": USER}, {"anthropic-beta": BETA}) == bound({"messages": USER})


def test_without_the_beta_a_long_prompt_is_capped_at_the_window_with_it_refused():
    long = {"messages": [{"role": "user", "content": LONG_TEXT}]}
    assert bound(long) == 200_000
    with pytest.raises(BadRequest) as refused:
        bound(long, {"anthropic-beta": BETA})
    assert (refused.value.param, refused.value.code) == ("anthropic-beta", "unpriced_long_context")


def test_with_the_beta_a_web_search_may_exceed_the_window_and_is_refused():
    with pytest.raises(BadRequest, match="long-context prices"):
        bound({"messages": USER, "tools": [SEARCH]}, {"anthropic-beta": BETA})


def test_the_refusal_reaches_the_sdk_in_anthropics_shape_and_nothing_is_forwarded(make_stack):
    stack = make_stack()
    client = client_for(stack, **{"anthropic-beta": BETA})
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(model=MODEL, max_tokens=50, messages=[{"role": "user", "content": LONG_TEXT}])
    error = refused.value.body["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error", "unpriced_long_context", "anthropic-beta")
    assert stack.received == [] and stack.events() == []
    reply = client.messages.create(model=MODEL, max_tokens=50, messages=USER)  # short: served
    assert reply.usage.output_tokens > 0
    assert stack.received[0]["headers"]["anthropic-beta"] == BETA


def test_with_long_context_prices_the_request_is_reserved_at_them():
    from dataclasses import replace  # noqa: PLC0415

    from pricing.cost import worst_case_nano  # noqa: PLC0415
    from pricing.tiers import LongContext  # noqa: PLC0415

    base = Catalog.load().resolve(MODEL)
    tier = LongContext(above_input_tokens=200_000, input=base.input * 2, output=base.output * 3 // 2)
    priced = replace(base, long_context=tier)
    body = json.dumps({"model": MODEL, "max_tokens": 100, "messages": [{"role": "user", "content": LONG_TEXT}]})
    request = MESSAGES.parse(body.encode(), {"anthropic-beta": BETA})
    prompt = asyncio.run(MESSAGES.count_prompt(request, priced))
    assert 200_000 < prompt <= 1_000_000
    assert worst_case_nano(priced, prompt, 100) > worst_case_nano(base, prompt, 100)
