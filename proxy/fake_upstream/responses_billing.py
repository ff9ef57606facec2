"""What the fake upstream bills for a Responses API request, and the function call it answers
with when the model would call a tool.

The input is billed the way the chat endpoint bills its messages (``billing.bill_chat``, written
apart from farebox's own counting): ``instructions`` as a system message, each input item as the
chat message it stands for (a function call as an assistant message with a tool call, a call's
output as a tool message), tools as chat tools, ``text.format`` like a ``response_format``.
A reasoning item is billed for its summary and a token per 8 bytes of its encrypted content;
any other item for every string in it. Context carried over by ``previous_response_id`` is
billed as what the earlier response took in and gave out.
"""

from __future__ import annotations

from typing import Any

import orjson

from proxy.fake_upstream.billing import bill_chat
from proxy.tokens import count_text

__all__ = ["bill_responses", "chat_messages", "function_arguments", "has_function_output"]

_PART_TYPES = {"input_text": "text", "output_text": "text", "refusal": "refusal"}


def _chat_part(part: Any) -> Any:
    if not isinstance(part, dict):
        return part
    kind = part.get("type")
    if kind in _PART_TYPES:
        return {"type": _PART_TYPES[kind], _PART_TYPES[kind]: part.get(_PART_TYPES[kind])}
    if kind == "input_image":
        return {"type": "image_url", "image_url": {"url": part.get("image_url") or "", "detail": part.get("detail")}}
    if kind == "input_file":
        return {"type": "file", "file": {"filename": part.get("filename"), "file_data": part.get("file_data")}}
    return part


def _content(content: Any) -> Any:
    return [_chat_part(part) for part in content] if isinstance(content, list) else content


def chat_messages(body: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
    """The chat messages a Responses body's instructions and input stand for, and the tokens of
    items no chat message stands for (reasoning)."""
    messages: list[dict[str, Any]] = []
    extra = 0
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        messages.append({"role": "system", "content": instructions})
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind in (None, "message"):
            messages.append({"role": item.get("role") or "user", "content": _content(item.get("content"))})
        elif kind == "function_call":
            messages.append({"role": "assistant", "tool_calls": [
                {"id": item.get("call_id"), "type": "function",
                 "function": {"name": item.get("name"), "arguments": item.get("arguments")}}]})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"),
                             "content": _content(item.get("output"))})
        elif kind == "reasoning":
            summary = item.get("summary") if isinstance(item.get("summary"), list) else []
            extra += sum(count_text(body["model"], s["text"]) for s in summary
                         if isinstance(s, dict) and isinstance(s.get("text"), str))
            extra += len(item.get("encrypted_content") or "") // 8
        else:
            messages.append({"role": "user", "content": [item]})
    return messages, extra


def bill_responses(model: str, body: dict[str, Any]) -> int:
    """The input tokens of one sampling step of ``body`` (without earlier context)."""
    messages, extra = chat_messages({**body, "model": model})
    chat: dict[str, Any] = {"messages": messages}
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        chat["tools"] = [{"type": "function", "function": {k: v for k, v in tool.items() if k != "type"}}
                         if isinstance(tool, dict) and tool.get("type") == "function" else tool for tool in tools]
    text = body.get("text")
    if isinstance(text, dict) and isinstance(text.get("format"), dict) and text["format"].get("type") != "text":
        chat["response_format"] = text["format"]
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = body["tool_choice"]
    prompt, _ = bill_chat(model, chat)
    return prompt + extra


def has_function_output(body: dict[str, Any]) -> bool:
    """Whether the input already carries a function call's output (the model answers in text)."""
    items = body.get("input")
    return isinstance(items, list) and any(
        isinstance(item, dict) and item.get("type") == "function_call_output" for item in items)


def _value(schema: Any, word: str) -> Any:
    kind = schema.get("type") if isinstance(schema, dict) else None
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind in ("integer", "number"):
        return 3
    if kind == "boolean":
        return True
    if kind == "array":
        return [_value(schema.get("items"), word)]
    if kind == "object":
        return _object(schema, word)
    enum = schema.get("enum") if isinstance(schema, dict) else None
    return enum[0] if isinstance(enum, list) and enum else word


def _object(schema: dict[str, Any], word: str) -> dict[str, Any]:
    properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    required = schema.get("required") if isinstance(schema.get("required"), list) else list(properties)
    return {name: _value(properties.get(name), word) for name in required if isinstance(name, str)}


def function_arguments(tool: dict[str, Any], word: str) -> str:
    """Arguments for a call of function ``tool``: its required parameters filled in (strings
    with ``word``, numbers with 3, booleans with true), as JSON text."""
    parameters = tool.get("parameters")
    return orjson.dumps(_object(parameters, word) if isinstance(parameters, dict) else {}).decode()
