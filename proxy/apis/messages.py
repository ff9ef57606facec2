"""Anthropic Messages (``POST /v1/messages``) as an ``ApiShape``: what Claude Code and the
Anthropic SDKs call. Forwarded to the ``anthropic`` family's upstream; errors in Anthropic's shape.

Parse: only what farebox needs is checked (the upstream validates the rest): a JSON object
with a string ``model``, a list ``messages``, the required ``max_tokens`` (a positive integer:
the output bound), a boolean ``stream``, ``system`` as a string or a list of blocks, ``tools``
as a list of objects, and ``thinking``: with ``{"type": "enabled"}``, ``budget_tokens`` of at
least ``MIN_THINKING_BUDGET``, so the output bound is never lowered below
``MIN_THINKING_BUDGET + 1`` (thinking needs its budget below ``max_tokens``, unless interleaved
with tool calls, a beta, where it may exceed it: the upstream judges). One reply per request (n = 1).

Server tools, run by Anthropic inside one request:

- ``web_search_*`` is billed per search (the catalog's ``web_search_call``): the request makes
  at most the sum of the tools' ``max_uses`` searches (``hosted_calls``); a tool without
  ``max_uses`` is forwarded with ``DEFAULT_MAX_USES``, so the bound holds by construction;
- ``web_fetch_*`` bills no call, but what it fetches enters the context: likewise limited;
- the results of either enter the context of a further model call, so the prompt part of the
  worst case grows by the context window (or a fetch's ``max_content_tokens``) per use;
- tools billed by time (``code_execution_*``), tools farebox does not know, and
  ``mcp_servers`` (remote tools called without a bound on their number) are refused with 400
  ``unsupported_tool``: farebox could not bound their cost.

Count: ``proxy/apis/messages_prompt.py`` (UTF-8 bytes, an upper bound for any byte-level
tokenizer; actual usage decides the charge), capped at the model's context window. With a
``context-1m`` beta (``anthropic-beta`` header) the window is 1M tokens, and a request whose
bound exceeds the catalog's window is refused (400 ``unpriced_long_context``) unless the model's
price has a long-context tier (``pricing.tiers``; e.g. from a price file): above its window the
provider bills long-context rates, which farebox must know to reserve and charge them.

Forward: the client's bytes, unless farebox sets a clamped ``max_tokens`` (lowering
``thinking.budget_tokens`` below it when needed) or a tool's ``max_uses``.

Measure: ``proxy/apis/messages_usage.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from pricing.catalog import ModelPrice
from pricing.cost import Usage
from proxy.apis import Measured
from proxy.apis.body import json_type, parse_json_object
from proxy.apis.chat_media import UNKNOWN_CONTEXT_TOKENS
from proxy.apis.chat_prompt import count_completion
from proxy.apis.messages_prompt import prompt_bound
from proxy.apis.messages_usage import MessagesStreamMeter, anthropic_usage, content_text
from proxy.errors import BadRequest

__all__ = ["MESSAGES", "AnthropicMessages", "MessagesRequest", "parse_messages", "DEFAULT_MAX_USES",
           "MIN_THINKING_BUDGET", "MAX_OUTPUT_TOKENS", "CLIENT_TOOL_PREFIXES"]

MAX_OUTPUT_TOKENS = 2**31 - 1
MIN_THINKING_BUDGET = 1024   # Anthropic's minimum thinking.budget_tokens
DEFAULT_MAX_USES = 8         # set on a web search or fetch tool that has none
# Tool types run by the client (or, for tool search, free and working on the request's own
# tools): nothing billed but their definitions, which the prompt count covers.
CLIENT_TOOL_PREFIXES = ("custom", "bash_", "text_editor_", "computer_", "memory_", "tool_search_tool_")
_SEARCH, _FETCH = "web_search_", "web_fetch_"


@dataclass(slots=True)
class MessagesRequest:
    """A Messages request as farebox sees it."""

    body: dict[str, Any]
    model: str
    stream: bool
    max_output: int
    thinking_budget: int | None  # thinking.budget_tokens when thinking is enabled
    hosted_calls: int            # web searches at most
    fetches: list[tuple[int, int | None]]  # per web fetch tool: (max_uses, max_content_tokens or None)
    rewrite: bool                # farebox set a max_uses: the body must be sent re-encoded
    min_output: int = 1
    long_context: bool = False   # a context-1m beta: prompts may exceed the catalog's window
    bound_field = "max_tokens"
    n = 1
    output_extra = 0
    prompt_field = "messages"


LONG_CONTEXT_BETA = "context-1m"   # Anthropic's betas for a 1M-token window: "context-1m-2025-08-07", ...
LONG_CONTEXT_TOKENS = 1_000_000


def _invalid(param: str, message: str, code: str = "invalid_type") -> BadRequest:
    return BadRequest(f"{param}: {message}", param=param, code=code)


def _required(body: dict[str, Any], name: str, param: str | None = None) -> Any:
    if body.get(name) is None:
        raise _invalid(param or name, "Field required", "missing_required_parameter")
    return body[name]


def _int(value: Any, param: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(param, f"Input should be a valid integer, got {json_type(value)}")
    if value < low:
        raise _invalid(param, f"Input should be greater than or equal to {low}", "invalid_value")
    if value > MAX_OUTPUT_TOKENS:
        raise _invalid(param, f"Input should be less than or equal to {MAX_OUTPUT_TOKENS}", "invalid_value")
    return value


def _thinking(body: dict[str, Any]) -> int | None:
    thinking = body.get("thinking")
    if thinking is None:
        return None
    if not isinstance(thinking, dict):
        raise _invalid("thinking", f"Input should be an object, got {json_type(thinking)}")
    kind = thinking.get("type")
    if not isinstance(kind, str):
        raise _invalid("thinking.type", f"Input should be a valid string, got {json_type(kind)}")
    if kind != "enabled":
        return None
    # A budget of max_tokens or more is the upstream's to judge: with interleaved thinking (a
    # beta Claude Code uses) it may exceed max_tokens; without, Anthropic refuses it, unbilled.
    return _int(_required(thinking, "budget_tokens", "thinking.budget_tokens"), "thinking.budget_tokens",
                MIN_THINKING_BUDGET)


def _server_tools(body: dict[str, Any]) -> tuple[int, list[tuple[int, int | None]], bool]:
    """(web searches at most, (max_uses, max_content_tokens) per fetch tool, whether a max_uses was set)."""
    tools = body.get("tools")
    if tools is None:
        return 0, [], False
    if not isinstance(tools, list):
        raise _invalid("tools", f"Input should be a valid list, got {json_type(tools)}")
    searches, fetches, rewrite = 0, [], False
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise _invalid(f"tools.{index}", f"Input should be an object, got {json_type(tool)}")
        kind = tool.get("type")
        if kind is None or (isinstance(kind, str) and kind.startswith(CLIENT_TOOL_PREFIXES)):
            continue
        if not isinstance(kind, str):
            raise _invalid(f"tools.{index}.type", f"Input should be a valid string, got {json_type(kind)}")
        if not kind.startswith((_SEARCH, _FETCH)):
            raise BadRequest(f"tools.{index}: farebox cannot meter the server tool '{kind}' (it is not billed "
                             f"by tokens or per search); remove it or call the provider directly.",
                             param=f"tools.{index}.type", code="unsupported_tool")
        if tool.get("max_uses") is None:
            tool["max_uses"] = DEFAULT_MAX_USES
            rewrite = True
        uses = _int(tool["max_uses"], f"tools.{index}.max_uses", 1)
        if kind.startswith(_SEARCH):
            searches += uses
        else:
            limit = tool.get("max_content_tokens")
            limit = _int(limit, f"tools.{index}.max_content_tokens", 1) if limit is not None else None
            fetches.append((uses, limit))
    return searches, fetches, rewrite


def parse_messages(raw: bytes, headers: Mapping[str, str] | None = None) -> MessagesRequest:
    body = parse_json_object(raw)
    model = _required(body, "model")
    if not isinstance(model, str) or not model.strip():
        raise _invalid("model", f"Input should be a non-empty string, got {json_type(model)}")
    messages = _required(body, "messages")
    if not isinstance(messages, list):
        raise _invalid("messages", f"Input should be a valid list, got {json_type(messages)}")
    max_tokens = _int(_required(body, "max_tokens"), "max_tokens", 1)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _invalid("stream", f"Input should be a valid boolean, got {json_type(stream)}")
    system = body.get("system")
    if system is not None and not isinstance(system, (str, list)):
        raise _invalid("system", f"Input should be a string or a list of content blocks, got {json_type(system)}")
    if body.get("mcp_servers") is not None:
        raise BadRequest("mcp_servers: farebox cannot meter remote MCP tools (their calls have no bound); call "
                         "the tools from the client instead.", param="mcp_servers", code="unsupported_tool")
    budget = _thinking(body)
    searches, fetches, rewrite = _server_tools(body)
    return MessagesRequest(body=body, model=model, stream=bool(stream), max_output=max_tokens,
                           thinking_budget=budget, hosted_calls=searches, fetches=fetches, rewrite=rewrite,
                           min_output=MIN_THINKING_BUDGET + 1 if budget is not None else 1,
                           long_context=_long_context(headers))


def _long_context(headers: Mapping[str, str] | None) -> bool:
    """Whether the request asks for a context window beyond the catalog's (Anthropic's
    ``context-1m-*`` betas, in any of its ``anthropic-beta`` headers' comma-separated values)."""
    if headers is None:
        return False
    getall = getattr(headers, "getall", None)
    values = getall("anthropic-beta", ()) if getall is not None else [headers.get("anthropic-beta", "")]
    return any(beta.strip().startswith(LONG_CONTEXT_BETA) for value in values for beta in value.split(","))


def _estimated(model: str, prompt_tokens: int, text: str) -> Measured:
    return Measured(Usage(prompt_tokens=prompt_tokens, completion_tokens=count_completion(model, text)),
                    estimated=True)


class AnthropicMessages:
    """The ``ApiShape`` of Anthropic Messages."""

    __slots__ = ()

    name = "messages"
    upstream_path = "/v1/messages"
    family = "anthropic"

    parse = staticmethod(parse_messages)

    async def count_prompt(self, request: MessagesRequest, price: ModelPrice) -> int:
        window = price.max_input_tokens or None
        context = max(window or 0, LONG_CONTEXT_TOKENS) if request.long_context else window
        per_use = context or UNKNOWN_CONTEXT_TOKENS
        tool_context = request.hosted_calls * per_use + sum(
            uses * (per_use if limit is None else min(limit, per_use)) for uses, limit in request.fetches)
        bound = await prompt_bound(request.body, context, tool_context)
        if request.long_context and window is not None and bound > window and price.long_context is None:
            # Above its standard window a model is billed at long-context rates the catalog does
            # not have for it: such a request could cost more than any worst case farebox prices.
            raise BadRequest(f"anthropic-beta: with the long-context beta, this request may send more than "
                             f"{window} input tokens to {request.model}, which is billed at long-context prices "
                             "farebox does not have for this model; remove the beta, shorten the request (or its "
                             "tools' max_uses), or give the model its long-context prices in a price file.",
                             param="anthropic-beta", code="unpriced_long_context")
        return bound

    def forward_body(self, raw: bytes, request: MessagesRequest, bound: int | None) -> bytes:
        body = request.body
        if bound is not None:
            body["max_tokens"] = bound
            budget = request.thinking_budget
            if budget is not None and bound <= budget:
                body["thinking"] = {**body["thinking"], "budget_tokens": max(MIN_THINKING_BUDGET, bound - 1)}
        elif not request.rewrite:
            return raw
        return orjson.dumps(body)

    def measure_body(self, payload: bytes, request: MessagesRequest, prompt_tokens: int) -> Measured:
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict):
            return _estimated(request.model, prompt_tokens, "")
        usage = anthropic_usage(obj.get("usage"))
        if usage is not None:
            return Measured(usage, estimated=False)
        return _estimated(request.model, prompt_tokens, content_text(obj.get("content")))

    def stream_meter(self, request: MessagesRequest) -> MessagesStreamMeter:
        return MessagesStreamMeter(request.model)


MESSAGES = AnthropicMessages()
"""The Anthropic Messages shape (stateless: one for every request)."""
