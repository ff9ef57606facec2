"""Embeddings (``POST /v1/embeddings``) as an ``ApiShape``.

Parse: a JSON object with a string ``model`` and an ``input`` that is a string, a list of
strings, one token array or a list of token arrays (``proxy/apis/text_inputs.py``): not empty,
no empty strings, at most ``MAX_INPUTS`` inputs, as OpenAI. The API has no stream (a
``stream`` field is the upstream's to refuse) and no other field farebox needs to read:
``encoding_format``, ``dimensions`` and the rest are forwarded as they are.

Count: the worst case is the inputs alone, each string counted with tiktoken in the model's
encoding, each token array by its length, at the input price; nothing is generated, so there
is no output bound to reserve, set or clamp (a request whose inputs do not fit a budget gets
402).

Measure: ``usage.prompt_tokens`` (else ``total_tokens``, which is the same number) is the
whole charge; without a usage object, the counted inputs, marked estimated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from pricing.catalog import ModelPrice
from pricing.cost import Usage
from proxy.apis import Measured
from proxy.apis.body import parse_json_object, required_model
from proxy.apis.text_inputs import TextInput, count_inputs_async, text_inputs
from proxy.upstream.sse import event_data

__all__ = ["EMBEDDINGS", "Embeddings", "EmbeddingsRequest", "EmbeddingsStreamMeter", "parse_embeddings",
           "embeddings_usage", "MAX_INPUTS"]

MAX_INPUTS = 2048  # inputs in one request, as OpenAI takes them


@dataclass(slots=True)
class EmbeddingsRequest:
    """An embeddings request as farebox sees it: nothing generated, one answer."""

    body: dict[str, Any]
    model: str
    inputs: list[TextInput]
    stream = False
    max_output = 0         # embeddings generate no tokens
    bound_field = None     # so there is no output bound to set or clamp
    n = 1
    output_extra = 0
    hosted_calls = 0
    min_output = 1
    prompt_field = "input"


def parse_embeddings(raw: bytes, headers: Mapping[str, str] | None = None) -> EmbeddingsRequest:
    body = parse_json_object(raw)
    model = required_model(body)
    inputs = text_inputs(body.get("input"), "input", max_items=MAX_INPUTS, empty_text=False)
    return EmbeddingsRequest(body=body, model=model, inputs=inputs)


def embeddings_usage(usage: Any) -> Usage | None:
    """An embeddings ``usage`` object as ``Usage`` (all of it prompt); None if it has no count."""
    if not isinstance(usage, dict):
        return None
    for key in ("prompt_tokens", "input_tokens", "total_tokens"):
        value = usage.get(key)
        if type(value) is int and value >= 0:
            return Usage(prompt_tokens=value, completion_tokens=0)
    return None


@dataclass(slots=True)
class EmbeddingsStreamMeter:
    """The embeddings API has no stream; should an upstream send events all the same, they pass
    unchanged and any usage in them is kept."""

    usage: Usage | None = None

    def take(self, event: bytes) -> bool:
        payload = event_data(event)
        if payload and payload.startswith(b"{"):
            try:
                chunk = orjson.loads(payload)
            except orjson.JSONDecodeError:
                return True
            if isinstance(chunk, dict):
                found = embeddings_usage(chunk.get("usage"))
                if found is not None:
                    self.usage = found
        return True

    def result(self, prompt_tokens: int) -> Measured:
        if self.usage is not None:
            return Measured(self.usage, estimated=False)
        return Measured(Usage(prompt_tokens=prompt_tokens, completion_tokens=0), estimated=True)


class Embeddings:
    """The ``ApiShape`` of embeddings."""

    __slots__ = ()

    name = "embeddings"
    upstream_path = "/embeddings"
    family = "openai"

    parse = staticmethod(parse_embeddings)

    async def count_prompt(self, request: EmbeddingsRequest, price: ModelPrice) -> int:
        return sum(await count_inputs_async(request.model, request.inputs))

    def forward_body(self, raw: bytes, request: EmbeddingsRequest, bound: int | None) -> bytes:
        return raw  # nothing to change: no stream to ask usage of, no output bound

    def measure_body(self, payload: bytes, request: EmbeddingsRequest, prompt_tokens: int) -> Measured:
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            obj = None
        usage = embeddings_usage(obj.get("usage")) if isinstance(obj, dict) else None
        if usage is not None:
            return Measured(usage, estimated=False)
        return Measured(Usage(prompt_tokens=prompt_tokens, completion_tokens=0), estimated=True)

    def stream_meter(self, request: EmbeddingsRequest) -> EmbeddingsStreamMeter:
        return EmbeddingsStreamMeter()


EMBEDDINGS = Embeddings()
"""The embeddings shape (stateless: one for every request)."""
