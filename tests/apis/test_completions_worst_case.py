"""The reserved worst case of a legacy completion or an embedding is never below what the provider
bills for it.

Each body is parsed and counted by its shape, its worst case priced as the reserve step does,
and the body farebox would forward is sent to the fake upstream (which bills the way OpenAI
does, written apart from farebox's counting: ``proxy.fake_upstream.inputs``) with replies as
long as the output bound lets them be; the usage it reports must fit in the worst case. Then
Hypothesis holds the counted prompt against the fake's bill for many more inputs.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pricing.catalog import Catalog
from pricing.cost import Usage, cost_nano, worst_case_nano
from proxy.apis.completions import COMPLETIONS
from proxy.apis.embeddings import EMBEDDINGS
from proxy.budgets import output_bound
from proxy.fake_upstream import create_fake_app
from proxy.fake_upstream.inputs import billed_tokens
from proxy.settings import Settings
from proxy.tokens import count_text

CATALOG = Catalog.load()
INSTRUCT = "gpt-3.5-turbo-instruct"
LONG_REPLIES = {"X-Fake-Reply-Tokens": "100000"}  # every reply as long as max_tokens lets it be


@pytest.fixture
async def fake(aiohttp_client):
    return await aiohttp_client(create_fake_app())


async def held_against_the_fake(fake, shape: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
    raw = orjson.dumps(body)
    request = shape.parse(raw)
    price = CATALOG.resolve(request.model)
    prompt = await shape.count_prompt(request, price)
    bound, _ = output_bound(request, price, Settings())
    output = (bound + request.output_extra) * request.n
    sent = shape.forward_body(raw, request, None)
    response = await fake.post(path, data=sent, headers={"Content-Type": "application/json", **LONG_REPLIES})
    assert response.status == 200, await response.text()
    usage = (await response.json())["usage"]
    billed = Usage(usage["prompt_tokens"], usage.get("completion_tokens", 0))
    assert prompt >= billed.prompt_tokens
    assert output >= billed.completion_tokens
    assert worst_case_nano(price, prompt, output) >= cost_nano(price, billed)
    return usage


TOKENS = [464, 2068, 7586, 21831, 18045]


@pytest.mark.parametrize("fields", [
    {"prompt": "Once upon a time"},
    {"prompt": "Once upon a time", "max_tokens": 40},
    {"prompt": ["Once upon", "a time", "there was"], "max_tokens": 5},
    {"prompt": TOKENS},
    {"prompt": [TOKENS, TOKENS[:2], "words too"], "max_tokens": 3},
    {"prompt": "Once upon", "n": 3},
    {"prompt": "Once upon", "n": 2, "best_of": 4, "max_tokens": 6},
    {"prompt": ["a", "b"], "n": 2, "best_of": 3, "max_tokens": 4},
    {"prompt": "def f(x):", "suffix": "    return y\n", "max_tokens": 8},
    {"prompt": ["def f(x):", TOKENS], "suffix": "\n\nprint(f(2))", "n": 2},
    {"prompt": "Say <|endoftext|> twice", "echo": True, "max_tokens": 2},
    {"prompt": "", "max_tokens": 4},
    {"prompt": "Once upon", "max_tokens": 0, "echo": True},
])
async def test_a_completions_worst_case_covers_the_bill(fake, fields):
    usage = await held_against_the_fake(fake, COMPLETIONS, "/v1/completions", {"model": INSTRUCT, **fields})
    assert usage["completion_tokens"] >= 0


async def test_the_default_bound_holds_because_farebox_sends_it(fake):
    usage = await held_against_the_fake(fake, COMPLETIONS, "/v1/completions", {"model": INSTRUCT, "prompt": "x", "n": 2})
    assert usage["completion_tokens"] == 2 * 16


@pytest.mark.parametrize("fields", [
    {"model": "text-embedding-3-small", "input": "hello world"},
    {"model": "text-embedding-3-small", "input": ["hello world", "goodbye <|endoftext|>", "x" * 500]},
    {"model": "text-embedding-3-large", "input": TOKENS, "dimensions": 8},
    {"model": "text-embedding-ada-002", "input": [TOKENS, TOKENS[:1], "mixed in"], "encoding_format": "base64"},
])
async def test_an_embeddings_worst_case_covers_the_bill(fake, fields):
    usage = await held_against_the_fake(fake, EMBEDDINGS, "/v1/embeddings", fields)
    assert usage["prompt_tokens"] > 0


TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80)
WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz ABC,.:;{}<|>_\n0123456789", max_size=80)
TEXTS = st.one_of(WORDS, TEXT, st.just("<|endoftext|>"))
TOKEN_ARRAYS = st.lists(st.integers(0, 50_000), min_size=1, max_size=20)
PROMPTS = st.one_of(TEXTS, TOKEN_ARRAYS, st.lists(st.one_of(TEXTS, TOKEN_ARRAYS), min_size=1, max_size=6))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prompt=PROMPTS, suffix=st.one_of(st.none(), TEXTS),
       model=st.sampled_from([INSTRUCT, "davinci-002", "babbage-002"]))
def test_the_counted_prompt_covers_the_billed_prompt(prompt, suffix, model):
    body: dict[str, Any] = {"model": model, "prompt": prompt}
    if suffix is not None:
        body["suffix"] = suffix
    request = COMPLETIONS.parse(orjson.dumps(body))
    counted = asyncio.run(COMPLETIONS.count_prompt(request, CATALOG.resolve(model)))
    suffix_tokens = count_text(model, suffix) if suffix else 0
    assert counted >= sum(billed_tokens(model, item) + suffix_tokens for item in request.prompts)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=PROMPTS.filter(lambda v: v != "" and (not isinstance(v, list) or "" not in v)))
def test_the_counted_input_is_the_billed_input(value):
    request = EMBEDDINGS.parse(orjson.dumps({"model": "text-embedding-3-small", "input": value}))
    counted = asyncio.run(EMBEDDINGS.count_prompt(request, CATALOG.resolve(request.model)))
    assert counted == sum(billed_tokens(request.model, item) for item in request.inputs)
