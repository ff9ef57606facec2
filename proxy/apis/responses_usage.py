"""Where a Responses API answer reports what it used: the ``usage`` and the hosted tool calls of a
response object, and of a stream's events; and the estimate when it reports no usage.

A response's ``usage`` names its tokens ``input_tokens`` (of which
``input_tokens_details.cached_tokens`` read from the cache, ``cache_write_tokens`` written to it)
and ``output_tokens`` (of which ``output_tokens_details.reasoning_tokens``). Its web searches are
``tool_usage.web_search.num_requests`` where the response says (the billable ones), else its
``web_search_call`` output items.

Without usage (a stream cut short, a client that left, an upstream that reports none), the
output is counted from the text, refusals and tool call arguments seen, and the prompt is the
counted one less the context of the built-in calls that did not happen; marked estimated.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import orjson

from pricing.cost import Usage
from proxy.apis import Measured
from proxy.apis.chat_prompt import count_completion
from proxy.apis.usage import usage_from_object
from proxy.upstream.sse import event_data

if TYPE_CHECKING:
    from proxy.apis.responses import ResponsesRequest

__all__ = ["ResponsesStreamMeter", "measured_response", "response_usage", "TERMINAL_EVENTS", "BUILT_IN_CALLS"]

TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
# Output items of built-in tool calls, each of which can bring context into the next step.
BUILT_IN_CALLS = frozenset({"web_search_call", "mcp_call", "mcp_list_tools"})
_TEXT_DELTAS = frozenset({"response.output_text.delta", "response.refusal.delta",
                          "response.reasoning_summary_text.delta", "response.reasoning_text.delta"})
_ARGUMENT_DELTAS = frozenset({"response.function_call_arguments.delta", "response.custom_tool_call_input.delta"})
_ITEM_EVENTS = frozenset({"response.output_item.added", "response.output_item.done"})
# The events the meter reads; the others (the full text again in a ``.done``, the response
# object again in ``response.created``) are passed on without being parsed.
_READ = frozenset(name.encode() for name in _TEXT_DELTAS | _ARGUMENT_DELTAS | _ITEM_EVENTS | TERMINAL_EVENTS)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def response_usage(usage: Any) -> Usage | None:
    """A Responses API ``usage`` object as ``Usage`` (web searches not included); None if absent."""
    found = usage_from_object(usage)
    if found is None or found.cache_creation_tokens:
        return found
    details = usage.get("input_tokens_details")
    writes = _count(details.get("cache_write_tokens")) if isinstance(details, dict) else None
    return replace(found, cache_creation_tokens=writes) if writes else found


def _billed_searches(response: dict[str, Any]) -> int | None:
    """The billable web searches a response reports in ``tool_usage``; None when it does not."""
    tool_usage = response.get("tool_usage")
    search = tool_usage.get("web_search") if isinstance(tool_usage, dict) else None
    return _count(search.get("num_requests")) if isinstance(search, dict) else None


def _item_text(item: dict[str, Any], texts: list[str], calls: list[dict[str, Any]]) -> None:
    kind = item.get("type")
    if kind == "message":
        content = item.get("content")
        for part in content if isinstance(content, list) else ():
            if isinstance(part, dict):
                value = part.get("text", part.get("refusal"))
                if isinstance(value, str):
                    texts.append(value)
    elif kind in ("function_call", "custom_tool_call"):
        arguments = item.get("arguments", item.get("input"))
        calls.append({"function": {"name": item.get("name"), "arguments": arguments}})


def _estimated_prompt(request: ResponsesRequest, prompt_tokens: int, calls_made: int) -> int:
    """The counted prompt less the context of the built-in calls that were not made."""
    unmade = max(request.tool_calls - calls_made, 0)
    return max(prompt_tokens - unmade * request.call_context, 0)


def measured_response(request: ResponsesRequest, response: dict[str, Any] | None, prompt_tokens: int) -> Measured:
    """The usage of a whole response object (None: the body was not one)."""
    output = response.get("output") if response is not None else None
    items = [item for item in output if isinstance(item, dict)] if isinstance(output, list) else []
    searches = sum(1 for item in items if item.get("type") == "web_search_call")
    if response is not None:
        billed = _billed_searches(response)
        usage = response_usage(response.get("usage"))
        if usage is not None:
            return Measured(replace(usage, web_search_calls=searches if billed is None else billed), estimated=False)
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for item in items:
        _item_text(item, texts, calls)
    built_in = sum(1 for item in items if item.get("type") in BUILT_IN_CALLS)
    usage = Usage(prompt_tokens=_estimated_prompt(request, prompt_tokens, built_in),
                  completion_tokens=count_completion(request.model, "".join(texts), calls or None),
                  web_search_calls=searches)
    return Measured(usage, estimated=True)


def _payload(event: bytes) -> bytes | None:
    """The data of one raw event the meter reads (None for the others): quick for the usual
    ``event:`` line then one ``data:`` line."""
    if event.startswith(b"event: ") and b"\r" not in event:
        line_end = event.find(b"\n")
        if event[7:line_end] not in _READ:
            return None
        if event.startswith(b"data: ", line_end + 1) and event.count(b"\n") <= 3:
            return event[line_end + 7:].rstrip(b"\n")
    return event_data(event)


@dataclass(slots=True)
class ResponsesStreamMeter:
    """Reads a stream of Responses API events as they pass through, unchanged."""

    request: ResponsesRequest
    usage: Usage | None = None
    billed_searches: int | None = None
    texts: list[str] = field(default_factory=list)
    calls: dict[Any, dict[str, Any]] = field(default_factory=dict)   # function calls by output index
    built_in: dict[Any, str] = field(default_factory=dict)           # built-in call items by id: their type

    def take(self, event: bytes) -> bool:
        """Read one raw SSE event; every event reaches the client."""
        payload = _payload(event)
        if payload:
            try:
                obj = orjson.loads(payload)
            except orjson.JSONDecodeError:
                return True
            if isinstance(obj, dict):
                self.feed(obj)
        return True

    def feed(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind in _TEXT_DELTAS:
            delta = event.get("delta")
            if isinstance(delta, str):
                self.texts.append(delta)
        elif kind in _ARGUMENT_DELTAS:
            delta = event.get("delta")
            if isinstance(delta, str):
                self._call(event.get("output_index", event.get("item_id")))["arguments"] += delta
        elif kind in _ITEM_EVENTS:
            item = event.get("item")
            if isinstance(item, dict):
                self._item(item, event.get("output_index"), done=kind == "response.output_item.done")
        elif kind in TERMINAL_EVENTS:
            response = event.get("response")
            if isinstance(response, dict):
                self._terminal(response)

    def _call(self, key: Any) -> dict[str, Any]:
        slot = self.calls.get(key)
        if slot is None:
            slot = self.calls[key] = {"name": "", "arguments": ""}
        return slot

    def _item(self, item: dict[str, Any], index: Any, *, done: bool) -> None:
        kind = item.get("type")
        if kind in BUILT_IN_CALLS:
            self.built_in[item.get("id") or ("output", index)] = kind
        elif kind in ("function_call", "custom_tool_call"):
            slot = self._call(index if index is not None else item.get("id"))
            if isinstance(item.get("name"), str):
                slot["name"] = item["name"]
            arguments = item.get("arguments", item.get("input"))
            if done and isinstance(arguments, str):
                slot["arguments"] = arguments

    def _terminal(self, response: dict[str, Any]) -> None:
        found = response_usage(response.get("usage"))
        if found is not None:
            self.usage = found
        billed = _billed_searches(response)
        if billed is not None:
            self.billed_searches = billed
        output = response.get("output")
        for index, item in enumerate(output if isinstance(output, list) else ()):
            if isinstance(item, dict) and item.get("type") in BUILT_IN_CALLS:
                self.built_in.setdefault(item.get("id") or ("output", index), item["type"])

    def searches(self) -> int:
        if self.billed_searches is not None:
            return self.billed_searches
        return sum(1 for kind in self.built_in.values() if kind == "web_search_call")

    def result(self, prompt_tokens: int) -> Measured:
        searches = self.searches()
        if self.usage is not None:
            return Measured(replace(self.usage, web_search_calls=searches), estimated=False)
        calls = [{"function": call} for call in self.calls.values()]
        request = self.request
        usage = Usage(prompt_tokens=_estimated_prompt(request, prompt_tokens, len(self.built_in)),
                      completion_tokens=count_completion(request.model, "".join(self.texts), calls or None),
                      web_search_calls=searches)
        return Measured(usage, estimated=True)
