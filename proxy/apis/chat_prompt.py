"""Counting a chat completions request: the worst case of what its body can bill, and the
completion a response generated when its upstream reported no usage.

Every part of the body a provider bills is counted, and what cannot be counted exactly is
bounded from above, never skipped:

- messages: 3 tokens of framing each, plus every text in them (role, name and 1 more for it,
  content strings and text / refusal parts, tool call ids), exactly with the model's encoding
  (``proxy.tokens``); tool calls as their JSON text plus 3 each; images, audio and files by the
  bounds of ``proxy/apis/chat_media.py``; any other value as its JSON text;
- tool and function definitions as their JSON text, plus the framing of the published method
  (per function and once for the block): more than the text a provider renders them into;
- ``response_format`` (its JSON schema), ``tool_choice`` and every top-level field not known to
  be a setting that bills nothing, as their JSON text;
- ``prediction``, billed at the output price (its rejected tokens are completion tokens), as
  output tokens per choice on top of the output bound;
- 3 tokens priming the reply.

Counting runs in two steps: ``gather_chat`` walks the body once and collects the texts to count
(cheap: no tokenizer), ``count_parts`` counts them, in a worker thread when there are many.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import tiktoken

from proxy.apis.chat_media import (
    AUDIO_PRICE_RATIO,
    UNKNOWN_CONTEXT_TOKENS,
    audio_tokens,
    data_url_image_size,
    file_tokens,
    image_tokens,
)
from proxy.tokens import (
    CL100K,
    DEFAULT_OFFLOAD_THRESHOLD_CHARS,
    O200K,
    encoding_loaded,
    encoding_name_for_model,
    get_encoding,
    offloaded,
    tokens_in,
)

__all__ = ["ChatCount", "ChatParts", "gather_chat", "count_parts", "count_chat", "count_chat_async",
           "count_chat_prompt", "count_completion", "TOKENS_PER_MESSAGE", "TOKENS_PER_NAME", "REPLY_PRIMING_TOKENS",
           "TOKENS_PER_TOOL_CALL", "UNBILLED_FIELDS"]

# Published per-message framing for chat models (gpt-3.5-turbo-0613 onwards, gpt-4,
# gpt-4o, gpt-4o-mini): every message is wrapped as <|start|>{role/name}\n{content}<|end|>\n.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3  # every reply is primed with <|start|>assistant<|message|>
TOKENS_PER_TOOL_CALL = 3

# Tool definitions' framing in the published method: (per function, end of the block).
_TOOL_FRAMING = {O200K: (7, 12), CL100K: (10, 12)}

# Top-level fields that are settings, never rendered into the prompt. Every other field (known
# or not) is counted as its JSON text, unless counted on its own below.
UNBILLED_FIELDS = frozenset({
    "model", "stream", "stream_options", "max_tokens", "max_completion_tokens", "n", "temperature", "top_p",
    "frequency_penalty", "presence_penalty", "logit_bias", "logprobs", "top_logprobs", "seed", "stop", "user",
    "parallel_tool_calls", "store", "metadata", "service_tier", "reasoning_effort", "modalities", "audio",
    "prompt_cache_key", "safety_identifier", "verbosity",
})
_OWN_FIELDS = frozenset({"messages", "tools", "functions", "prediction"})


@dataclass(slots=True)
class ChatCount:
    """The worst case of a chat body: its prompt tokens, and the output tokens each choice is
    billed on top of its output bound (a ``prediction``)."""

    prompt: int
    predicted: int = 0


@dataclass(slots=True)
class ChatParts:
    """What ``gather_chat`` found to count: texts, and tokens already known (framing, bounds)."""

    texts: list[str] = field(default_factory=list)
    fixed: int = 0
    chars: int = 0
    predicted: list[str] = field(default_factory=list)

    def text(self, value: str) -> None:
        if value:
            self.texts.append(value)
            self.chars += len(value)

    def json(self, value: Any) -> None:
        self.text(_json(value))


def _json(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # integers beyond 64 bits, which JSON parsing can give
        return str(value)


# --------------------------------------------------------------------------- gathering

def _content(parts: ChatParts, model: str, context: int | None, content: Any) -> None:
    if isinstance(content, str):
        parts.text(content)
        return
    if not isinstance(content, list):
        if content is not None:
            parts.json(content)
        return
    for part in content:
        if isinstance(part, str):
            parts.text(part)
            continue
        if not isinstance(part, Mapping):
            if part is not None:
                parts.json(part)
            continue
        kind = part.get("type")
        if kind == "text" or kind == "refusal":
            value = part.get(kind)
            if isinstance(value, str):
                parts.text(value)
            elif value is not None:
                parts.json(value)
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, Mapping) else image
            detail = image.get("detail") if isinstance(image, Mapping) else None
            size = data_url_image_size(url) if isinstance(url, str) else None
            parts.fixed += image_tokens(model, detail, size)
        elif kind == "input_audio":
            audio = part.get("input_audio")
            parts.fixed += audio_tokens(audio.get("data") if isinstance(audio, Mapping) else None)
        elif kind == "file":
            file = part.get("file")
            if isinstance(file, Mapping) and isinstance(file.get("filename"), str):
                parts.text(file["filename"])
            parts.fixed += file_tokens(model, context)
        else:  # a part type farebox does not know: all of it, as text
            parts.json(part)


def _tool_calls(parts: ChatParts, calls: Any) -> None:
    if isinstance(calls, list):
        for call in calls:
            parts.fixed += TOKENS_PER_TOOL_CALL
            if call:
                parts.json(call)
    elif calls is not None:
        parts.json(calls)


def _message(parts: ChatParts, model: str, context: int | None, message: Any) -> None:
    if not isinstance(message, Mapping):
        if message is not None:
            parts.json(message)
        return
    parts.fixed += TOKENS_PER_MESSAGE
    for key, value in message.items():
        if key == "content":
            _content(parts, model, context, value)
        elif isinstance(value, str):
            # role, name, tool_call_id, refusal, ...: counted as text, as the published method does.
            parts.text(value)
            if key == "name":
                parts.fixed += TOKENS_PER_NAME
        elif key == "tool_calls":
            _tool_calls(parts, value)
        elif key == "audio" and value is not None:
            # An earlier audio reply, by id: its length is unknown here; at most a context window.
            parts.fixed += (context or UNKNOWN_CONTEXT_TOKENS) * AUDIO_PRICE_RATIO
        elif value is not None:
            parts.json(value)  # function_call and anything else


def _tools(parts: ChatParts, enc_name: str, body: Mapping[str, Any]) -> None:
    per_function, end = _TOOL_FRAMING.get(enc_name, _TOOL_FRAMING[CL100K])
    found = 0
    for key in ("tools", "functions"):
        value = body.get(key)
        if isinstance(value, list):
            for tool in value:
                if tool is not None:
                    parts.json(tool)
                    found += 1
        elif value is not None:
            parts.json(value)
    if found:
        parts.fixed += found * per_function + end


def _prediction(parts: ChatParts, prediction: Any) -> None:
    content = prediction.get("content") if isinstance(prediction, Mapping) else prediction
    if isinstance(content, str):
        if content:
            parts.predicted.append(content)
            parts.chars += len(content)
        return
    if isinstance(content, list):
        for part in content:
            text = part.get("text") if isinstance(part, Mapping) else part
            if isinstance(text, str) and text:
                parts.predicted.append(text)
                parts.chars += len(text)
            elif text is not None:
                encoded = _json(text)
                parts.predicted.append(encoded)
                parts.chars += len(encoded)
    elif content is not None:
        encoded = _json(content)
        parts.predicted.append(encoded)
        parts.chars += len(encoded)


def gather_chat(model: str, body: Mapping[str, Any], context_tokens: int | None = None) -> ChatParts:
    """The texts and known tokens of everything ``body`` can bill on ``model`` (whose context
    window is ``context_tokens``, None when the catalog does not say). Valid JSON in shapes the
    API does not take (``None`` content, non-object messages) is counted too, never an error."""
    parts = ChatParts(fixed=REPLY_PRIMING_TOKENS)
    if not isinstance(body, Mapping):
        return parts
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            _message(parts, model, context_tokens, message)
    elif messages is not None:
        parts.json(messages)
    if "tools" in body or "functions" in body:
        _tools(parts, encoding_name_for_model(model), body)
    if "prediction" in body:
        _prediction(parts, body["prediction"])
    for key, value in body.items():
        if value is not None and key not in UNBILLED_FIELDS and key not in _OWN_FIELDS:
            parts.json(value)  # response_format, tool_choice, web_search_options, unknown fields
    return parts


# --------------------------------------------------------------------------- counting

def count_parts(model: str, parts: ChatParts) -> ChatCount:
    """Count what ``gather_chat`` found."""
    enc = get_encoding(model)
    prompt = parts.fixed
    for text in parts.texts:
        prompt += tokens_in(enc, text)
    predicted = 0
    for text in parts.predicted:
        predicted += tokens_in(enc, text)
    return ChatCount(prompt, predicted)


def count_chat(model: str, body: Mapping[str, Any], context_tokens: int | None = None) -> ChatCount:
    """The worst case of ``body``'s billed tokens on ``model`` (see the module's docstring)."""
    return count_parts(model, gather_chat(model, body, context_tokens))


def count_chat_prompt(model: str, body: Mapping[str, Any], context_tokens: int | None = None) -> int:
    """The prompt tokens of ``count_chat``."""
    return count_chat(model, body, context_tokens).prompt


async def count_chat_async(
    model: str,
    body: Mapping[str, Any],
    context_tokens: int | None = None,
    *,
    offload_threshold_chars: int = DEFAULT_OFFLOAD_THRESHOLD_CHARS,
) -> ChatCount:
    """``count_chat``: the body is walked on the loop (no tokenizer), its texts counted in a
    worker thread when they hold more than the threshold in all (or the model's encoding is not
    loaded yet, which takes a moment), so the event loop is not held up."""
    parts = gather_chat(model, body, context_tokens)
    if encoding_loaded(model) and parts.chars <= offload_threshold_chars:
        return count_parts(model, parts)
    return await offloaded(count_parts, model, parts)


# --------------------------------------------------------------------------- completions

def _function_call_tokens(enc: tiktoken.Encoding, function: Any) -> int:
    if not isinstance(function, Mapping):
        return 0
    total = 0
    for key in ("name", "arguments"):
        value = function.get(key)
        if isinstance(value, str):
            total += tokens_in(enc, value)
        elif value is not None and key == "arguments":
            total += tokens_in(enc, _json(value))
    return total


def _completion_calls_tokens(enc: tiktoken.Encoding, tool_calls: Any) -> int:
    if not isinstance(tool_calls, list):
        return 0
    total = 0
    for call in tool_calls:
        if isinstance(call, Mapping):
            function = call.get("function")
            if function is None and "custom" in call:  # custom tools: {"name", "input"}
                custom = call["custom"]
                if isinstance(custom, Mapping):
                    function = {"name": custom.get("name"), "arguments": custom.get("input")}
            total += TOKENS_PER_TOOL_CALL + _function_call_tokens(enc, function)
    return total


def count_completion(model: str, text: str, tool_calls: list[Any] | None = None) -> int:
    """Estimated completion tokens of generated ``text`` and ``tool_calls``.

    For charging a response whose upstream reported no usage. The text is exact; each tool
    call adds its name, arguments and a small framing (an estimate). Reasoning tokens the
    model did not return cannot be seen and are not counted.
    """
    enc = get_encoding(model)
    total = tokens_in(enc, text) if isinstance(text, str) else 0
    return total + _completion_calls_tokens(enc, tool_calls)
