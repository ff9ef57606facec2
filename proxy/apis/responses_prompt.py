"""Counting a Responses API request: the worst case of the prompt its body can bill.

Every part of the body the provider bills is counted with the model's encoding, or bounded
from above, never skipped:

- ``instructions``: a developer message (3 tokens of framing, the role and its text);
- ``input`` as a string: one user message (likewise); as a list of items:
  - messages (``type: "message"`` or no type): 3 tokens of framing, the role, and every content
    part: ``input_text`` / ``output_text`` text, ``refusal`` text, ``input_image`` by the image
    bounds of ``proxy/apis/chat_media.py``, ``input_file`` by its name plus the file bound
    there (a whole context window of text and an image per page); output annotations, when
    there are any, by their size;
  - ``function_call`` / ``custom_tool_call``: their JSON text (call id, name, arguments) plus
    the framing of a message and a tool call, as chat counts a tool call;
  - ``function_call_output`` / ``custom_tool_call_output``: a message's framing, the role, the
    call id and the output (a string, or content parts as above);
  - ``reasoning`` items that carry their ``encrypted_content``: their size in bytes;
  - anything else (hosted tool calls replayed, items farebox does not know): its size in bytes;
- ``tools``: each definition's JSON text plus the framing of the published method for
  functions (per tool and once for the block);
- ``text.format`` (a JSON schema) and ``tool_choice`` as their JSON text; any other top-level
  field that is not known to be a setting, by its size in bytes;
- 3 tokens priming the reply.

Sizes in bytes are upper bounds: no token of a byte-level BPE is shorter than one byte.

Some context cannot be seen in the body at all: what ``previous_response_id`` or
``conversation`` carry over, a stored ``prompt`` template, items passed by reference
(``item_reference``, ``reasoning`` items without their ``encrypted_content``, which the provider
loads from its store) and the tool lists a remote ``mcp`` server sends. A body with any of them is
``unseen``: the caller bounds its prompt by the model's context window instead of its count.

Counting runs in two steps as chat's does: ``gather_responses`` walks the body once (cheap, no
tokenizer), ``count_parts`` counts the texts found, in a worker thread when there are many.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.apis.chat_media import data_url_image_size, file_tokens, image_tokens
from proxy.apis.chat_prompt import (
    REPLY_PRIMING_TOKENS,
    TOKENS_PER_MESSAGE,
    TOKENS_PER_TOOL_CALL,
    ChatParts,
    count_parts,
)
from proxy.tokens import (
    CL100K,
    DEFAULT_OFFLOAD_THRESHOLD_CHARS,
    O200K,
    encoding_loaded,
    encoding_name_for_model,
    offloaded,
)

__all__ = ["ResponsesCount", "Unseen", "gather_responses", "count_responses", "count_responses_async",
           "UNBILLED_FIELDS", "FUNCTION_CALL_FRAMING", "FUNCTION_OUTPUT_FRAMING", "byte_size"]

FUNCTION_CALL_FRAMING = TOKENS_PER_MESSAGE + TOKENS_PER_TOOL_CALL
FUNCTION_OUTPUT_FRAMING = TOKENS_PER_MESSAGE + 1  # and the role the output is rendered with

INSTRUCTIONS_ROLE = "developer"  # the role instructions are rendered with (no fewer tokens than "system")

# Tool definitions' framing in the published method: (per tool, end of the block).
TOOL_FRAMING = {O200K: (7, 12), CL100K: (10, 12)}

# Top-level fields that are settings, never rendered into the prompt. Every other field is
# counted: the known ones below on their own, any other one by its size in bytes.
UNBILLED_FIELDS = frozenset({
    "model", "stream", "stream_options", "max_output_tokens", "max_tool_calls", "temperature", "top_p",
    "top_logprobs", "store", "metadata", "service_tier", "user", "safety_identifier", "prompt_cache_key",
    "prompt_cache_retention", "prompt_cache_options", "parallel_tool_calls", "truncation", "include",
    "background", "reasoning", "context_management", "previous_response_id", "conversation", "prompt",
})
_OWN_FIELDS = frozenset({"input", "instructions", "tools", "text", "tool_choice"})
# Item fields that identify an item and are not rendered into the prompt.
_ITEM_METADATA = frozenset({"type", "id", "status"})
_TEXT_PARTS = {"input_text": "text", "output_text": "text", "text": "text", "refusal": "refusal"}


@dataclass(frozen=True, slots=True)
class Unseen:
    """Context the body refers to but does not hold: the field that refers to it, and why."""

    param: str
    why: str


@dataclass(frozen=True, slots=True)
class ResponsesCount:
    """The counted prompt of a body, and the first unseen context found (then the prompt is not
    counted, 0: the context window bounds it)."""

    prompt: int
    unseen: Unseen | None


def byte_size(value: Any) -> int:
    """The size in bytes of ``value`` as UTF-8 JSON (a string: its own bytes)."""
    if isinstance(value, str):
        return len(value.encode())
    try:
        return len(orjson.dumps(value))
    except TypeError:  # integers beyond 64 bits, which JSON parsing can give
        return len(str(value).encode())


class _Walk:
    """One walk over a body: the parts to count, and the first unseen context met."""

    __slots__ = ("model", "context", "parts", "unseen")

    def __init__(self, model: str, context: int | None) -> None:
        self.model, self.context = model, context
        self.parts = ChatParts(fixed=REPLY_PRIMING_TOKENS)
        self.unseen: Unseen | None = None

    def see(self, param: str, why: str) -> None:
        if self.unseen is None:
            self.unseen = Unseen(param, why)

    def bytes(self, value: Any) -> None:
        if value is not None:
            self.parts.fixed += byte_size(value)

    def part(self, part: Any) -> None:
        parts = self.parts
        if isinstance(part, str):
            parts.text(part)
            return
        if not isinstance(part, Mapping):
            self.bytes(part)
            return
        kind = part.get("type")
        field = _TEXT_PARTS.get(kind) if isinstance(kind, str) else None
        if field is not None:
            value = part.get(field)
            if isinstance(value, str):
                parts.text(value)
            else:
                self.bytes(value)
            if part.get("annotations"):
                self.bytes(part["annotations"])
        elif kind == "input_image":
            url = part.get("image_url")
            size = data_url_image_size(url) if isinstance(url, str) else None
            parts.fixed += image_tokens(self.model, part.get("detail"), size)
        elif kind == "input_file":
            if isinstance(part.get("filename"), str):
                parts.text(part["filename"])
            parts.fixed += file_tokens(self.model, self.context)
        else:  # a part farebox does not know: all of it, by its size
            self.bytes(part)

    def content(self, content: Any) -> None:
        if isinstance(content, list):
            for part in content:
                self.part(part)
        elif isinstance(content, str):
            self.parts.text(content)
        else:
            self.bytes(content)

    def message(self, item: Mapping[str, Any]) -> None:
        self.parts.fixed += TOKENS_PER_MESSAGE
        for key, value in item.items():
            if key == "content":
                self.content(value)
            elif key in _ITEM_METADATA:
                continue
            elif isinstance(value, str):
                self.parts.text(value)  # role, and any other text the message carries
            else:
                self.bytes(value)

    def item(self, index: int, item: Any) -> None:
        if isinstance(item, str):  # not an item the API takes; counted all the same, as a message
            self.message({"role": "user", "content": item})
            return
        if not isinstance(item, Mapping):
            self.bytes(item)
            return
        kind = item.get("type")
        if kind == "message" or (kind is None and "role" in item):
            self.message(item)
        elif kind in ("function_call", "custom_tool_call"):
            self.parts.fixed += FUNCTION_CALL_FRAMING
            self.parts.json({k: v for k, v in item.items() if k not in _ITEM_METADATA})
        elif kind in ("function_call_output", "custom_tool_call_output"):
            self.parts.fixed += FUNCTION_OUTPUT_FRAMING
            for key, value in item.items():
                if key == "output":
                    self.content(value)
                elif key not in _ITEM_METADATA:
                    if isinstance(value, str):
                        self.parts.text(value)
                    else:
                        self.bytes(value)
        elif kind == "item_reference":
            self.see("input", f"input[{index}] is an item_reference, whose content the provider loads from its store")
        elif kind == "reasoning" and not item.get("encrypted_content"):
            self.see("input", f"input[{index}] is a reasoning item without its encrypted_content, which the "
                              "provider loads from its store")
        else:  # reasoning with its content, hosted tool calls replayed, unknown items: by size
            self.bytes(item)

    def tools(self, tools: Any) -> None:
        if not isinstance(tools, list):
            self.bytes(tools)
            return
        per_tool, end = TOOL_FRAMING.get(encoding_name_for_model(self.model), TOOL_FRAMING[CL100K])
        found = 0
        for index, tool in enumerate(tools):
            if isinstance(tool, Mapping) and tool.get("type") == "mcp":
                self.see(f"tools[{index}]", "an mcp tool's definitions come from its remote server")
            if tool is not None:
                self.parts.json(tool)
                found += 1
        if found:
            self.parts.fixed += found * per_tool + end

    def text(self, text: Any) -> None:
        if not isinstance(text, Mapping):
            self.bytes(text)
            return
        for key, value in text.items():
            if key == "format":
                if isinstance(value, Mapping) and value.get("type") == "text":
                    continue
                self.parts.json(value)  # a JSON schema, rendered into the prompt
            elif key != "verbosity":
                self.bytes(value)


def gather_responses(model: str, body: Mapping[str, Any],
                     context_tokens: int | None = None) -> tuple[ChatParts, Unseen | None]:
    """The texts and known tokens of everything ``body`` can bill on ``model`` (whose context
    window is ``context_tokens``, None when the catalog does not say), and the first context it
    refers to without holding. Valid JSON in shapes the API does not take is counted too."""
    walk = _Walk(model, context_tokens)
    if not isinstance(body, Mapping):
        return walk.parts, None
    if body.get("previous_response_id") is not None:
        walk.see("previous_response_id", "previous_response_id carries over context farebox does not see")
    if body.get("conversation") is not None:
        walk.see("conversation", "a conversation carries over context farebox does not see")
    if body.get("prompt") is not None:
        walk.see("prompt", "a stored prompt template is rendered by the provider, unseen by farebox")
    if walk.unseen is not None:  # the prompt is bounded by the context window: nothing to count
        return walk.parts, walk.unseen
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        walk.message({"role": INSTRUCTIONS_ROLE, "content": instructions})
    elif isinstance(instructions, list):
        for index, item in enumerate(instructions):
            walk.item(index, item)
    else:
        walk.bytes(instructions)
    items = body.get("input")
    if isinstance(items, str):
        walk.message({"role": "user", "content": items})
    elif isinstance(items, list):
        for index, item in enumerate(items):
            walk.item(index, item)
    else:
        walk.bytes(items)
    if body.get("tools") is not None:
        walk.tools(body["tools"])
    if body.get("text") is not None:
        walk.text(body["text"])
    if body.get("tool_choice") is not None:
        walk.parts.json(body["tool_choice"])
    for key, value in body.items():
        if value is not None and key not in UNBILLED_FIELDS and key not in _OWN_FIELDS:
            walk.bytes(value)
    return walk.parts, walk.unseen


def count_responses(model: str, body: Mapping[str, Any], context_tokens: int | None = None) -> ResponsesCount:
    """The visible prompt of ``body`` on ``model`` and its unseen context (see the module)."""
    parts, unseen = gather_responses(model, body, context_tokens)
    if unseen is not None:
        return ResponsesCount(0, unseen)
    return ResponsesCount(count_parts(model, parts).prompt, None)


async def count_responses_async(
    model: str,
    body: Mapping[str, Any],
    context_tokens: int | None = None,
    *,
    offload_threshold_chars: int = DEFAULT_OFFLOAD_THRESHOLD_CHARS,
) -> ResponsesCount:
    """``count_responses``, its texts counted in a worker thread when they hold more than the
    threshold in all (or the encoding is not loaded yet), so the event loop is not held up."""
    parts, unseen = gather_responses(model, body, context_tokens)
    if unseen is not None:
        return ResponsesCount(0, unseen)
    if encoding_loaded(model) and parts.chars <= offload_threshold_chars:
        return ResponsesCount(count_parts(model, parts).prompt, None)
    counted = await offloaded(count_parts, model, parts)
    return ResponsesCount(counted.prompt, None)
