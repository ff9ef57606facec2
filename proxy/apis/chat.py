"""Chat completions (``POST /v1/chat/completions``) as an ``ApiShape``.

Parse: only what farebox needs is checked (the upstream validates the rest): a JSON object with
a string ``model``, a list ``messages`` and well-typed ``stream``, ``stream_options``,
``max_tokens`` / ``max_completion_tokens`` (at most ``MAX_OUTPUT_TOKENS``) and ``n`` (at most
``MAX_CHOICES``, as OpenAI). Nothing is forwarded or recorded for a body that fails here.

Count: every part of the body a provider bills (``proxy/apis/chat_prompt.py``); a
``prediction`` is output billed per choice on top of the output bound (``output_extra``).

Forward: a stream always asks for usage (``stream_options.include_usage``); the usage-only
chunk that brings is kept from a client that did not ask for it. A clamped or required output
bound is set in ``max_completion_tokens``, or ``max_tokens`` when the client used that.

Measure: an explicit ``usage`` object from the upstream always wins. Without one (an upstream
that reports none, a stream cut short, a client that left), farebox counts what was actually
received with tiktoken and marks the result estimated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from pricing.catalog import ModelPrice
from pricing.cost import Usage
from proxy.apis import Measured
from proxy.apis.body import json_type, parse_json_object, positive_int, required_model
from proxy.apis.chat_prompt import count_chat_async, count_completion
from proxy.apis.stream_usage import UsageChunkMeter, ask_for_usage, stream_flags
from proxy.apis.usage import usage_from_object
from proxy.errors import BadRequest

__all__ = ["CHAT", "ChatCompletions", "ChatRequest", "ChatStreamMeter", "parse_chat", "choices_text",
           "MAX_OUTPUT_TOKENS", "MAX_CHOICES"]

MAX_OUTPUT_TOKENS = 2**31 - 1  # no model generates more; larger numbers cannot be priced
MAX_CHOICES = 128


@dataclass(slots=True)
class ChatRequest:
    """A chat completions request as farebox sees it."""

    body: dict[str, Any]
    model: str
    stream: bool
    client_wants_usage: bool  # the client itself asked for stream_options.include_usage
    max_output: int | None    # max_completion_tokens, else max_tokens, as the client sent it
    bound_field: str          # which of the two to set when clamping
    n: int
    output_extra: int = 0     # prediction tokens, billed as output per choice (set when counted)
    hosted_calls: int = 0     # chat bills no call by itself
    min_output: int = 1
    prompt_field = "messages"


def parse_chat(raw: bytes, headers: Mapping[str, str] | None = None) -> ChatRequest:
    body = parse_json_object(raw)
    model = required_model(body)
    if "messages" not in body:
        raise BadRequest("Missing required parameter: 'messages'.", param="messages", code="missing_required_parameter")
    if not isinstance(body["messages"], list):
        raise BadRequest(f"Invalid type for 'messages': expected an array, got {json_type(body['messages'])}.",
                         param="messages", code="invalid_type")
    stream, wants_usage = stream_flags(body)
    max_completion = positive_int(body, "max_completion_tokens", MAX_OUTPUT_TOKENS)
    max_tokens = positive_int(body, "max_tokens", MAX_OUTPUT_TOKENS)
    n = positive_int(body, "n", MAX_CHOICES) or 1
    if max_completion is not None:
        max_output, bound_field = max_completion, "max_completion_tokens"
    else:
        max_output, bound_field = max_tokens, ("max_tokens" if max_tokens is not None else "max_completion_tokens")
    return ChatRequest(body=body, model=model, stream=stream, client_wants_usage=wants_usage,
                       max_output=max_output, bound_field=bound_field, n=n)


def choices_text(choices: Any) -> tuple[str, list[Any]]:
    """The generated text and tool calls of a non-stream response's choices."""
    texts: list[str] = []
    calls: list[Any] = []
    if isinstance(choices, list):
        for choice in choices:
            message = choice.get("message") if isinstance(choice, dict) else None
            if not isinstance(message, dict):
                continue
            if isinstance(message.get("content"), str):
                texts.append(message["content"])
            if isinstance(message.get("tool_calls"), list):
                calls.extend(message["tool_calls"])
    return "".join(texts), calls


def _estimated(model: str, prompt_tokens: int, text: str, tool_calls: list[Any] | None) -> Measured:
    usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=count_completion(model, text, tool_calls or None))
    return Measured(usage, estimated=True)


@dataclass(slots=True)
class ChatStreamMeter(UsageChunkMeter):
    """Collects what a stream of chat completion chunks reports and generates."""

    texts: list[str] = field(default_factory=list)
    tool_calls: dict[tuple[int, int], dict[str, str]] = field(default_factory=dict)

    def feed(self, chunk: dict[str, Any]) -> None:
        found = usage_from_object(chunk.get("usage"))
        if found is not None:
            self.usage = found
        choices = chunk.get("choices")
        if not choices:
            return
        for choice in choices:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if not isinstance(delta, dict):
                continue
            content = delta.get("content")
            if isinstance(content, str):
                self.texts.append(content)
            calls = delta.get("tool_calls")
            if isinstance(calls, list):
                index = choice.get("index", 0)
                for call in calls:
                    if not isinstance(call, dict):
                        continue
                    slot = self.tool_calls.setdefault((index, call.get("index", 0)), {"name": "", "arguments": ""})
                    fn = call.get("function") or {}
                    if isinstance(fn, dict):
                        slot["name"] += fn.get("name") or ""
                        slot["arguments"] += fn.get("arguments") or ""

    def result(self, prompt_tokens: int) -> Measured:
        if self.usage is not None:
            return Measured(self.usage, estimated=False)
        calls = [{"type": "function", "function": v} for v in self.tool_calls.values()]
        return _estimated(self.model, prompt_tokens, "".join(self.texts), calls)


class ChatCompletions:
    """The ``ApiShape`` of chat completions."""

    __slots__ = ()

    name = "chat.completions"
    upstream_path = "/chat/completions"
    family = "openai"

    parse = staticmethod(parse_chat)

    async def count_prompt(self, request: ChatRequest, price: ModelPrice) -> int:
        counted = await count_chat_async(request.model, request.body, price.max_input_tokens)
        request.output_extra = counted.predicted
        return counted.prompt

    def forward_body(self, raw: bytes, request: ChatRequest, bound: int | None) -> bytes:
        changed = False
        body = request.body
        if request.stream and not request.client_wants_usage:
            ask_for_usage(body)
            changed = True
        if bound is not None:
            body[request.bound_field] = bound
            changed = True
        return orjson.dumps(body) if changed else raw

    def measure_body(self, payload: bytes, request: ChatRequest, prompt_tokens: int) -> Measured:
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            obj = None
        if isinstance(obj, dict):
            usage = usage_from_object(obj.get("usage"))
            if usage is not None:
                return Measured(usage, estimated=False)
            text, calls = choices_text(obj.get("choices"))
        else:
            text, calls = "", []
        return _estimated(request.model, prompt_tokens, text, calls)

    def stream_meter(self, request: ChatRequest) -> ChatStreamMeter:
        return ChatStreamMeter(request.model, not request.client_wants_usage)


CHAT = ChatCompletions()
"""The chat completions shape (stateless: one for every request)."""
