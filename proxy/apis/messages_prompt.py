"""The worst case of an Anthropic Messages prompt, without a Claude tokenizer.

farebox has no tokenizer for Claude models, and the reservation must never fall short of the
bill, so text is counted by its UTF-8 byte length: every tokenizer that works on bytes (Claude's
among them) makes at most one token per byte. English text comes to about four bytes a token,
so the prompt part of the worst case is about four times the real count for prose, and less
for code or non-Latin scripts. What it costs: more budget held while the request runs (a hard
budget near its limit clamps or refuses earlier than an exact count would). What it does not
cost: the charge, which is always the usage the provider reports.

Counted, as bytes: the system prompt (a string, or its text blocks), every text block of every
message, ``tool_use`` / ``server_tool_use`` blocks (name, id, the input as JSON),
``tool_result`` contents (recursively, with their images and documents), thinking blocks sent
back (the thinking and its signature; a redacted block's data), search results, text
documents (their title, context and text, or their content blocks; a text document with
citations enabled twice, for the framing of its numbered sentences), server tool results sent
back (as JSON: encrypted contents are compressed text, larger than its tokens), every tool
definition as JSON, ``tool_choice``, and every top-level field that is not known to be a
setting, as JSON. Block types farebox does not know count as their JSON.

Added, as tokens (Anthropic publishes none of the framing; these are generous):
``TOKENS_PER_REQUEST`` once, ``TOKENS_PER_MESSAGE`` per message, ``TOKENS_PER_BLOCK`` per
content block; ``TOOL_USE_SYSTEM_TOKENS`` when there are tools (the tool-use system prompt
Anthropic adds: at most 530 tokens in its published table); ``TYPED_TOOL_TOKENS`` per
Anthropic-defined tool (bash, text editor, computer use, web search, ...), whose definition
Anthropic inserts itself (published: 245 for bash, 700 for the text editor, 735 plus a
499-token system prompt for computer use).

Images: Anthropic bills about ``width × height / 750`` tokens after scaling the image down to
its models' largest native size (1568 px on the long edge; 2576 px on the newest) and padding
it to 28 px patches. An image whose size its base64 header gives is scaled to
``IMAGE_MAX_LONG_EDGE`` (never up), padded, and counted so; any other image (a URL, a file id,
a header farebox cannot read) counts as the largest square, ``IMAGE_MAX_TOKENS``.

PDFs and other documents farebox cannot read (base64, URL or file sources) make the prompt
uncountable: it is bounded by the model's context window, ``max_input_tokens`` in the catalog.
The total is capped there too (a longer prompt is refused by the provider, unbilled).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy.apis.chat_media import UNKNOWN_CONTEXT_TOKENS, data_url_image_size
from proxy.tokens import offloaded

__all__ = ["MessagesParts", "gather_messages", "count_bytes", "prompt_bound", "image_tokens_anthropic",
           "TOKENS_PER_REQUEST", "TOKENS_PER_MESSAGE", "TOKENS_PER_BLOCK", "TOOL_USE_SYSTEM_TOKENS",
           "TYPED_TOOL_TOKENS", "IMAGE_MAX_LONG_EDGE", "IMAGE_MAX_TOKENS", "UNBILLED_FIELDS",
           "OFFLOAD_THRESHOLD_CHARS"]

TOKENS_PER_REQUEST = 64
TOKENS_PER_MESSAGE = 16
TOKENS_PER_BLOCK = 8
TOOL_USE_SYSTEM_TOKENS = 1024
TYPED_TOOL_TOKENS = 2048

IMAGE_MAX_LONG_EDGE = 2576
IMAGE_PATCH_PX = 28
IMAGE_PIXELS_PER_TOKEN = 750
IMAGE_MAX_TOKENS = math.ceil(IMAGE_MAX_LONG_EDGE * IMAGE_MAX_LONG_EDGE / IMAGE_PIXELS_PER_TOKEN)  # 8848

# Counting bytes is cheap (no tokenizer: well under a millisecond for this much text); only
# bodies with more text than this are counted in a thread.
OFFLOAD_THRESHOLD_CHARS = 1_000_000
# Enough base64 for the size in any PNG, GIF or WebP header and in most JPEGs.
_IMAGE_HEADER_CHARS = 65536

# Top-level fields that are settings, never rendered into the prompt. Every other field (known
# or not) counts as its JSON, unless counted on its own.
UNBILLED_FIELDS = frozenset({
    "model", "max_tokens", "stream", "temperature", "top_p", "top_k", "stop_sequences", "metadata", "thinking",
    "service_tier", "container", "context_management", "inference_geo",
})
_OWN_FIELDS = frozenset({"messages", "system", "tools"})


@dataclass(slots=True)
class MessagesParts:
    """What ``gather_messages`` found: texts to count as bytes, tokens already known, and whether
    some part cannot be counted at all (the prompt is then the context window)."""

    texts: list[str] = field(default_factory=list)
    fixed: int = TOKENS_PER_REQUEST
    chars: int = 0
    uncountable: bool = False

    def text(self, value: str) -> None:
        if value:
            self.texts.append(value)
            self.chars += len(value)

    def json(self, value: Any) -> None:
        if value is not None:
            self.text(_json(value))


def _json(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # integers beyond 64 bits
        return str(value)


def image_tokens_anthropic(size: tuple[int, int] | None) -> int:
    """The most an image of ``size`` (None: unknown) can bill (see the module's docstring)."""
    if size is None:
        return IMAGE_MAX_TOKENS
    width, height = size
    if width <= 0 or height <= 0:
        return IMAGE_MAX_TOKENS
    long_edge = max(width, height)
    if long_edge > IMAGE_MAX_LONG_EDGE:
        scale = IMAGE_MAX_LONG_EDGE / long_edge
        width, height = max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))
    width = math.ceil(width / IMAGE_PATCH_PX) * IMAGE_PATCH_PX
    height = math.ceil(height / IMAGE_PATCH_PX) * IMAGE_PATCH_PX
    return min(IMAGE_MAX_TOKENS, math.ceil(width * height / IMAGE_PIXELS_PER_TOKEN))


def _image(parts: MessagesParts, block: Mapping[str, Any]) -> None:
    source = block.get("source")
    size = None
    if isinstance(source, Mapping) and source.get("type") == "base64" and isinstance(source.get("data"), str):
        media = source.get("media_type") if isinstance(source.get("media_type"), str) else "image"
        size = data_url_image_size(f"data:{media[:64]};base64," + source["data"][:_IMAGE_HEADER_CHARS])
    parts.fixed += image_tokens_anthropic(size)


def _document(parts: MessagesParts, block: Mapping[str, Any]) -> None:
    for key in ("title", "context"):
        if isinstance(block.get(key), str):
            parts.text(block[key])
    source = block.get("source")
    kind = source.get("type") if isinstance(source, Mapping) else None
    if kind == "text":
        data = source.get("data")
        parts.text(data) if isinstance(data, str) else parts.json(data)
        citations = block.get("citations")
        if isinstance(citations, Mapping) and citations.get("enabled") and isinstance(data, str):
            parts.text(data)  # cited documents are split into numbered sentences: framing per sentence
    elif kind == "content":
        _content(parts, source.get("content"))
    else:  # a PDF (base64, URL, file id): its text and page images cannot be bounded by its size
        parts.uncountable = True


def _block(parts: MessagesParts, block: Any) -> None:
    if isinstance(block, str):
        parts.text(block)
        return
    if not isinstance(block, Mapping):
        parts.json(block)
        return
    parts.fixed += TOKENS_PER_BLOCK
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        parts.text(text) if isinstance(text, str) else parts.json(text)
        parts.json(block.get("citations"))
    elif kind == "image":
        _image(parts, block)
    elif kind == "document":
        _document(parts, block)
    elif kind in ("tool_use", "server_tool_use", "mcp_tool_use"):
        for key in ("id", "name", "server_name"):
            if isinstance(block.get(key), str):
                parts.text(block[key])
        parts.json(block.get("input"))
    elif kind in ("tool_result", "mcp_tool_result"):
        if isinstance(block.get("tool_use_id"), str):
            parts.text(block["tool_use_id"])
        _content(parts, block.get("content"))
    elif kind == "thinking":
        for key in ("thinking", "signature"):
            if isinstance(block.get(key), str):
                parts.text(block[key])
    elif kind == "redacted_thinking":
        parts.json(block.get("data"))
    elif kind == "search_result":
        for key in ("source", "title"):
            if isinstance(block.get(key), str):
                parts.text(block[key])
        _content(parts, block.get("content"))
    else:  # server tool results sent back, blocks farebox does not know: all of it, as JSON
        parts.json(block)


def _content(parts: MessagesParts, content: Any) -> None:
    if isinstance(content, list):
        for block in content:
            _block(parts, block)
    elif isinstance(content, str):
        parts.text(content)
    else:
        parts.json(content)


def _tools(parts: MessagesParts, tools: Any) -> None:
    if not isinstance(tools, list):
        parts.json(tools)
        return
    if tools:
        parts.fixed += TOOL_USE_SYSTEM_TOKENS
    for tool in tools:
        parts.json(tool)
        kind = tool.get("type") if isinstance(tool, Mapping) else None
        if isinstance(kind, str) and kind != "custom":
            parts.fixed += TYPED_TOOL_TOKENS


def gather_messages(body: Mapping[str, Any]) -> MessagesParts:
    """The texts and known tokens of everything ``body`` can bill (walked once, no counting)."""
    parts = MessagesParts()
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if not isinstance(message, Mapping):
                parts.json(message)
                continue
            parts.fixed += TOKENS_PER_MESSAGE
            for key, value in message.items():
                if key == "content":
                    _content(parts, value)
                elif isinstance(value, str):
                    parts.text(value)  # role, and any other string
                else:
                    parts.json(value)
    else:
        parts.json(messages)
    system = body.get("system")
    if system is not None:
        _content(parts, system)
    if body.get("tools") is not None:
        _tools(parts, body["tools"])
    for key, value in body.items():
        if value is not None and key not in UNBILLED_FIELDS and key not in _OWN_FIELDS:
            parts.json(value)  # tool_choice, output formats, unknown fields
    return parts


def count_bytes(texts: list[str]) -> int:
    """The UTF-8 byte length of ``texts`` in all."""
    total = 0
    for text in texts:
        total += len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    return total


def _bound(parts: MessagesParts, counted: int, context: int | None, tool_context: int) -> int:
    prompt = (context or UNKNOWN_CONTEXT_TOKENS) if parts.uncountable else parts.fixed + counted
    if context:
        prompt = min(prompt, context)
    return prompt + tool_context


async def prompt_bound(body: Mapping[str, Any], context: int | None, tool_context: int) -> int:
    """The prompt part of the worst case: ``body`` counted, capped at the context window
    (``context``, None when the catalog does not say), plus ``tool_context`` (the most that
    server tool results can add). Texts are counted in a thread when there is a lot of them."""
    parts = gather_messages(body)
    if parts.uncountable:
        return _bound(parts, 0, context, tool_context)
    if parts.chars <= OFFLOAD_THRESHOLD_CHARS:
        return _bound(parts, count_bytes(parts.texts), context, tool_context)
    return _bound(parts, await offloaded(count_bytes, parts.texts), context, tool_context)
