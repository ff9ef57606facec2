"""The 402 a hard budget answers says what would fit: the largest output bound the room left
pays for, in the field the client used, when at least one output token fits and farebox did not
lower the bound itself (clamping off, or what fits is below ``min_output_tokens``).

Amounts for gpt-4o-mini ($0.15 / $0.60 per million tokens: 150 / 600 nano-USD a token) and the
prompt below (12 tokens, 1,800 nano-USD)."""

from __future__ import annotations

import httpx
import openai
import pytest
from openai import OpenAI

from pricing.cost import worst_case_nano
from proxy.apis.chat_prompt import count_chat_prompt

ADMIN = {"Authorization": "Bearer admin-secret"}
HEADERS = {"X-Project-Id": "acme"}
MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Give me one line."}]


def put_budget(stack, limit_usd: str) -> None:
    response = httpx.put(f"{stack.url}/admin/budgets/project/acme", headers=ADMIN,
                         json={"limit_usd": limit_usd, "period": "total"})
    assert response.status_code == 200, response.text


def client_for(stack) -> OpenAI:
    return OpenAI(base_url=stack.base_url, api_key="sk-test-client", default_headers=HEADERS, max_retries=0)


def refusal(stack, **params) -> openai.APIStatusError:
    """The error the SDK raises for a refused request, caught as the README shows."""
    try:
        client_for(stack).chat.completions.create(model=MODEL, messages=MESSAGES, **params)
    except openai.APIStatusError as e:
        assert e.status_code == 402
        return e
    raise AssertionError("the request was not refused")


def test_the_prompt_and_prices_are_the_ones_the_amounts_assume(make_stack):
    stack = make_stack()
    price = stack.services.catalog.resolve(MODEL)
    prompt = count_chat_prompt(MODEL, {"messages": MESSAGES})
    assert prompt == 12
    assert worst_case_nano(price, prompt, 0) == 1_800 and worst_case_nano(price, prompt, 1) == 2_400


def test_402_says_which_max_tokens_would_fit_when_clamping_is_off_and_that_one_does(make_stack):
    stack = make_stack(admin_token="admin-secret", clamp_max_tokens=False)
    put_budget(stack, "0.0005")  # 500,000 nano-USD: the prompt, then (500,000 - 1,800) // 600 = 830 tokens
    e = refusal(stack, max_tokens=2000)
    assert e.body["message"] == (
        "Budget exceeded for project 'acme': total limit $0.0005, spent $0.00, this request may cost up to "
        "$0.0012018; a request with max_tokens <= 830 would fit; this budget never resets")
    assert e.body["code"] == "budget_exceeded" and e.body["request_max_cost_usd"] == "0.0012018"
    refusal(stack, max_tokens=831)
    assert client_for(stack).chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=830).usage
    assert len(stack.received) == 1


def test_402_names_the_field_the_client_used_and_the_bound_per_choice(make_stack):
    stack = make_stack(admin_token="admin-secret", clamp_max_tokens=False)
    put_budget(stack, "0.0005")
    e = refusal(stack, max_completion_tokens=1000, n=2)
    assert e.body["message"] == (
        "Budget exceeded for project 'acme': total limit $0.0005, spent $0.00, this request may cost up to "
        "$0.0012018; a request with max_completion_tokens <= 415 per choice (2 generated in all) would fit; "
        "this budget never resets")
    refusal(stack, max_completion_tokens=416, n=2)
    completion = client_for(stack).chat.completions.create(model=MODEL, messages=MESSAGES,
                                                           max_completion_tokens=415, n=2)
    assert len(completion.choices) == 2


def test_402_says_what_fits_below_the_clamping_minimum(make_stack):
    stack = make_stack(admin_token="admin-secret", min_output_tokens=256)
    put_budget(stack, "0.0000618")  # 61,800 nano-USD: the prompt and 100 output tokens
    e = refusal(stack, max_tokens=2000)
    assert e.body["message"] == (
        "Budget exceeded for project 'acme': total limit $0.0000618, spent $0.00, this request may cost up to "
        "$0.0012018; a request with max_tokens <= 100 would fit; this budget never resets")
    assert client_for(stack).chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=100).usage


def test_402_says_one_token_fits_and_no_hint_when_not_even_one_does(make_stack):
    stack = make_stack(admin_token="admin-secret", clamp_max_tokens=False)
    put_budget(stack, "0.0000024")  # 2,400 nano-USD: the prompt and one output token
    assert refusal(stack, max_tokens=2).body["message"] == (
        "Budget exceeded for project 'acme': total limit $0.0000024, spent $0.00, this request may cost up to "
        "$0.000003; a request with max_tokens <= 1 would fit; this budget never resets")
    put_budget(stack, "0.000002399")  # the prompt, and not one output token
    assert refusal(stack, max_tokens=2).body["message"] == (
        "Budget exceeded for project 'acme': total limit $0.000002399, spent $0.00, this request may cost up to "
        "$0.000003; this budget never resets")
