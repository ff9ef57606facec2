"""The fake upstream's Responses API, answered the way OpenAI answers it.

    POST   /v1/responses                    a response object, or its stream of events
    GET    /v1/responses/{id}               a stored response
    DELETE /v1/responses/{id}               forgets it
    GET    /v1/responses/{id}/input_items   its input items
    POST   /v1/responses/{id}/cancel        cancels a background response
    POST   /v1/responses/input_tokens       {"object": "response.input_tokens", "input_tokens": N}

A response's output is one message of ``reply_tokens`` one-token words (cut at
``max_output_tokens``: status ``incomplete``, ``incomplete_details.reason`` "max_output_tokens"),
or, when the request offers function tools and its input carries no function call output yet, a
call of the first function (its required parameters filled in), so an agent loop runs: a call,
then the answer. ``X-Fake-Web-Searches: N`` makes a request that offers a web search tool search
N times first (never more than its ``max_tool_calls``): N ``web_search_call`` items, and
``tool_usage.web_search.num_requests``. Each search is one more sampling step: the input is billed
once per step, plus ``SEARCH_RESULT_TOKENS`` of results per search.

A stream sends ``event: <type>`` and ``data:`` lines, each event with an increasing
``sequence_number``: ``response.created``, ``response.in_progress``, each output item's
``response.output_item.added`` … ``response.output_item.done`` (text in ``chunks`` deltas), and
``response.completed`` (or ``response.incomplete``) with the usage. The headers of ``controls``
apply as on chat (status, usage, latency, chunk delay, dropped streams). Responses are stored
unless ``store`` is false; ``background: true`` stores a queued response and answers at once.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from proxy.apis.chat_prompt import count_completion
from proxy.fake_upstream.controls import Controls, Refused, begin, int_param, json_object
from proxy.fake_upstream.replies import FakeUpstream, chat_seed, make_reply, send_json, send_stream, split_pieces
from proxy.fake_upstream.responses_billing import bill_responses, chat_messages, function_arguments, has_function_output

__all__ = ["add_responses_routes", "SEARCH_RESULT_TOKENS", "H_WEB_SEARCHES", "STORE_LIMIT"]

SEARCH_RESULT_TOKENS = 120
H_WEB_SEARCHES = "X-Fake-Web-Searches"
STORE_LIMIT = 10_000

_STATE = web.AppKey("fake_responses_state", FakeUpstream)
_STORED = web.AppKey("fake_responses_stored", dict)


def add_responses_routes(app: web.Application, state: FakeUpstream) -> None:
    """Serve the Responses API on ``app`` with the fake upstream's ``state``."""
    app[_STATE] = state
    app[_STORED] = {}
    app.add_routes([
        web.post("/v1/responses", _create),
        web.post("/v1/responses/input_tokens", _input_tokens),
        web.get("/v1/responses/{id}", _retrieve),
        web.delete("/v1/responses/{id}", _delete),
        web.get("/v1/responses/{id}/input_items", _input_items),
        web.post("/v1/responses/{id}/cancel", _cancel),
    ])


async def _begin(request: web.Request) -> tuple[FakeUpstream, Controls]:
    state = request.app[_STATE]
    return state, await begin(request, state.options)


def _searches(request: web.Request, body: dict[str, Any]) -> int:
    raw = request.headers.get(H_WEB_SEARCHES)
    if raw is None:
        return 0
    if not raw.isdigit():
        raise Refused(400, f"{H_WEB_SEARCHES} must be a whole number, not {raw!r}", param=H_WEB_SEARCHES)
    tools = body.get("tools") if isinstance(body.get("tools"), list) else []
    if not any(isinstance(t, dict) and str(t.get("type", "")).startswith("web_search") for t in tools):
        return 0
    limit = body.get("max_tool_calls")
    return min(int(raw), limit) if isinstance(limit, int) else int(raw)


def _usage(controls: Controls, input_tokens: int, output_tokens: int) -> dict[str, Any] | None:
    if controls.no_usage:
        return None
    if controls.usage is not None:
        return controls.usage
    return {"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens}


def _stored(request: web.Request) -> dict[str, Any]:
    found = request.app[_STORED].get(request.match_info["id"])
    if found is None:
        raise Refused(404, f"Response with id '{request.match_info['id']}' not found.")
    return found


def _store(app: web.Application, record: dict[str, Any]) -> None:
    stored = app[_STORED]
    stored[record["response"]["id"]] = record
    if len(stored) > STORE_LIMIT:
        del stored[next(iter(stored))]


def _items_with_ids(body: dict[str, Any], number: int) -> list[dict[str, Any]]:
    items = body.get("input")
    if isinstance(items, str):
        items = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": items}]}]
    out = []
    for index, item in enumerate(items if isinstance(items, list) else ()):
        if isinstance(item, dict):
            out.append({"id": f"msg_fb{number:016d}{index:08d}", "status": "completed",
                        **({"type": "message"} if "role" in item and "type" not in item else {}), **item})
    return out


def _head(number: int, model: str, body: dict[str, Any]) -> dict[str, Any]:
    """A response object's fields, before its output and usage."""
    text = body.get("text") if isinstance(body.get("text"), dict) else {}
    return {
        "id": f"resp_fb{number:024d}", "object": "response", "created_at": int(time.time()),
        "status": "in_progress", "background": bool(body.get("background")), "error": None,
        "incomplete_details": None, "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"), "max_tool_calls": body.get("max_tool_calls"),
        "model": model, "output": [], "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": body.get("reasoning") or {"effort": None, "summary": None}, "service_tier": "default",
        "store": body.get("store", True), "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}, "verbosity": "medium", **text},
        "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0), "truncation": body.get("truncation", "disabled"), "usage": None,
        "user": body.get("user"), "metadata": body.get("metadata") or {},
    }


def _context(request: web.Request, body: dict[str, Any]) -> int:
    """Tokens carried over from ``previous_response_id``: what that response took in and gave out."""
    previous = body.get("previous_response_id")
    if previous is None:
        return 0
    record = request.app[_STORED].get(previous)
    if record is None:
        raise Refused(400, f"Previous response with id '{previous}' not found.", param="previous_response_id",
                      code="previous_response_not_found")
    return record["context"]


async def _create(request: web.Request) -> web.StreamResponse:
    state, controls = await _begin(request)
    body, model = json_object(request)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise Refused(400, "Invalid 'stream': expected a boolean.", param="stream", code="invalid_type")
    bound = int_param(body, "max_output_tokens", low=16)
    int_param(body, "max_tool_calls", low=0)
    if all(body.get(name) is None for name in ("input", "previous_response_id", "conversation", "prompt")):
        raise Refused(400, "Missing required parameter: 'input'.", param="input", code="missing_required_parameter")
    number = state.next_number()
    head = _head(number, model, body)
    context = _context(request, body)
    step = context + bill_responses(model, body)
    if body.get("background"):
        head["status"] = "queued"
        _store(request.app, {"response": head, "input": _items_with_ids(body, number), "context": step})
        return send_json(controls, head, f"req_fb{number:024d}")
    searches = _searches(request, body)
    messages, _ = chat_messages({**body, "model": model})
    seed = chat_seed(messages) if messages else number
    output: list[dict[str, Any]] = [
        {"id": f"ws_fb{number:016d}{index:08d}", "type": "web_search_call", "status": "completed",
         "action": {"type": "search", "query": f"search {index + 1}"}} for index in range(searches)]
    pieces: list[str] = []
    status, incomplete = "completed", None
    functions = [t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("type") == "function"]
    if functions and not has_function_output(body) and body.get("tool_choice") != "none":
        tool = functions[0]
        word = make_reply(state, model, seed, controls, None).pieces[:1] or ["value"]
        arguments = function_arguments(tool, word[0].strip().lower())
        output.append({"id": f"fc_fb{number:024d}", "type": "function_call", "status": "completed",
                       "arguments": arguments, "call_id": f"call_fb{number:020d}", "name": tool.get("name")})
        output_tokens = count_completion(model, "", [{"function": {"name": tool.get("name"), "arguments": arguments}}])
    else:
        reply = make_reply(state, model, seed, controls, bound)
        pieces, output_tokens = reply.pieces, reply.tokens
        if reply.finish_reason == "length":
            status, incomplete = "incomplete", {"reason": "max_output_tokens"}
        output.append({"id": f"msg_fb{number:024d}", "type": "message", "status": status, "role": "assistant",
                       "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": reply.text}]})
    input_tokens = step * (searches + 1) + searches * SEARCH_RESULT_TOKENS
    final = {**head, "status": status, "incomplete_details": incomplete, "output": output,
             "usage": _usage(controls, input_tokens, output_tokens)}
    if any(str(t.get("type", "")).startswith("web_search") for t in head["tools"] if isinstance(t, dict)):
        final["tool_usage"] = {"web_search": {"num_requests": searches}}
    if body.get("store", True) is not False:
        _store(request.app, {"response": final, "input": _items_with_ids(body, number),
                             "context": step + output_tokens})
    request_id = f"req_fb{number:024d}"
    if not stream:
        return send_json(controls, final, request_id)
    return await send_stream(request, controls, _events(head, final, pieces, state.options.chunks), request_id)


def _events(head: dict[str, Any], final: dict[str, Any], pieces: list[str], chunks: int) -> list[bytes]:
    """The stream of one response, in OpenAI's order of events."""
    events: list[bytes] = []

    def send(kind: str, **fields: Any) -> None:
        data = orjson.dumps({"type": kind, "sequence_number": len(events), **fields})
        events.append(b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n")

    send("response.created", response=head)
    send("response.in_progress", response=head)
    for index, item in enumerate(final["output"]):
        where = {"output_index": index, "item_id": item["id"]}
        if item["type"] == "message":
            part = item["content"][0]
            send("response.output_item.added", output_index=index,
                 item={**item, "status": "in_progress", "content": []})
            send("response.content_part.added", **where, content_index=0, part={**part, "text": ""})
            for delta in split_pieces(pieces, chunks):
                send("response.output_text.delta", **where, content_index=0, delta=delta, logprobs=[])
            send("response.output_text.done", **where, content_index=0, text=part["text"], logprobs=[])
            send("response.content_part.done", **where, content_index=0, part=part)
        elif item["type"] == "function_call":
            send("response.output_item.added", output_index=index,
                 item={**item, "status": "in_progress", "arguments": ""})
            send("response.function_call_arguments.delta", **where, delta=item["arguments"])
            send("response.function_call_arguments.done", **where, arguments=item["arguments"], name=item["name"])
        else:
            send("response.output_item.added", output_index=index, item={**item, "status": "in_progress"})
            for phase in ("in_progress", "searching", "completed"):
                send(f"response.web_search_call.{phase}", **where)
        send("response.output_item.done", output_index=index, item=item)
    send("response.incomplete" if final["status"] == "incomplete" else "response.completed", response=final)
    return events


async def _input_tokens(request: web.Request) -> web.StreamResponse:
    state, controls = await _begin(request)
    body, model = json_object(request)
    tokens = _context(request, body) + bill_responses(model, body)
    return send_json(controls, {"object": "response.input_tokens", "input_tokens": tokens},
                     f"req_fb{state.next_number():024d}")


async def _retrieve(request: web.Request) -> web.StreamResponse:
    state, controls = await _begin(request)
    return send_json(controls, _stored(request)["response"], f"req_fb{state.next_number():024d}")


async def _delete(request: web.Request) -> web.StreamResponse:
    state, controls = await _begin(request)
    record = _stored(request)
    del request.app[_STORED][record["response"]["id"]]
    return send_json(controls, {"id": record["response"]["id"], "object": "response", "deleted": True},
                     f"req_fb{state.next_number():024d}")


async def _input_items(request: web.Request) -> web.StreamResponse:
    state, controls = await _begin(request)
    items = _stored(request)["input"]
    page = {"object": "list", "data": items, "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None, "has_more": False}
    return send_json(controls, page, f"req_fb{state.next_number():024d}")


async def _cancel(request: web.Request) -> web.StreamResponse:
    state, controls = await _begin(request)
    response = _stored(request)["response"]
    if not response.get("background"):
        raise Refused(400, "Only responses created with background=true can be cancelled.")
    if response["status"] in ("queued", "in_progress"):
        response["status"] = "cancelled"
    return send_json(controls, response, f"req_fb{state.next_number():024d}")
