"""Legacy completions (``POST /v1/completions``) as an ``ApiShape``.

Parse: a JSON object with a string ``model``; ``prompt`` a string, a list of strings, one token
array or a list of token arrays (``proxy/apis/text_inputs.py``), each prompt getting its own
completions; ``suffix`` a string; ``max_tokens`` a whole number (absent or null: the API's
default, ``DEFAULT_MAX_TOKENS``); ``n`` and ``best_of`` at most ``MAX_CHOICES``; ``echo``,
``stream`` and ``stream_options`` well typed. Nothing is forwarded or recorded for a body that
fails here.

Count: every prompt with tiktoken in the model's encoding (a token array by its length, an
empty prompt as one token), plus, with a ``suffix``, the suffix and ``SUFFIX_FRAMING`` tokens
once per prompt. The output bound is ``max_tokens`` per completion, and the provider generates
``max(n, best_of)`` completions per prompt (``best_of`` are generated, ``n`` returned): so the
request's ``n`` as the flow sees it is ``max(n, best_of)`` times the number of prompts. ``echo``
returns the prompt in the text but bills it only as prompt.

Forward: ``max_tokens`` is always sent (``DEFAULT_MAX_TOKENS`` when the client left it out), so
the bound holds whatever default an upstream has; a clamped bound replaces it. A stream asks
for usage and keeps the usage-only chunk from a client that did not ask for it, as chat does
(``proxy/apis/stream_usage.py``).

Measure: an explicit ``usage`` wins. Without one, the completions' text is counted (an echoed
prompt left out), scaled by ``best_of / n`` for the candidates the provider generated but did
not return, and marked estimated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from pricing.catalog import ModelPrice
from pricing.cost import Usage
from proxy.apis import Measured
from proxy.apis.body import json_type, parse_json_object, positive_int, required_model
from proxy.apis.chat import MAX_CHOICES, MAX_OUTPUT_TOKENS
from proxy.apis.chat_prompt import count_completion
from proxy.apis.stream_usage import UsageChunkMeter, ask_for_usage, stream_flags
from proxy.apis.text_inputs import TextInput, count_inputs_async, text_inputs
from proxy.apis.usage import usage_from_object
from proxy.errors import BadRequest
from proxy.tokens import get_encoding

__all__ = ["COMPLETIONS", "Completions", "CompletionsRequest", "CompletionsStreamMeter", "parse_completions",
           "choices_texts", "DEFAULT_MAX_TOKENS", "SUFFIX_FRAMING"]

DEFAULT_MAX_TOKENS = 16  # the API's max_tokens when a request sets none
SUFFIX_FRAMING = 3       # an insertion's prefix, suffix and middle markers, per prompt (an upper bound)


@dataclass(slots=True)
class CompletionsRequest:
    """A legacy completions request as farebox sees it."""

    body: dict[str, Any]
    model: str
    stream: bool
    client_wants_usage: bool  # the client itself asked for stream_options.include_usage
    prompts: list[TextInput]
    suffix: str | None
    max_output: int           # max_tokens per completion, the API's default when the client set none
    bound_sent: bool          # the client set max_tokens itself
    returned: int             # completions returned per prompt (n)
    generated: int            # completions generated per prompt: max(n, best_of)
    echo: bool
    n: int = 1                # completions generated in all: generated × prompts
    output_extra: int = 0
    hosted_calls: int = 0
    min_output: int = 1
    bound_field = "max_tokens"
    prompt_field = "prompt"


def _max_tokens(body: dict[str, Any]) -> int | None:
    value = body.get("max_tokens")
    if value is None:
        return None
    if type(value) is not int:
        raise BadRequest(f"Invalid type for 'max_tokens': expected an integer, got {json_type(value)}.",
                         param="max_tokens", code="invalid_type")
    if not 0 <= value <= MAX_OUTPUT_TOKENS:
        raise BadRequest(f"Invalid value for 'max_tokens': must be between 0 and {MAX_OUTPUT_TOKENS}, got {value}.",
                         param="max_tokens", code="invalid_value")
    return value


def _optional(body: dict[str, Any], name: str, kind: type, expected: str) -> Any:
    value = body.get(name)
    if value is not None and type(value) is not kind:
        raise BadRequest(f"Invalid type for '{name}': expected {expected}, got {json_type(value)}.",
                         param=name, code="invalid_type")
    return value


def parse_completions(raw: bytes, headers: Mapping[str, str] | None = None) -> CompletionsRequest:
    body = parse_json_object(raw)
    model = required_model(body)
    prompts = text_inputs(body.get("prompt"), "prompt")
    suffix = _optional(body, "suffix", str, "a string")
    echo = _optional(body, "echo", bool, "a boolean") or False
    stream, wants_usage = stream_flags(body)
    max_tokens = _max_tokens(body)
    returned = positive_int(body, "n", MAX_CHOICES) or 1
    best_of = positive_int(body, "best_of", MAX_CHOICES) or 1
    generated = max(returned, best_of)
    return CompletionsRequest(
        body=body, model=model, stream=stream, client_wants_usage=wants_usage, prompts=prompts, suffix=suffix,
        max_output=DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens, bound_sent=max_tokens is not None,
        returned=returned, generated=generated, echo=echo, n=generated * len(prompts))


def _echoed(request: CompletionsRequest, index: int) -> str:
    """The prompt an echoing completion's text starts with ("" when there is none to leave out)."""
    if not request.echo or request.returned < 1:
        return ""
    position = index // request.returned
    if not 0 <= position < len(request.prompts):
        return ""
    prompt = request.prompts[position]
    if isinstance(prompt, str):
        return prompt
    try:
        return get_encoding(request.model).decode(prompt)
    except (ValueError, KeyError, OverflowError, TypeError):
        return ""


def _estimated(request: CompletionsRequest, prompt_tokens: int, texts: dict[int, str]) -> Measured:
    """Completion tokens counted in the texts returned (by choice index), for every completion
    generated."""
    tokens = 0
    for index, text in texts.items():
        echoed = _echoed(request, index)
        if echoed and text.startswith(echoed):
            text = text[len(echoed):]
        tokens += count_completion(request.model, text)
    if request.generated > request.returned:  # best_of: candidates generated and not returned
        tokens = math.ceil(tokens * request.generated / request.returned)
    return Measured(Usage(prompt_tokens=prompt_tokens, completion_tokens=tokens), estimated=True)


def choices_texts(choices: Any) -> dict[int, str]:
    """The text of each choice of a non-stream response, by its index."""
    texts: dict[int, str] = {}
    if isinstance(choices, list):
        for position, choice in enumerate(choices):
            if isinstance(choice, dict) and isinstance(choice.get("text"), str):
                index = choice.get("index")
                key = index if type(index) is int else position
                texts[key] = texts.get(key, "") + choice["text"]
    return texts


@dataclass(slots=True)
class CompletionsStreamMeter(UsageChunkMeter):
    """Collects what a stream of text completion chunks reports and generates."""

    request: CompletionsRequest | None = None
    texts: dict[int, list[str]] = field(default_factory=dict)

    def feed(self, chunk: dict[str, Any]) -> None:
        found = usage_from_object(chunk.get("usage"))
        if found is not None:
            self.usage = found
        choices = chunk.get("choices")
        if not choices or not isinstance(choices, list):
            return
        for choice in choices:
            if isinstance(choice, dict):
                text = choice.get("text")
                if isinstance(text, str) and text:
                    index = choice.get("index", 0)
                    self.texts.setdefault(index if type(index) is int else 0, []).append(text)

    def result(self, prompt_tokens: int) -> Measured:
        if self.usage is not None:
            return Measured(self.usage, estimated=False)
        texts = {index: "".join(parts) for index, parts in self.texts.items()}
        if self.request is None:  # a meter made without its request: no echo or best_of to allow for
            completion = sum(count_completion(self.model, text) for text in texts.values())
            return Measured(Usage(prompt_tokens=prompt_tokens, completion_tokens=completion), estimated=True)
        return _estimated(self.request, prompt_tokens, texts)


class Completions:
    """The ``ApiShape`` of legacy completions."""

    __slots__ = ()

    name = "completions"
    upstream_path = "/completions"
    family = "openai"

    parse = staticmethod(parse_completions)

    async def count_prompt(self, request: CompletionsRequest, price: ModelPrice) -> int:
        suffix = request.suffix
        texts = request.prompts + [suffix] if suffix else request.prompts
        counts = await count_inputs_async(request.model, texts)
        prompts = len(request.prompts)
        total = sum(max(1, count) for count in counts[:prompts])
        if suffix:
            total += (counts[prompts] + SUFFIX_FRAMING) * prompts
        return total

    def forward_body(self, raw: bytes, request: CompletionsRequest, bound: int | None) -> bytes:
        changed = False
        body = request.body
        if request.stream and not request.client_wants_usage:
            ask_for_usage(body)
            changed = True
        if bound is not None:
            body["max_tokens"] = bound
            changed = True
        elif not request.bound_sent:
            body["max_tokens"] = request.max_output
            changed = True
        return orjson.dumps(body) if changed else raw

    def measure_body(self, payload: bytes, request: CompletionsRequest, prompt_tokens: int) -> Measured:
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict):
            return _estimated(request, prompt_tokens, {})
        usage = usage_from_object(obj.get("usage"))
        if usage is not None:
            return Measured(usage, estimated=False)
        return _estimated(request, prompt_tokens, choices_texts(obj.get("choices")))

    def stream_meter(self, request: CompletionsRequest) -> CompletionsStreamMeter:
        return CompletionsStreamMeter(request.model, not request.client_wants_usage, request=request)


COMPLETIONS = Completions()
"""The legacy completions shape (stateless: one for every request)."""
