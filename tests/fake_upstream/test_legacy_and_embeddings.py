"""The fake upstream's legacy completions and embeddings: what OpenAI bills and returns for
best_of, suffix, echo, the default max_tokens and token arrays, and what it refuses."""

from __future__ import annotations

import json

import pytest

from proxy.tokens import count_text, get_encoding

MODEL = "gpt-3.5-turbo-instruct"
EMBED = "text-embedding-3-small"


async def complete(fake, body, headers=None):
    response = await fake.post("/v1/completions", json={"model": MODEL, **body}, headers=headers or {})
    return response.status, await response.json()


async def stream_chunks(fake, body, headers=None):
    response = await fake.post("/v1/completions", json={"model": MODEL, "stream": True, **body},
                               headers=headers or {})
    assert response.status == 200
    blocks = (await response.text()).split("\n\n")[:-1]
    assert blocks[-1] == "data: [DONE]"
    return [json.loads(block[len("data: "):]) for block in blocks[:-1]]


async def test_best_of_bills_every_candidate_and_returns_n(fake):
    status, completion = await complete(fake, {"prompt": "Once upon", "n": 2, "best_of": 3, "max_tokens": 9},
                                        {"X-Fake-Reply-Tokens": "5"})
    assert status == 200
    assert [c["index"] for c in completion["choices"]] == [0, 1]
    assert completion["usage"]["completion_tokens"] == 3 * 5
    assert completion["usage"]["prompt_tokens"] == count_text(MODEL, "Once upon")


async def test_suffix_is_billed_as_prompt_with_every_prompt(fake):
    _, completion = await complete(fake, {"prompt": ["def f(", "class A"], "suffix": "    return x\n"})
    suffix = count_text(MODEL, "    return x\n")
    assert completion["usage"]["prompt_tokens"] == (count_text(MODEL, "def f(") + suffix
                                                    + count_text(MODEL, "class A") + suffix)


async def test_max_tokens_defaults_to_16_and_may_be_0(fake):
    _, default = await complete(fake, {"prompt": "Once upon"}, {"X-Fake-Reply-Tokens": "40"})
    assert default["usage"]["completion_tokens"] == 16
    assert default["choices"][0]["finish_reason"] == "length"
    _, none = await complete(fake, {"prompt": "Once upon", "max_tokens": 0, "echo": True})
    assert none["usage"]["completion_tokens"] == 0
    assert none["choices"][0]["text"] == "Once upon"


async def test_echo_returns_the_prompt_before_the_text_and_bills_it_as_prompt_only(fake):
    tokens = get_encoding(MODEL).encode("Hello there")
    body = {"prompt": ["Once upon", tokens], "max_tokens": 4}
    _, plain = await complete(fake, body)
    _, echoed = await complete(fake, {**body, "echo": True})
    assert echoed["usage"] == plain["usage"]
    assert [c["text"] for c in echoed["choices"]] == ["Once upon" + plain["choices"][0]["text"],
                                                      "Hello there" + plain["choices"][1]["text"]]


async def test_a_streamed_echo_sends_the_prompt_first(fake):
    chunks = await stream_chunks(fake, {"prompt": "Once upon", "echo": True, "max_tokens": 3,
                                        "stream_options": {"include_usage": True}})
    assert chunks[0]["choices"][0]["text"] == "Once upon"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3
    assert all(chunk["usage"] is None for chunk in chunks[:-1])
    assert [set(chunk) for chunk in chunks[:-1]] == [{"id", "object", "created", "model", "system_fingerprint",
                                                      "choices", "usage"}] * (len(chunks) - 1)


async def test_a_stream_without_include_usage_has_no_usage_field(fake):
    chunks = await stream_chunks(fake, {"prompt": "Once upon", "n": 2})
    assert all("usage" not in chunk for chunk in chunks)
    assert {c["choices"][0]["index"] for c in chunks} == {0, 1}


@pytest.mark.parametrize("body, param", [
    ({"prompt": "x", "best_of": 2, "stream": True}, "best_of"),
    ({"prompt": "x", "n": 3, "best_of": 2}, "best_of"),
    ({"prompt": "x", "best_of": 21}, "best_of"),
    ({"prompt": "x", "suffix": 5}, "suffix"),
    ({"prompt": []}, "prompt"),
    ({"prompt": [1, "x"]}, "prompt"),
    ({"prompt": [[10**9]], "echo": True}, "prompt"),
])
async def test_completions_refuse_what_openai_refuses(fake, body, param):
    status, error = await complete(fake, body)
    assert status == 400
    assert error["error"]["param"] == param


async def test_embeddings_bill_token_arrays_by_length(fake):
    body = {"model": EMBED, "input": [[1, 2, 3], [4, 5]], "dimensions": 4}
    result = await (await fake.post("/v1/embeddings", json=body)).json()
    assert result["usage"] == {"prompt_tokens": 5, "total_tokens": 5}
    assert [item["index"] for item in result["data"]] == [0, 1]
    single = await (await fake.post("/v1/embeddings", json={**body, "input": [7, 8, 9, 10]})).json()
    assert single["usage"]["prompt_tokens"] == 4 and len(single["data"]) == 1


@pytest.mark.parametrize("value", ["", ["a", ""], ["x"] * 2049, [], {"text": "x"}])
async def test_embeddings_refuse_empty_strings_and_too_many_inputs(fake, value):
    response = await fake.post("/v1/embeddings", json={"model": EMBED, "input": value})
    assert response.status == 400
    assert (await response.json())["error"]["param"] == "input"
