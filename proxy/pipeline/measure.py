"""Step 6, measure: the usage of a chat completion, from the upstream or estimated.

An explicit ``usage`` object from the upstream always wins. Without one (an upstream that
reports none, a stream cut short, a client that left), farebox counts what was actually
sent and received with tiktoken and marks the result estimated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from pricing.cost import Usage
from proxy.tokens import count_completion
from proxy.upstream.sse import event_data

__all__ = ["usage_from_object", "Measured", "StreamMeter", "estimate_usage", "choices_text"]


@dataclass(slots=True)
class Measured:
    usage: Usage
    estimated: bool


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_from_object(usage: Any) -> Usage | None:
    """An OpenAI ``usage`` object (chat or responses naming) as ``Usage``; None if absent."""
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    completion = usage.get("completion_tokens", usage.get("output_tokens"))
    if not isinstance(prompt, int) and not isinstance(completion, int):
        return None
    prompt_details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or usage.get("output_tokens_details") or {}
    if not isinstance(prompt_details, dict):
        prompt_details = {}
    if not isinstance(completion_details, dict):
        completion_details = {}
    cached = _int(prompt_details.get("cached_tokens"))
    # Some OpenAI-compatible gateways report cache writes at the top level.
    creation = _int(usage.get("cache_creation_input_tokens") or prompt_details.get("cache_creation_tokens"))
    return Usage(
        prompt_tokens=_int(prompt),
        completion_tokens=_int(completion),
        cached_tokens=cached,
        cache_creation_tokens=creation,
        reasoning_tokens=_int(completion_details.get("reasoning_tokens")),
    )


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


def estimate_usage(model: str, prompt_tokens: int, text: str, tool_calls: list[Any] | None) -> Usage:
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=count_completion(model, text, tool_calls or None))


_DONE = b"[DONE]"


@dataclass(slots=True)
class StreamMeter:
    """Collects what a stream of chat completion chunks reports and generates."""

    usage: Usage | None = None
    texts: list[str] = field(default_factory=list)
    tool_calls: dict[tuple[int, int], dict[str, str]] = field(default_factory=dict)

    def take(self, event: bytes, strip_usage: bool) -> bool:
        """Read one raw SSE event; False when it is the usage-only chunk the client did not ask for."""
        payload = event_data(event)
        if not payload or payload == _DONE:
            return True
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return True
        if not isinstance(chunk, dict):
            return True
        self.feed(chunk)
        return not (strip_usage and chunk.get("usage") and not chunk.get("choices"))

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

    def result(self, model: str, prompt_tokens: int) -> Measured:
        if self.usage is not None:
            return Measured(self.usage, estimated=False)
        calls = [{"type": "function", "function": v} for v in self.tool_calls.values()]
        return Measured(estimate_usage(model, prompt_tokens, "".join(self.texts), calls), estimated=True)
