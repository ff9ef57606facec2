"""Counting a chat completions request: the prompt part of its worst case, and the completion
a response generated when its upstream reported no usage.

Text is counted exactly with the model's encoding (``proxy.tokens``); the chat framing around
it follows the published per-message method (3 tokens per message, 1 more for a ``name``, 3 to
prime the reply). Everything that is an estimate rather than an exact count is said so where
it is computed: tool definitions, tool calls, images, audio.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import orjson
import tiktoken

from proxy.tokens import (
    CL100K,
    DEFAULT_OFFLOAD_THRESHOLD_CHARS,
    O200K,
    bare_model,
    encoding_loaded,
    get_encoding,
    offloaded,
    tokens_in,
)

__all__ = ["count_chat_prompt", "count_chat_prompt_async", "count_completion", "TOKENS_PER_MESSAGE",
           "TOKENS_PER_NAME", "REPLY_PRIMING_TOKENS", "TOKENS_PER_TOOL_CALL", "IMAGE_TOKENS_LOW", "IMAGE_TOKENS_MAX",
           "AUDIO_TOKENS_PER_SECOND", "AUDIO_BYTES_PER_SECOND"]

# Published per-message framing for chat models (gpt-3.5-turbo-0613 onwards, gpt-4,
# gpt-4o, gpt-4o-mini): every message is wrapped as <|start|>{role/name}\n{content}<|end|>\n.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3  # every reply is primed with <|start|>assistant<|message|>

# Tool calls are not covered by the published method. Each call is counted as its function
# name and its arguments plus this framing, the same as a message's. An estimate.
TOKENS_PER_TOOL_CALL = 3

# Images are not downloaded, so their size is unknown; each gets the most its model can bill
# for one image (the upstream's usage settles the real amount). On the tile-based models
# (gpt-4o, gpt-4.1, o-series, ...) detail=low is a fixed 85 tokens; otherwise the largest
# image is scaled to fit 2048×2048, then its short side to 768 → at most 2×4 = 8 tiles of
# 512 px at 170 tokens each, plus 85 = 1445. Some models bill images differently: gpt-4o-mini
# at 2833 base + 5667 per tile, and the patch-based minis at up to 1536 patches of 32 px
# times a per-model factor whatever the detail. First matching prefix wins.
IMAGE_TOKENS_LOW = 85
IMAGE_TOKENS_MAX = 85 + 8 * 170
_IMAGE_TOKENS_BY_MODEL: tuple[tuple[str, tuple[int, int]], ...] = (
    # prefix: (detail=low, otherwise)
    ("gpt-4o-mini", (2833, 2833 + 8 * 5667)),
    ("gpt-4.1-mini", (2489, 2489)),  # 1536 × 1.62
    ("gpt-4.1-nano", (3779, 3779)),  # 1536 × 2.46
    ("o4-mini", (2642, 2642)),  # 1536 × 1.72
)

# Input audio is billed at about 10 tokens per second. Duration is guessed from the decoded
# size at a low bitrate (4000 bytes/s, e.g. 32 kbit/s mp3), so compressed audio is not
# undercounted and uncompressed wav is overcounted. An estimate.
AUDIO_TOKENS_PER_SECOND = 10
AUDIO_BYTES_PER_SECOND = 4000

# Tool definitions: the published method renders each function as "name:description" and
# each parameter as "name:type:description", plus fixed framing that differs between the
# o200k and the cl100k chat models. Nested schemas (objects, arrays, defaults, ...) are not
# covered by the method; their JSON is counted instead, which overcounts a little.
_TOOL_FRAMING = {
    # encoding: (per function, parameters start, per parameter, enum start, per enum item, end)
    O200K: (7, 3, 3, -3, 3, 12),
    CL100K: (10, 3, 3, -3, 3, 12),
}


def _image_tokens(model: str, part: Mapping[str, Any]) -> int:
    image = part.get("image_url")
    detail = image.get("detail") if isinstance(image, Mapping) else None
    low, high = IMAGE_TOKENS_LOW, IMAGE_TOKENS_MAX
    bare = bare_model(model)
    for prefix, costs in _IMAGE_TOKENS_BY_MODEL:
        if bare.startswith(prefix):
            low, high = costs
            break
    return low if detail == "low" else high


def _audio_tokens(part: Mapping[str, Any]) -> int:
    audio = part.get("input_audio")
    data = audio.get("data") if isinstance(audio, Mapping) else None
    if not isinstance(data, str) or not data:
        return 0
    decoded_bytes = len(data) * 3 // 4  # base64, without decoding it
    return math.ceil(decoded_bytes / AUDIO_BYTES_PER_SECOND * AUDIO_TOKENS_PER_SECOND)


def _content_tokens(enc: tiktoken.Encoding, model: str, content: Any) -> int:
    if isinstance(content, str):
        return tokens_in(enc, content)
    if not isinstance(content, list):
        return 0
    total = 0
    for part in content:
        if isinstance(part, str):
            total += tokens_in(enc, part)
            continue
        if not isinstance(part, Mapping):
            continue
        kind = part.get("type")
        if kind == "image_url":
            total += _image_tokens(model, part)
        elif kind == "input_audio":
            total += _audio_tokens(part)
        elif kind == "file":
            # File contents (PDFs) are extracted upstream and cannot be counted here; only
            # the file name is. The upstream's usage settles the real amount.
            file = part.get("file")
            if isinstance(file, Mapping) and isinstance(file.get("filename"), str):
                total += tokens_in(enc, file["filename"])
        else:
            # "text", "refusal", and unknown part types that carry text.
            for key in ("text", "refusal"):
                value = part.get(key)
                if isinstance(value, str):
                    total += tokens_in(enc, value)
    return total


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


def _tool_calls_tokens(enc: tiktoken.Encoding, tool_calls: Any) -> int:
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


def _message_tokens(enc: tiktoken.Encoding, model: str, message: Any) -> int:
    if not isinstance(message, Mapping):
        return 0
    total = TOKENS_PER_MESSAGE
    for key, value in message.items():
        if key == "content":
            total += _content_tokens(enc, model, value)
        elif key == "tool_calls":
            total += _tool_calls_tokens(enc, value)
        elif key == "function_call":
            total += _function_call_tokens(enc, value)
        elif isinstance(value, str):
            # role, name, tool_call_id, ...: counted as text, as the published method does.
            total += tokens_in(enc, value)
            if key == "name":
                total += TOKENS_PER_NAME
    return total


def _json(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return str(value)


def _strip_period(text: str) -> str:
    return text[:-1] if text.endswith(".") else text


def _function_definition_tokens(enc: tiktoken.Encoding, function: Mapping[str, Any]) -> int:
    per_function, params_start, per_param, enum_start, per_enum_item, _ = _TOOL_FRAMING[enc.name]
    name = function.get("name")
    description = function.get("description")
    name = name if isinstance(name, str) else ""
    description = _strip_period(description) if isinstance(description, str) else ""
    total = per_function + tokens_in(enc, f"{name}:{description}")
    parameters = function.get("parameters")
    properties = parameters.get("properties") if isinstance(parameters, Mapping) else None
    if not isinstance(properties, Mapping) or not properties:
        return total
    total += params_start
    for key, prop in properties.items():
        total += per_param
        if not isinstance(prop, Mapping):
            total += tokens_in(enc, str(key))
            continue
        enum = prop.get("enum")
        if isinstance(enum, list):
            total += enum_start
            for item in enum:
                total += per_enum_item + tokens_in(enc, item if isinstance(item, str) else _json(item))
        kind = prop.get("type")
        kind = kind if isinstance(kind, str) else _json(kind) if kind is not None else ""
        p_desc = prop.get("description")
        p_desc = _strip_period(p_desc) if isinstance(p_desc, str) else ""
        total += tokens_in(enc, f"{key}:{kind}:{p_desc}")
        # Not in the published method: nested schema keywords, counted as their JSON.
        rest = {k: v for k, v in prop.items() if k not in ("type", "description", "enum")}
        if rest:
            total += tokens_in(enc, _json(rest))
    return total


def _tools_tokens(enc: tiktoken.Encoding, body: Mapping[str, Any]) -> int:
    functions: list[Mapping[str, Any]] = []
    tools = body.get("tools")
    if isinstance(tools, list):
        for tool in tools:
            if not isinstance(tool, Mapping):
                continue
            function = tool.get("function")
            if isinstance(function, Mapping):
                functions.append(function)
            elif isinstance(tool.get("custom"), Mapping):
                functions.append(tool["custom"])
    legacy = body.get("functions")
    if isinstance(legacy, list):
        functions.extend(f for f in legacy if isinstance(f, Mapping))
    if not functions:
        return 0
    end = _TOOL_FRAMING[enc.name][5]
    return sum(_function_definition_tokens(enc, f) for f in functions) + end


def count_chat_prompt(model: str, body: Mapping[str, Any]) -> int:
    """Prompt tokens of a chat completions request ``body`` for ``model``.

    Messages with their framing, names, tool calls, tool results and legacy function calls,
    plus the ``tools`` / ``functions`` definitions. Shapes that are valid JSON but unexpected
    (``None`` content, unknown part types, non-dict messages) are skipped, never an error.
    """
    enc = get_encoding(model)
    if not isinstance(body, Mapping):
        return 0
    total = REPLY_PRIMING_TOKENS
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            total += _message_tokens(enc, model, message)
    return total + _tools_tokens(enc, body)


def count_completion(model: str, text: str, tool_calls: list[Any] | None = None) -> int:
    """Estimated completion tokens of generated ``text`` and ``tool_calls``.

    For charging a response whose upstream reported no usage. The text is exact; each tool
    call adds its name, arguments and a small framing (an estimate). Reasoning tokens the
    model did not return cannot be seen and are not counted.
    """
    enc = get_encoding(model)
    total = tokens_in(enc, text) if isinstance(text, str) else 0
    return total + _tool_calls_tokens(enc, tool_calls)


# --------------------------------------------------------------------------- off the event loop

def _text_exceeds(body: Mapping[str, Any], threshold: int) -> bool:
    """Whether the texts of ``body``'s messages (contents, text parts, tool call arguments)
    hold more than ``threshold`` characters in all."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return False
    size = 0
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        content = message.get("content")
        if isinstance(content, str):
            size += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, Mapping):
                    text = part.get("text")
                    if isinstance(text, str):
                        size += len(text)
        calls = message.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                function = call.get("function") if isinstance(call, Mapping) else None
                if isinstance(function, Mapping):
                    arguments = function.get("arguments")
                    if isinstance(arguments, str):
                        size += len(arguments)
        if size > threshold:
            return True
    return False


async def count_chat_prompt_async(
    model: str,
    body: Mapping[str, Any],
    *,
    offload_threshold_chars: int = DEFAULT_OFFLOAD_THRESHOLD_CHARS,
) -> int:
    """``count_chat_prompt``, in a worker thread when the body holds more text than the
    threshold (or the model's encoding is not loaded yet, which takes a moment), so the event
    loop is not held up."""
    inline = encoding_loaded(model) and (
        not isinstance(body, Mapping) or not _text_exceeds(body, offload_threshold_chars)
    )
    if inline:
        return count_chat_prompt(model, body)
    return await offloaded(count_chat_prompt, model, body)
