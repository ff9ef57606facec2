"""The reserved worst case of a chat body is never below what a provider bills for it.

Hypothesis makes chat bodies of every shape farebox meters (text, images of many sizes and
details, audio, tools, response_format schemas, prediction, n, max_tokens); each is parsed and
counted by the chat shape, its worst case priced as the reserve step does, and held against
what the fake upstream bills for the same body (``proxy.fake_upstream.billing``, written apart
from farebox's counting), with every choice's reply at the most the output bound allows.
"""

from __future__ import annotations

import asyncio
import base64
import struct
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pricing.catalog import Catalog
from pricing.cost import Usage, cost_nano, worst_case_nano
from proxy.apis.chat import CHAT
from proxy.budgets import output_bound
from proxy.fake_upstream.billing import bill_chat
from proxy.settings import Settings

CATALOG = Catalog.load()
MODELS = ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o4-mini", "gpt-3.5-turbo", "gpt-4"]

TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60)
WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz ABC,.:;{}[]\"'_-0123456789\n", max_size=80)
TEXTS = st.one_of(WORDS, TEXT)


def png(width: int, height: int) -> str:
    head = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return "data:image/png;base64," + base64.b64encode(head + b"\0" * 16).decode()


def gif(width: int, height: int) -> str:
    return "data:image/gif;base64," + base64.b64encode(b"GIF89a" + struct.pack("<HH", width, height) + b"\0" * 8).decode()


def wav(seconds: int, byte_rate: int) -> str:
    data = b"\0" * (seconds * byte_rate)
    head = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, byte_rate, byte_rate, 1, 8)
    return base64.b64encode(head + b"data" + struct.pack("<I", len(data)) + data).decode()


SIDES = st.integers(min_value=1, max_value=6000)
DETAILS = st.sampled_from([None, "low", "high", "auto"])


@st.composite
def image_parts(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["png", "gif", "url"]))
    width, height = draw(SIDES), draw(SIDES if kind != "gif" else st.integers(1, 65535))
    if kind == "gif":
        width = min(width, 65535)
    url = {"png": png, "gif": gif}.get(kind, lambda w, h: f"https://img.test/{w}x{h}.png")(width, height)
    image: dict[str, Any] = {"url": url}
    detail = draw(DETAILS)
    if detail is not None:
        image["detail"] = detail
    return {"type": "image_url", "image_url": image}


@st.composite
def audio_parts(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.booleans()):
        data = wav(draw(st.integers(0, 3)), draw(st.sampled_from([8000, 16000, 32000])))
        return {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}
    raw = draw(st.binary(min_size=1, max_size=3000))
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(raw).decode(), "format": "mp3"}}


CONTENT_PARTS = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, TEXTS),
    image_parts(),
    audio_parts(),
    st.builds(lambda t: {"type": "refusal", "refusal": t}, TEXTS),
    st.builds(lambda name, data: {"type": "file", "file": {"filename": name, "file_data": base64.b64encode(data).decode()}},
              WORDS, st.binary(max_size=2000)),
)
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False), TEXTS),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(WORDS, inner, max_size=4)),
    max_leaves=12,
)
TOOL_CALLS = st.lists(st.fixed_dictionaries({
    "id": WORDS, "type": st.just("function"),
    "function": st.fixed_dictionaries({"name": WORDS, "arguments": st.one_of(TEXTS, JSON_VALUES.map(orjson.dumps).map(bytes.decode))}),
}), min_size=1, max_size=3)
MESSAGES = st.lists(st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "developer"]), "content": TEXTS},
                          optional={"name": WORDS}),
    st.fixed_dictionaries({"role": st.just("user"), "content": st.lists(CONTENT_PARTS, min_size=1, max_size=4)}),
    st.fixed_dictionaries({"role": st.just("assistant"), "content": st.one_of(st.none(), TEXTS)},
                          optional={"tool_calls": TOOL_CALLS}),
    st.fixed_dictionaries({"role": st.just("tool"), "tool_call_id": WORDS, "content": TEXTS}),
), min_size=1, max_size=5)
TOOLS = st.lists(st.fixed_dictionaries({
    "type": st.just("function"),
    "function": st.fixed_dictionaries({"name": WORDS}, optional={"description": TEXTS, "parameters": JSON_VALUES}),
}), min_size=1, max_size=3)
RESPONSE_FORMATS = st.one_of(
    st.just({"type": "json_object"}),
    st.builds(lambda schema: {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}, JSON_VALUES),
)
PREDICTIONS = st.one_of(
    st.builds(lambda t: {"type": "content", "content": t}, TEXTS),
    st.builds(lambda ts: {"type": "content", "content": [{"type": "text", "text": t} for t in ts]},
              st.lists(TEXTS, max_size=3)),
)


@st.composite
def chat_bodies(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"model": draw(st.sampled_from(MODELS)), "messages": draw(MESSAGES)}
    optional = {"tools": TOOLS, "response_format": RESPONSE_FORMATS, "prediction": PREDICTIONS,
                "n": st.integers(1, 8), "max_tokens": st.integers(1, 4096), "max_completion_tokens": st.integers(1, 4096),
                "tool_choice": st.sampled_from(["auto", "required", {"type": "function", "function": {"name": "f"}}]),
                "temperature": st.floats(0, 2), "seed": st.integers(0, 2**31)}
    for key, strategy in optional.items():
        if draw(st.booleans()):
            body[key] = draw(strategy)
    return body


def worst_and_bill(body: dict[str, Any]) -> tuple[int, int, int, int, int, int]:
    """(prompt, output) tokens and nano-USD of the worst case; (prompt, output) tokens and
    nano-USD of the most the fake can bill for ``body``."""
    raw = orjson.dumps(body)
    request = CHAT.parse(raw)
    price = CATALOG.resolve(request.model)
    assert price is not None
    prompt = asyncio.run(CHAT.count_prompt(request, price))
    bound, _ = output_bound(request, price, Settings())
    output = (bound + request.output_extra) * request.n
    billed_prompt, predicted = bill_chat(request.model, orjson.loads(raw))
    billed_output = (bound + predicted) * request.n
    return (prompt, output, worst_case_nano(price, prompt, output),
            billed_prompt, billed_output, cost_nano(price, Usage(billed_prompt, billed_output)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(chat_bodies())
def test_the_worst_case_covers_what_the_provider_bills(body: dict[str, Any]) -> None:
    prompt, output, worst, billed_prompt, billed_output, billed = worst_and_bill(body)

    assert prompt >= billed_prompt
    assert output >= billed_output
    assert worst >= billed


def test_a_large_schema_counts_as_much_as_the_same_text_in_tools() -> None:
    text = " ".join(["schema"] * 20_000)
    in_format = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16,
                 "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {"description": text}}}}
    in_tools = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16,
                "tools": [{"type": "function", "function": {"name": "a", "description": text}}]}

    format_prompt, _, _, billed_format, _, _ = worst_and_bill(in_format)
    tools_prompt, _, _, billed_tools, _, _ = worst_and_bill(in_tools)

    assert format_prompt >= billed_format > 20_000
    assert tools_prompt >= billed_tools > 20_000
