"""The worst case of a Messages prompt is an upper bound: never below what the fake upstream
(which bills the way Anthropic does, with a tokenizer) reports for the same body."""

from __future__ import annotations

import base64
import struct

import orjson
import pytest

from pricing.catalog import Catalog
from proxy.apis.messages import DEFAULT_MAX_USES, MESSAGES
from proxy.apis.messages_prompt import (
    IMAGE_MAX_TOKENS,
    TOKENS_PER_BLOCK,
    TOKENS_PER_MESSAGE,
    TOKENS_PER_REQUEST,
    count_bytes,
    gather_messages,
    image_tokens_anthropic,
    prompt_bound,
)
from proxy.fake_upstream.messages import SEARCH_RESULT_TOKENS, bill_messages

MODEL = "claude-sonnet-4-5"
PRICE = Catalog.load().resolve(MODEL)


def png(width: int, height: int) -> str:
    head = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR" + struct.pack(">II", width, height) + b"\x08\x02\x00\x00\x00"
    return base64.b64encode(head + b"\x00" * 64).decode()


def image(width: int, height: int) -> dict:
    return {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png(width, height)}}


TOOL = {"name": "get_weather", "description": "Weather for a city, in °C.",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
BODIES = {
    "plain": {"messages": [{"role": "user", "content": "Hi"}]},
    "system blocks": {"system": [{"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}}],
                      "messages": [{"role": "user", "content": [{"type": "text", "text": "Name a colour."}]}]},
    "non-latin": {"system": "Отвечай кратко. 简短回答。", "messages": [{"role": "user", "content": "日本の首都は？ 🗾"}]},
    "code": {"messages": [{"role": "user", "content": "def f(x):\n    return {k: v for k, v in x.items()}\n" * 50}]},
    "images": {"messages": [{"role": "user", "content": [image(200, 200), image(1000, 1000), image(4000, 3000),
                                                         image(30, 9000), {"type": "text", "text": "Compare."}]}]},
    "image by url": {"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]}]},
    "tools": {"tools": [TOOL, {"type": "bash_20250124", "name": "bash"},
                        {"type": "web_search_20250305", "name": "web_search", "max_uses": 2}],
              "tool_choice": {"type": "auto"},
              "messages": [
                  {"role": "user", "content": "Weather in Paris?"},
                  {"role": "assistant", "content": [
                      {"type": "thinking", "thinking": "I should call the tool.", "signature": "c2lnbmF0dXJl"},
                      {"type": "redacted_thinking", "data": "ZW5jcnlwdGVk"},
                      {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
                  {"role": "user", "content": [
                      {"type": "tool_result", "tool_use_id": "toolu_1",
                       "content": [{"type": "text", "text": "18 °C, cloudy"}, image(640, 480)]}]}]},
    "documents": {"messages": [{"role": "user", "content": [
        {"type": "document", "title": "Notes", "source": {"type": "text", "media_type": "text/plain",
                                                          "data": "Line one.\nLine two."}},
        {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "Part A"}]}},
        {"type": "document", "citations": {"enabled": True},
         "source": {"type": "text", "media_type": "text/plain", "data": "A. B. C."}},
        {"type": "search_result", "source": "https://example.com", "title": "Ex",
         "content": [{"type": "text", "text": "A result."}]},
        {"type": "text", "text": "Summarise."}]}]},
}


def full(fields: dict) -> dict:
    return {"model": MODEL, "max_tokens": 1000, **fields}


async def bound_of(fields: dict) -> int:
    request = MESSAGES.parse(orjson.dumps(full(fields)))
    return await MESSAGES.count_prompt(request, PRICE)


@pytest.mark.parametrize("name", sorted(BODIES))
async def test_the_bound_is_at_least_what_the_fake_bills(name):
    body = full(BODIES[name])
    request = MESSAGES.parse(orjson.dumps(body))
    bound = await MESSAGES.count_prompt(request, PRICE)
    searches = request.hosted_calls
    assert bound >= bill_messages(MODEL, request.body) + searches * SEARCH_RESULT_TOKENS


async def test_text_counts_as_its_utf8_bytes_plus_framing():
    fields = {"system": "Sé breve.", "messages": [{"role": "user", "content": "Hi"},
                                                  {"role": "assistant", "content": [{"type": "text", "text": "Yo"}]}]}
    expected = (TOKENS_PER_REQUEST + 2 * TOKENS_PER_MESSAGE + TOKENS_PER_BLOCK
                + len("Sé breve.".encode()) + len("userHiassistantYo"))
    assert await bound_of(fields) == expected


@pytest.mark.parametrize(("size", "tokens"), [
    ((200, 200), 67),             # padded to 224×224: 50176 / 750 → 67
    ((2576, 2576), IMAGE_MAX_TOKENS),
    ((5152, 2576), 4424),         # scaled to 2576×1288 (padded to 1288: 46×28), 2576*1288/750 → 4424
    (None, IMAGE_MAX_TOKENS),
])
def test_an_image_is_bounded_by_its_scaled_and_padded_area(size, tokens):
    assert image_tokens_anthropic(size) == tokens


async def test_an_unreadable_document_bounds_the_prompt_by_the_context_window():
    pdf = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}}
    assert await bound_of({"messages": [{"role": "user", "content": [pdf]}]}) == PRICE.max_input_tokens


async def test_the_prompt_is_capped_at_the_context_window():
    huge = "x" * (PRICE.max_input_tokens + 10)
    assert await bound_of({"messages": [{"role": "user", "content": huge}]}) == PRICE.max_input_tokens


async def test_each_search_or_fetch_adds_a_context_window_or_the_fetchs_own_limit():
    tools = [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2},
             {"type": "web_fetch_20250910", "name": "web_fetch", "max_uses": 3, "max_content_tokens": 5000},
             {"type": "web_fetch_20250910", "name": "web_fetch2"}]
    request = MESSAGES.parse(orjson.dumps(full({"messages": [{"role": "user", "content": "Hi"}], "tools": tools})))
    context = PRICE.max_input_tokens
    own = await prompt_bound(request.body, context, 0)
    assert own < 10_000
    assert await MESSAGES.count_prompt(request, PRICE) == own + 2 * context + 3 * 5000 + DEFAULT_MAX_USES * context


async def test_a_large_body_counted_in_a_thread_gives_the_same_bound():
    text = "naïve café " * 100_000
    body = full({"messages": [{"role": "user", "content": text}]})
    parts = gather_messages(body)
    assert parts.chars > 1_000_000
    expected = parts.fixed + count_bytes(parts.texts)
    assert await prompt_bound(body, None, 0) == expected
    assert await prompt_bound(body, 1000, 7) == 1007


async def test_unknown_top_level_fields_count_and_settings_do_not():
    base = {"messages": [{"role": "user", "content": "Hi"}]}
    settings = await bound_of({**base, "temperature": 0.5, "top_k": 3, "metadata": {"user_id": "u" * 100},
                               "stop_sequences": ["x" * 100]})
    assert settings == await bound_of(base)
    assert await bound_of({**base, "output_format": {"type": "json_schema", "schema": {"a": "b" * 100}}}) > settings + 100


async def test_a_cited_document_counts_its_text_twice_for_the_sentence_framing():
    data = "First sentence. Second one."
    doc = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": data}}
    plain = await bound_of({"messages": [{"role": "user", "content": [doc]}]})
    cited = await bound_of({"messages": [{"role": "user", "content": [{**doc, "citations": {"enabled": True}}]}]})
    assert cited - plain == len(data)


def _random_body(rng) -> dict:
    words = ["word", "naïve", "日本語", "🙂", "x" * 40, "def f():\n  return 1", " ", "\n\n", "{\"a\": [1, 2]}"]

    def text() -> str:
        return "".join(rng.choice(words) for _ in range(rng.randint(0, 30)))

    def block() -> dict:
        kind = rng.choice(["text", "image", "tool_use", "tool_result", "thinking", "document"])
        if kind == "text":
            return {"type": "text", "text": text()}
        if kind == "image":
            return image(rng.randint(1, 9000), rng.randint(1, 9000))
        if kind == "tool_use":
            return {"type": "tool_use", "id": "toolu_" + text()[:8], "name": "f", "input": {"q": text(), "n": [1, 2]}}
        if kind == "tool_result":
            return {"type": "tool_result", "tool_use_id": "toolu_1",
                    "content": rng.choice([text(), [{"type": "text", "text": text()}]])}
        if kind == "thinking":
            return {"type": "thinking", "thinking": text(), "signature": "c2ln"}
        return {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": text()}}

    messages = [{"role": rng.choice(["user", "assistant"]),
                 "content": rng.choice([text(), [block() for _ in range(rng.randint(0, 4))]])}
                for _ in range(rng.randint(1, 6))]
    body = {"messages": messages}
    if rng.random() < 0.5:
        body["system"] = rng.choice([text(), [{"type": "text", "text": text()}]])
    if rng.random() < 0.5:
        body["tools"] = [{"name": f"t{i}", "description": text(), "input_schema": {"type": "object"}}
                         for i in range(rng.randint(0, 3))]
    return body


async def test_the_bound_holds_for_many_random_bodies():
    import random
    rng = random.Random(20261202)
    for _ in range(300):
        body = full(_random_body(rng))
        request = MESSAGES.parse(orjson.dumps(body))
        assert await MESSAGES.count_prompt(request, PRICE) >= bill_messages(MODEL, request.body), body
