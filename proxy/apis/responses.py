"""The Responses API (``POST /v1/responses``) as an ``ApiShape``.

Parse: a JSON object with a string ``model``; ``input`` a string or a list of items (it may be
left out when ``previous_response_id``, ``conversation`` or ``prompt`` gives the context);
well-typed ``stream``, ``max_output_tokens``, ``max_tool_calls``, ``instructions`` and ``tools``.
``background: true`` is refused: the response would be generated after this request ends, with
nothing there to measure and settle it. Hosted tools whose fees farebox cannot price (file
search, code interpreter, image generation, computer use, ...) are refused with
``unsupported_tool``; web search (priced per call by the catalog's ``web_search_call``) and
remote ``mcp`` servers (tokens only) are metered. Web search on a model the catalog has no
per-call price for is refused too (``unsupported_tool``, when counted): it would cost nothing.
Nothing is forwarded or recorded for a body that fails here.

Count (``proxy/apis/responses_prompt.py``): the body's prompt, or the model's context window
(``max_input_tokens``) when the body refers to context farebox cannot see; never more than
that window, which the provider does not exceed (a longer prompt is refused, unbilled). Every
built-in tool call (a web search, an mcp call) can bring up to another window of context into
the next step of the response, so each adds ``max_input_tokens``; and each web search its price.
Built-in calls are bounded by ``max_tool_calls``: farebox sets it to ``DEFAULT_MAX_TOOL_CALLS``
when the client did not, so the bound holds by construction.

Forward: the client's bytes, unless farebox sets ``max_output_tokens`` (a clamped or required
bound) or ``max_tool_calls``.

Measure: ``usage`` of the response (the terminal ``response.completed`` / ``response.incomplete``
/ ``response.failed`` event of a stream), ``input_tokens`` of which ``cached_tokens`` cached,
``output_tokens`` of which ``reasoning_tokens`` reasoning; web searches from the response's
``tool_usage.web_search.num_requests`` where it says, else its ``web_search_call`` items. Without
usage, the output is counted from the text and function calls seen, and marked estimated.
The stream is forwarded unchanged, event by event (it has no ``[DONE]``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from pricing.catalog import ModelPrice
from proxy.apis import Measured
from proxy.apis.body import json_type, parse_json_object, positive_int, required_model
from proxy.apis.responses_prompt import count_responses_async
from proxy.apis.responses_usage import ResponsesStreamMeter, measured_response
from proxy.errors import BadRequest

__all__ = ["RESPONSES", "ResponsesApi", "ResponsesRequest", "parse_responses", "DEFAULT_MAX_TOOL_CALLS",
           "MAX_TOOL_CALLS", "MIN_OUTPUT_TOKENS", "MAX_OUTPUT_TOKENS", "CLIENT_TOOLS", "TOKEN_ONLY_TOOLS",
           "is_web_search"]

MAX_OUTPUT_TOKENS = 2**31 - 1  # no model generates more; larger numbers cannot be priced
MIN_OUTPUT_TOKENS = 16         # the API's smallest max_output_tokens: clamping stops there
DEFAULT_MAX_TOOL_CALLS = 8     # set on a request with built-in tools that names no max_tool_calls
MAX_TOOL_CALLS = 1024          # more built-in calls than this cannot be priced sensibly

CLIENT_TOOLS = frozenset({"function", "custom"})  # run by the client: tokens only, no fee
TOKEN_ONLY_TOOLS = frozenset({"mcp"})              # built-in calls billed as tokens, no fee per call


def is_web_search(kind: str) -> bool:
    """Whether a tool type is the hosted web search (``web_search``, ``web_search_preview`` and
    their dated versions)."""
    return kind == "web_search" or kind.startswith("web_search_")


@dataclass(slots=True)
class ResponsesRequest:
    """A Responses API request as farebox sees it."""

    body: dict[str, Any]
    model: str
    stream: bool
    max_output: int | None     # max_output_tokens as the client sent it
    tool_calls: int            # the most built-in tool calls the response can make
    set_tool_calls: bool       # farebox sets max_tool_calls (the client did not)
    hosted_calls: int          # of those, the calls billed per call (web searches)
    n: int = 1
    output_extra: int = 0
    min_output: int = MIN_OUTPUT_TOKENS
    search_param: str | None = None  # where web search is offered ("tools[i]", "prompt"), if anywhere
    seen_prompt: int = 0       # the prompt before built-in calls (set when counted)
    call_context: int = 0      # the context each built-in call can add (set when counted)
    bound_field = "max_output_tokens"
    prompt_field = "input"


def _bad_type(param: str, expected: str, value: Any) -> BadRequest:
    return BadRequest(f"Invalid type for '{param}': expected {expected}, got {json_type(value)}.",
                      param=param, code="invalid_type")


def _tool_kinds(tools: Any) -> tuple[str | None, bool]:
    """(where a web search is offered, None if nowhere; whether another built-in tool is) of
    ``tools``; a 400 for what farebox cannot meter."""
    if tools is None:
        return None, False
    if not isinstance(tools, list):
        raise _bad_type("tools", "an array", tools)
    searches: str | None = None
    others = False
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise _bad_type(f"tools[{index}]", "an object", tool)
        kind = tool.get("type")
        if not isinstance(kind, str):
            raise _bad_type(f"tools[{index}].type", "a string", kind)
        if kind in CLIENT_TOOLS:
            continue
        if is_web_search(kind):
            searches = searches or f"tools[{index}]"
        elif kind in TOKEN_ONLY_TOOLS:
            others = True
        else:
            raise BadRequest(
                f"farebox cannot meter the hosted tool '{kind}' (tools[{index}]): the provider bills it at "
                f"prices farebox does not know, so a budget could not hold. Tools farebox meters: function, "
                f"custom, web_search, web_search_preview and mcp.",
                param=f"tools[{index}]", code="unsupported_tool")
    return searches, others


def _tool_call_limit(body: dict[str, Any]) -> int | None:
    value = body.get("max_tool_calls")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad_type("max_tool_calls", "an integer", value)
    if not 0 <= value <= MAX_TOOL_CALLS:
        raise BadRequest(f"Invalid value for 'max_tool_calls': must be between 0 and {MAX_TOOL_CALLS}, got {value}.",
                         param="max_tool_calls", code="invalid_value")
    return value


def parse_responses(raw: bytes, headers: Mapping[str, str] | None = None) -> ResponsesRequest:
    body = parse_json_object(raw)
    model = required_model(body)
    background = body.get("background")
    if background is not None and not isinstance(background, bool):
        raise _bad_type("background", "a boolean", background)
    if background:
        raise BadRequest("farebox cannot meter a background response: it is generated after this request "
                         "ends, with nothing left to measure and settle it. Send the request without "
                         "'background' (a stream gives the same freedom to leave and come back to nothing).",
                         param="background", code="unsupported_parameter")
    previous = body.get("previous_response_id")
    if previous is not None and not isinstance(previous, str):
        raise _bad_type("previous_response_id", "a string", previous)
    conversation = body.get("conversation")
    if conversation is not None and not isinstance(conversation, (str, dict)):
        raise _bad_type("conversation", "a string or an object", conversation)
    prompt = body.get("prompt")
    if prompt is not None and not isinstance(prompt, dict):
        raise _bad_type("prompt", "an object", prompt)
    items = body.get("input")
    if items is None:
        if previous is None and conversation is None and prompt is None:
            raise BadRequest("Missing required parameter: 'input'.", param="input", code="missing_required_parameter")
    elif not isinstance(items, (str, list)):
        raise _bad_type("input", "a string or an array of items", items)
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise _bad_type("instructions", "a string", instructions)
    text = body.get("text")
    if text is not None and not isinstance(text, dict):
        raise _bad_type("text", "an object", text)
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _bad_type("stream", "a boolean", stream)
    max_output = positive_int(body, "max_output_tokens", MAX_OUTPUT_TOKENS)
    limit = _tool_call_limit(body)
    searches, others = _tool_kinds(body.get("tools"))
    # A stored prompt template may bring its own tools, web search among them.
    searches = searches or ("prompt" if prompt is not None else None)
    tool_calls = 0
    if searches or others:
        tool_calls = DEFAULT_MAX_TOOL_CALLS if limit is None else limit
    return ResponsesRequest(body=body, model=model, stream=stream, max_output=max_output, tool_calls=tool_calls,
                            set_tool_calls=bool(searches or others) and limit is None,
                            hosted_calls=tool_calls if searches else 0, search_param=searches)


class ResponsesApi:
    """The ``ApiShape`` of the Responses API."""

    __slots__ = ()

    name = "responses"
    upstream_path = "/responses"
    family = "openai"

    parse = staticmethod(parse_responses)

    async def count_prompt(self, request: ResponsesRequest, price: ModelPrice) -> int:
        if request.hosted_calls and price.web_search_call is None:
            raise BadRequest(
                f"farebox has no price for web search calls on model '{price.name}' (the catalog's "
                f"web_search_call), so this request's searches could not be metered. Add web_search_call to its "
                f"price in a price file, or set 'max_tool_calls' to 0.",
                param=request.search_param, code="unsupported_tool")
        context = price.max_input_tokens
        counted = await count_responses_async(request.model, request.body, context)
        unseen = counted.unseen
        if not context and (unseen is not None or request.tool_calls):
            why = unseen.why if unseen is not None else "each built-in tool call can add up to a context window"
            param = unseen.param if unseen is not None else request.search_param or "tools"
            raise BadRequest(f"farebox cannot bound this request's prompt: {why}, and the catalog gives no "
                             f"max_input_tokens (context window) for model '{price.name}'. Add max_input_tokens "
                             f"to its price in a price file.", param=param, code="unknown_context_window")
        prompt = counted.prompt if unseen is None else context
        if context:
            prompt = min(prompt, context)
        request.seen_prompt = prompt
        request.call_context = context or 0
        return prompt + request.tool_calls * request.call_context

    def forward_body(self, raw: bytes, request: ResponsesRequest, bound: int | None) -> bytes:
        changed = False
        body = request.body
        if bound is not None:
            body["max_output_tokens"] = bound
            changed = True
        if request.set_tool_calls:
            body["max_tool_calls"] = request.tool_calls
            changed = True
        return orjson.dumps(body) if changed else raw

    def measure_body(self, payload: bytes, request: ResponsesRequest, prompt_tokens: int) -> Measured:
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            obj = None
        return measured_response(request, obj if isinstance(obj, dict) else None, prompt_tokens)

    def stream_meter(self, request: ResponsesRequest) -> ResponsesStreamMeter:
        return ResponsesStreamMeter(request)


RESPONSES = ResponsesApi()
"""The Responses API shape (stateless: one for every request)."""
