"""Where an Anthropic Messages response says what it used, and what farebox estimates when it
says nothing: the ``usage`` object, a whole message's content, a stream's events.

Anthropic's ``input_tokens`` excludes cached tokens. farebox's ``Usage`` keeps OpenAI's
convention, so: prompt tokens = ``input_tokens`` + ``cache_read_input_tokens`` +
``cache_creation_input_tokens``, of which cached = the cache reads and cache writes = the
creations (of which those kept for an hour: ``cache_creation.ephemeral_1h_input_tokens``);
completion = ``output_tokens`` (thinking included); web searches =
``server_tool_use.web_search_requests``.

A stream reports input and cache tokens in ``message_start`` and the output in each
``message_delta`` (cumulative: the last one counts); the input, cache and server tool counts a
``message_delta`` carries replace ``message_start``'s (input and cache counts only upwards: they
are cumulative too, and some compatible servers send zeros there). A stream cut before its last
``message_delta`` (a client gone, an upstream broken off) is charged the input
``message_start`` reported and the output estimated from the text, tool input and thinking
seen (tiktoken, cl100k for Claude models), marked estimated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from pricing.cost import Usage
from proxy.apis import Measured
from proxy.apis.chat_prompt import count_completion
from proxy.upstream.sse import event_data

__all__ = ["anthropic_usage", "content_text", "MessagesStreamMeter"]


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def anthropic_usage(usage: Any) -> Usage | None:
    """An Anthropic ``usage`` object as ``Usage``; None when it reports no tokens at all."""
    if not isinstance(usage, dict):
        return None
    if not isinstance(usage.get("input_tokens"), int) and not isinstance(usage.get("output_tokens"), int):
        return None
    read = _count(usage.get("cache_read_input_tokens"))
    written = _count(usage.get("cache_creation_input_tokens"))
    split = usage.get("cache_creation")
    hour = 0
    if isinstance(split, dict):
        hour = _count(split.get("ephemeral_1h_input_tokens"))
        written = max(written, _count(split.get("ephemeral_5m_input_tokens")) + hour)
    tools = usage.get("server_tool_use")
    searches = _count(tools.get("web_search_requests")) if isinstance(tools, dict) else 0
    return Usage(prompt_tokens=_count(usage.get("input_tokens")) + read + written,
                 completion_tokens=_count(usage.get("output_tokens")), cached_tokens=read,
                 cache_creation_tokens=written, cache_creation_1h_tokens=hour, web_search_calls=searches)


def content_text(content: Any) -> str:
    """The generated text of a message's content blocks: text, tool inputs (JSON), thinking."""
    texts: list[str] = []
    if isinstance(content, list):
        for block in content:
            if not isinstance(block, dict):
                continue
            kind = block.get("type")
            if kind == "text" and isinstance(block.get("text"), str):
                texts.append(block["text"])
            elif kind == "thinking" and isinstance(block.get("thinking"), str):
                texts.append(block["thinking"])
            elif kind in ("tool_use", "server_tool_use"):
                if isinstance(block.get("name"), str):
                    texts.append(block["name"])
                if block.get("input") is not None:
                    texts.append(orjson.dumps(block["input"]).decode())
    return "".join(texts)


_INPUT_FIELDS = ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
_SPLIT_FIELDS = ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens")


def _merged(start: dict[str, Any], last: dict[str, Any]) -> dict[str, Any]:
    """message_start's usage updated by the last message_delta's. Every count is cumulative,
    so an input or cache count the delta carries replaces the start's when larger (a server
    tool's results added to the input); a smaller one (a compatible server sending zeros) is
    not taken."""
    merged = {**start, "output_tokens": last.get("output_tokens", start.get("output_tokens"))}
    for key in _INPUT_FIELDS:
        merged[key] = max(_count(start.get(key)), _count(last.get(key)))
    split_start, split_last = start.get("cache_creation"), last.get("cache_creation")
    if isinstance(split_last, dict):
        split_start = split_start if isinstance(split_start, dict) else {}
        merged["cache_creation"] = {key: max(_count(split_start.get(key)), _count(split_last.get(key)))
                                    for key in _SPLIT_FIELDS}
    if isinstance(last.get("server_tool_use"), dict):
        merged["server_tool_use"] = last["server_tool_use"]
    return merged


_DELTA_PREFIX = b'{"type":"content_block_delta"'
_DELTA_TEXT = {"text_delta": "text", "input_json_delta": "partial_json", "thinking_delta": "thinking"}


@dataclass(slots=True)
class MessagesStreamMeter:
    """Reads a Messages stream as it passes (every event reaches the client unchanged)."""

    model: str
    start: dict[str, Any] | None = None   # message_start's usage
    last: dict[str, Any] | None = None    # the last message_delta's usage
    deltas: list[bytes] = field(default_factory=list)  # content_block_delta payloads, read only for an estimate

    def take(self, event: bytes) -> bool:
        payload = event_data(event)
        if not payload:
            return True
        if payload.startswith(_DELTA_PREFIX):  # the common event: kept unparsed
            self.deltas.append(payload)
            return True
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return True
        if not isinstance(obj, dict):
            return True
        kind = obj.get("type")
        if kind == "message_start":
            message = obj.get("message")
            usage = message.get("usage") if isinstance(message, dict) else None
            if isinstance(usage, dict):
                self.start = usage
        elif kind == "message_delta":
            usage = obj.get("usage")
            if isinstance(usage, dict):
                self.last = usage
        elif kind == "content_block_delta":
            self.deltas.append(payload)
        return True

    def generated(self) -> str:
        """The text, tool input and thinking the stream's deltas carried."""
        texts: list[str] = []
        for payload in self.deltas:
            try:
                obj = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            delta = obj.get("delta") if isinstance(obj, dict) else None
            if isinstance(delta, dict):
                key = _DELTA_TEXT.get(delta.get("type"))
                if key is not None and isinstance(delta.get(key), str):
                    texts.append(delta[key])
        return "".join(texts)

    def result(self, prompt_tokens: int) -> Measured:
        if self.start is not None and self.last is not None:
            usage = anthropic_usage(_merged(self.start, self.last))
            if usage is not None:
                return Measured(usage, estimated=False)
        output = count_completion(self.model, self.generated())
        reported = anthropic_usage(self.start) if self.start is not None else None
        if reported is None:
            return Measured(Usage(prompt_tokens=prompt_tokens, completion_tokens=output), estimated=True)
        # The input is known; the output is what was seen, at least what was reported.
        return Measured(Usage(prompt_tokens=reported.prompt_tokens,
                              completion_tokens=max(output, reported.completion_tokens),
                              cached_tokens=reported.cached_tokens,
                              cache_creation_tokens=reported.cache_creation_tokens,
                              cache_creation_1h_tokens=reported.cache_creation_1h_tokens,
                              web_search_calls=reported.web_search_calls), estimated=True)
