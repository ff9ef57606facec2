"""The fake upstream's Anthropic Messages API: ``POST /v1/messages`` (a message, or its stream
of ``event:`` lines) and ``POST /v1/messages/count_tokens``, answered the way Anthropic does,
errors included (``{"type": "error", "error": {"type", "message"}}``).

The prompt is billed here on its own, simply, with tiktoken (cl100k): every text, tool input
and tool definition, 3 tokens per message, Anthropic's published tool-use system prompt
(``TOOL_SYSTEM_TOKENS``) when there are tools and ``TYPED_TOOL_TOKENS`` per Anthropic-defined
tool, an image at ``width × height / 750`` after scaling its long edge to 1568 px (at most
``IMAGE_TOKENS``, which an image of unknown size gets), a PDF at a token per 4 bytes of its
base64. A prompt over ``CONTEXT_TOKENS`` (``CONTEXT_1M_TOKENS`` with the ``context-1m`` beta)
is refused with 400, as Anthropic does. Each web search adds ``SEARCH_RESULT_TOKENS`` of
results to the input. Replies are the package's one-token words, at most ``max_tokens``
(``stop_reason: "max_tokens"`` when cut there); with thinking enabled, a thinking block of
``THINKING_TOKENS`` words (fewer for a small budget) comes first, counted in ``output_tokens``.

Controls, besides the package's X-Fake-* headers (status, usage, no usage, reply tokens, chunk
delay, latency, drop after N events, which here count ``event:`` blocks):

    X-Fake-Cache-Read: N        that many of the prompt's tokens reported as cache reads
    X-Fake-Cache-Write-5m: N    ... as 5-minute cache writes
    X-Fake-Cache-Write-1h: N    ... as 1-hour cache writes (input_tokens is what is left)
    X-Fake-Web-Searches: N      the model searches N times (at most its web search tools'
                                max_uses in all; none without such a tool)
    X-Fake-Stream-Error: TYPE   a stream ends after its first text delta with ``event: error``
                                of this type (e.g. overloaded_error), no message_delta
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace
from typing import Any

import orjson
from aiohttp import web

from proxy.fake_upstream.billing import base64_image_size
from proxy.fake_upstream.controls import BODY, INVALID_JSON, Controls, Refused, read_controls
from proxy.fake_upstream.replies import Reply, chat_seed, make_reply, send_body, send_stream, split_pieces
from proxy.tokens import count_text

__all__ = ["messages_endpoint", "count_tokens_endpoint", "bill_messages", "error_body"]

TOOL_SYSTEM_TOKENS = 346
TYPED_TOOL_TOKENS = 700
IMAGE_TOKENS = 1600
IMAGE_LONG_EDGE = 1568
SEARCH_RESULT_TOKENS = 500
THINKING_TOKENS = 8
SIGNATURE = "ZmFrZS10aGlua2luZy1zaWduYXR1cmU="
CONTEXT_TOKENS = 200_000
CONTEXT_1M_TOKENS = 1_000_000

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
               403: "permission_error", 404: "not_found_error", 413: "request_too_large",
               429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}


def error_body(status: int, message: str, type_: str | None = None) -> bytes:
    kind = type_ or ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})


def _refused(status: int, message: str) -> Refused:
    return Refused(status, message, body=error_body(status, message))


# --- billing ---------------------------------------------------------------------------------

def _image_size(source: Any) -> tuple[int, int] | None:
    if not isinstance(source, dict) or source.get("type") != "base64" or not isinstance(source.get("data"), str):
        return None
    return base64_image_size(source["data"])


def _image(source: Any) -> int:
    size = _image_size(source)
    if size is None:
        return IMAGE_TOKENS
    width, height = size
    if max(width, height) > IMAGE_LONG_EDGE:
        scale = IMAGE_LONG_EDGE / max(width, height)
        width, height = int(width * scale), int(height * scale)
    return min(IMAGE_TOKENS, math.ceil(width * height / 750))


def _blocks(count: Any, content: Any) -> int:
    if isinstance(content, str):
        return count(content)
    if not isinstance(content, list):
        return count(orjson.dumps(content).decode()) if content is not None else 0
    total = 0
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            total += count(block.get("text") or "")
        elif kind == "image":
            total += _image(block.get("source"))
        elif kind == "document":
            source = block.get("source") or {}
            if source.get("type") == "text":
                total += count(source.get("data") or "")
            elif source.get("type") == "content":
                total += _blocks(count, source.get("content"))
            else:
                total += math.ceil(len(source.get("data") or "") / 4) or IMAGE_TOKENS
        elif kind in ("tool_use", "server_tool_use"):
            total += count(block.get("name") or "") + count(orjson.dumps(block.get("input")).decode())
        elif kind == "tool_result":
            total += _blocks(count, block.get("content"))
        elif kind == "thinking":
            total += count(block.get("thinking") or "")
        elif kind == "redacted_thinking":
            total += count(block.get("data") or "")
        else:
            total += count(orjson.dumps(block).decode())
    return total


def bill_messages(model: str, body: dict[str, Any]) -> int:
    """The input tokens of a Messages ``body`` (before any server tool runs)."""

    def count(text: str) -> int:
        return count_text(model, text)

    total = _blocks(count, body.get("system")) if body.get("system") is not None else 0
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            total += 3 + _blocks(count, message.get("content"))
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
    if tools:
        total += TOOL_SYSTEM_TOKENS
        for tool in tools:
            typed = isinstance(tool.get("type"), str) and tool["type"] != "custom"
            total += count(orjson.dumps(tool).decode()) + (TYPED_TOOL_TOKENS if typed else 0)
    if body.get("tool_choice") is not None:
        total += count(orjson.dumps(body["tool_choice"]).decode())
    return total


# --- requests --------------------------------------------------------------------------------

def _header_count(request: web.Request, name: str) -> int:
    raw = request.headers.get(name)
    if raw is None:
        return 0
    if not raw.isdigit():
        raise _refused(400, f"{name} must be a whole number, not {raw!r}")
    return int(raw)


def _message_body(request: web.Request, *, needs_max_tokens: bool) -> tuple[dict[str, Any], str]:
    body = request[BODY]
    if body is INVALID_JSON or not isinstance(body, dict):
        raise _refused(400, "The request body is not valid: it must be a JSON object.")
    for name in ("model", "messages") + (("max_tokens",) if needs_max_tokens else ()):
        if body.get(name) is None:
            raise _refused(400, f"{name}: Field required")
    if not isinstance(body["model"], str) or not isinstance(body["messages"], list):
        raise _refused(400, "model: Input should be a valid string; messages: Input should be a valid list")
    if needs_max_tokens:
        bound = body["max_tokens"]
        if isinstance(bound, bool) or not isinstance(bound, int) or bound < 1:
            raise _refused(400, "max_tokens: Input should be greater than or equal to 1")
    return body, body["model"]


def _prompt_tokens(request: web.Request, body: dict[str, Any], model: str) -> int:
    tokens = bill_messages(model, body)
    limit = CONTEXT_1M_TOKENS if "context-1m" in request.headers.get("anthropic-beta", "") else CONTEXT_TOKENS
    if tokens > limit:
        raise _refused(400, f"prompt is too long: {tokens} tokens > {limit} maximum")
    return tokens


def _searches(request: web.Request, body: dict[str, Any]) -> int:
    allowed = sum(t.get("max_uses") or 0 for t in body.get("tools") or []
                  if isinstance(t, dict) and str(t.get("type", "")).startswith("web_search_"))
    return min(_header_count(request, "X-Fake-Web-Searches"), allowed)


def _usage(request: web.Request, prompt: int, output: int, searches: int) -> dict[str, Any]:
    left = prompt
    read = min(_header_count(request, "X-Fake-Cache-Read"), left)
    left -= read
    write_5m = min(_header_count(request, "X-Fake-Cache-Write-5m"), left)
    left -= write_5m
    write_1h = min(_header_count(request, "X-Fake-Cache-Write-1h"), left)
    left -= write_1h
    usage: dict[str, Any] = {
        "input_tokens": left, "cache_creation_input_tokens": write_5m + write_1h, "cache_read_input_tokens": read,
        "cache_creation": {"ephemeral_5m_input_tokens": write_5m, "ephemeral_1h_input_tokens": write_1h},
        "output_tokens": output, "service_tier": "standard",
    }
    if searches:
        usage["server_tool_use"] = {"web_search_requests": searches, "web_fetch_requests": 0}
    return usage


def _thinking(state: Any, model: str, body: dict[str, Any], controls: Controls, seed: int) -> Reply | None:
    """With thinking enabled: THINKING_TOKENS of thinking (fewer for a small budget or bound)."""
    thinking = body.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return None
    budget = thinking.get("budget_tokens")
    length = min(THINKING_TOKENS, budget if isinstance(budget, int) else THINKING_TOKENS, body["max_tokens"] - 1)
    return make_reply(state, model, seed + 7, replace(controls, reply_tokens=length), None) if length > 0 else None


def _search_blocks(number: int, searches: int) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for index in range(searches):
        tool_id = f"srvtoolu_fb{number:012d}{index:04d}"
        blocks.append({"type": "server_tool_use", "id": tool_id, "name": "web_search",
                       "input": {"query": f"query {index + 1}"}})
        blocks.append({"type": "web_search_tool_result", "tool_use_id": tool_id, "content": [
            {"type": "web_search_result", "url": f"https://example.com/{index + 1}", "title": f"Result {index + 1}",
             "encrypted_content": "ZmFrZQ==", "page_age": None}]})
    return blocks


async def messages_endpoint(request: web.Request, state: Any) -> web.StreamResponse:
    """``POST /v1/messages``; ``state`` is the server's ``FakeUpstream``."""
    controls = read_controls(request, state.options)
    if controls.latency_s:
        await asyncio.sleep(controls.latency_s)
    if controls.status is not None:
        raise Refused(controls.status, "forced", body=controls.error_body or error_body(
            controls.status, f"Error {controls.status}, as asked for with X-Fake-Status."))
    body, model = _message_body(request, needs_max_tokens=True)
    stream = body.get("stream") is True
    prompt = _prompt_tokens(request, body, model)
    searches = _searches(request, body)
    seed = chat_seed(body["messages"])
    thought = _thinking(state, model, body, controls, seed)
    thinking_tokens = thought.tokens if thought is not None else 0
    reply = make_reply(state, model, seed, controls, body["max_tokens"] - thinking_tokens)
    number = state.next_number()
    usage: dict[str, Any] | None = _usage(request, prompt + searches * SEARCH_RESULT_TOKENS,
                                          thinking_tokens + reply.tokens, searches)
    if controls.no_usage:
        usage = None
    elif controls.usage is not None:
        usage = controls.usage
    stop_reason = "max_tokens" if reply.finish_reason == "length" else "end_turn"
    message: dict[str, Any] = {"id": f"msg_fb{number:020d}", "type": "message", "role": "assistant", "model": model}
    request_id = f"req_fb{number:024d}"
    leading = _search_blocks(number, searches)
    if thought is not None:
        leading.insert(0, {"type": "thinking", "thinking": thought.text, "signature": SIGNATURE})
    if not stream:
        out = {**message, "content": [*leading, {"type": "text", "text": reply.text}],
               "stop_reason": stop_reason, "stop_sequence": None}
        if usage is not None:
            out["usage"] = usage
        return send_body(controls, orjson.dumps(out), request_id)
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    if usage is not None:  # before any search: its results enter the input later
        start["usage"] = _usage(request, prompt, 1, 0) if controls.usage is None else usage
    events = [_event("message_start", {"type": "message_start", "message": start})]
    index = 0
    for block in leading:
        empty = {**block, "input": {}} if block["type"] == "server_tool_use" else block
        if block["type"] == "thinking":
            empty = {"type": "thinking", "thinking": "", "signature": ""}
        events.append(_event("content_block_start", {"type": "content_block_start", "index": index,
                                                     "content_block": empty}))
        if block["type"] == "server_tool_use":
            events.append(_delta(index, {"type": "input_json_delta",
                                         "partial_json": orjson.dumps(block["input"]).decode()}))
        elif block["type"] == "thinking":
            events.append(_delta(index, {"type": "thinking_delta", "thinking": block["thinking"]}))
            events.append(_delta(index, {"type": "signature_delta", "signature": SIGNATURE}))
        events.append(_event("content_block_stop", {"type": "content_block_stop", "index": index}))
        index += 1
    events.append(_event("content_block_start", {"type": "content_block_start", "index": index,
                                                 "content_block": {"type": "text", "text": ""}}))
    events.append(_event("ping", {"type": "ping"}))
    pieces = split_pieces(reply.pieces, state.options.chunks)
    failure = request.headers.get("X-Fake-Stream-Error")
    for position, piece in enumerate(pieces):
        events.append(_delta(index, {"type": "text_delta", "text": piece}))
        if failure and position == 0:
            break
    if failure:
        events.append(_event("error", {"type": "error", "error": {"type": failure, "message": "Overloaded"}}))
        events.append(b"")  # send_stream keeps the last event back only when dropping
        return await send_stream(request, controls, events, request_id)
    events.append(_event("content_block_stop", {"type": "content_block_stop", "index": index}))
    delta: dict[str, Any] = {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None}}
    if usage is not None:
        delta["usage"] = {key: usage[key] for key in ("output_tokens", "input_tokens", "cache_read_input_tokens",
                                                      "cache_creation_input_tokens", "server_tool_use")
                          if key in usage} if controls.usage is None else usage
    events.append(_event("message_delta", delta))
    events.append(_event("message_stop", {"type": "message_stop"}))
    return await send_stream(request, controls, events, request_id)


async def count_tokens_endpoint(request: web.Request, state: Any) -> web.StreamResponse:
    """``POST /v1/messages/count_tokens``: the input tokens the message would bill."""
    controls = read_controls(request, state.options)
    if controls.status is not None:
        raise Refused(controls.status, "forced", body=controls.error_body or error_body(
            controls.status, f"Error {controls.status}, as asked for with X-Fake-Status."))
    body, model = _message_body(request, needs_max_tokens=False)
    tokens = _prompt_tokens(request, body, model)
    return send_body(controls, orjson.dumps({"input_tokens": tokens}), f"req_fb{state.next_number():024d}")


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def _delta(index: int, delta: dict[str, Any]) -> bytes:
    return _event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
