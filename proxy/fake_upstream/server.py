"""The fake upstream's application: what it records, and its endpoints."""

from __future__ import annotations

import base64
import time
from typing import Any

import orjson
from aiohttp import web

from proxy.fake_upstream.azure import azure_routes
from proxy.fake_upstream.billing import bill_chat
from proxy.fake_upstream.controls import (
    begin,
    BODY,
    INVALID_JSON,
    MAX_CHOICES,
    MAX_REPLY_TOKENS,
    Controls,
    Options,
    Refused,
    int_param,
    json_object,
    output_bound,
    streaming,
)
from proxy.fake_upstream.inputs import (
    LEGACY_DEFAULT_MAX_TOKENS,
    MAX_BEST_OF,
    MAX_EMBEDDING_INPUTS,
    billed_tokens,
    echo_text,
    read_inputs,
)
from proxy.fake_upstream.messages import count_tokens_endpoint, messages_endpoint
from proxy.fake_upstream.replies import (
    CHOICE_STRIDE,
    DONE_EVENT,
    MAX_EMBEDDING_DIMENSIONS,
    MODELS,
    SYSTEM_FINGERPRINT,
    FakeUpstream,
    chat_seed,
    make_reply,
    seed_of,
    send_body,
    send_json,
    send_stream,
    split_pieces,
    sse_event,
    usage_object,
)
from proxy.fake_upstream.responses import add_responses_routes
from proxy.tokens import count_text, ensure_offline_encodings

__all__ = ["RECEIVED", "RECORD_LIMIT", "create_fake_app", "run_fake_upstream"]

RECORD_LIMIT = 10_000
"""How many received requests are kept for tests (the oldest are forgotten first)."""

DEFAULT_PORT = 9000
MAX_BODY_BYTES = 64 * 1024 * 1024

RECEIVED = web.AppKey("fake_upstream_received", list)
"""Every request received, oldest first: dicts {method, path, headers (names in lower case),
body (the parsed JSON, or None when there is none or it is not JSON), query (the raw query string)}."""


_STATE = web.AppKey("fake_upstream_state", FakeUpstream)


def create_fake_app(*, latency_ms: float = 0, chunks: int = 8, chunk_delay_ms: float = 0,
                    reply_tokens: int = 16) -> web.Application:
    """The fake upstream as an aiohttp application (see the package's docstring)."""
    if chunks < 1:
        raise ValueError("chunks must be at least 1")
    if latency_ms < 0 or chunk_delay_ms < 0 or not 0 <= reply_tokens <= MAX_REPLY_TOKENS:
        raise ValueError(f"latency_ms and chunk_delay_ms must not be negative, reply_tokens "
                         f"must be between 0 and {MAX_REPLY_TOKENS}")
    ensure_offline_encodings()
    state = FakeUpstream(Options(latency_s=latency_ms / 1000, chunks=chunks,
                                   chunk_delay_s=chunk_delay_ms / 1000, reply_tokens=reply_tokens))
    for model in ("gpt-4o-mini", "gpt-3.5-turbo"):  # the two common encodings, ready before traffic
        state.vocabulary(model)
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_receive])
    app[_STATE] = state
    app[RECEIVED] = []
    app.add_routes([
        web.post("/v1/chat/completions", _chat_completions),
        web.post("/v1/completions", _completions),
        web.post("/v1/embeddings", _embeddings),
        web.post("/v1/messages", _messages),
        web.post("/v1/messages/count_tokens", _count_tokens),
        web.get("/v1/models", _models),
        web.get("/v1/models/{model}", _model),
        *azure_routes(chat=_chat_completions, completions=_completions, embeddings=_embeddings),
        web.get("/_fake/requests", _list_requests),
        web.delete("/_fake/requests", _clear_requests),
    ])
    add_responses_routes(app, state)
    return app


def run_fake_upstream(host: str = "127.0.0.1", port: int = DEFAULT_PORT, *, latency_ms: float = 0,
                      chunks: int = 8, chunk_delay_ms: float = 0, reply_tokens: int = 16) -> None:
    """Serve the fake upstream until interrupted."""
    app = create_fake_app(latency_ms=latency_ms, chunks=chunks, chunk_delay_ms=chunk_delay_ms,
                          reply_tokens=reply_tokens)
    print(f"farebox fake upstream listening on http://{host}:{port}/v1", flush=True)
    web.run_app(app, host=host, port=port, print=None, access_log=None)


# --- receiving -------------------------------------------------------------------------------

@web.middleware
async def _receive(request: web.Request, handler: Any) -> web.StreamResponse:
    """Record the request (all but /_fake/ ones), then answer refusals in OpenAI's shape."""
    if not request.path.startswith("/_fake/"):
        raw = await request.read()
        body: Any = None
        if raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body = INVALID_JSON
        request[BODY] = body
        received = request.app[RECEIVED]
        received.append({"method": request.method, "path": request.path, "query": request.rel_url.raw_query_string,
                         "headers": _header_dict(request.headers),
                         "body": None if body is INVALID_JSON else body})
        if len(received) > RECORD_LIMIT:
            del received[0]
    try:
        return await handler(request)
    except Refused as refused:
        return web.Response(status=refused.status, body=refused.body,
                            content_type="application/json")


def _header_dict(headers: Any) -> dict[str, str]:
    """Header names in lower case (as HTTP/2 and httpx send them); repeats joined with ", "."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


async def _begin(request: web.Request) -> tuple[FakeUpstream, Controls]:
    state = request.app[_STATE]
    return state, await begin(request, state.options)


# --- endpoints -------------------------------------------------------------------------------

async def _chat_completions(request: web.Request) -> web.StreamResponse:
    state, controls = await _begin(request)
    body, model = json_object(request)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise Refused(400, "Invalid 'messages': expected a non-empty array.", param="messages")
    n = int_param(body, "n", low=1, high=MAX_CHOICES) or 1
    bound = output_bound(body)
    stream, include_usage = streaming(body)
    prompt_tokens, predicted = bill_chat(model, body)
    seed = chat_seed(messages)
    replies = [make_reply(state, model, seed + index * CHOICE_STRIDE, controls, bound) for index in range(n)]
    usage = usage_object(controls, prompt_tokens, sum(reply.tokens for reply in replies) + n * predicted,
                         rejected_prediction_tokens=n * predicted)
    number = state.next_number()
    request_id = f"req_fb{number:024d}"
    head = {"id": f"chatcmpl-fb{number:020d}", "object": "chat.completion", "created": int(time.time()),
            "model": model}
    if not stream:
        completion = {
            **head,
            "choices": [{"index": index,
                         "message": {"role": "assistant", "content": reply.text, "refusal": None,
                                     "annotations": []},
                         "logprobs": None, "finish_reason": reply.finish_reason}
                        for index, reply in enumerate(replies)],
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }
        if usage is not None:
            completion["usage"] = usage
        return send_json(controls, completion, request_id)
    head.update(object="chat.completion.chunk", service_tier="default", system_fingerprint=SYSTEM_FINGERPRINT)
    with_usage = include_usage and usage is not None

    def chunk(choices: list[dict[str, Any]]) -> bytes:
        return sse_event({**head, "choices": choices, "usage": None} if with_usage else {**head, "choices": choices})

    events = [chunk([{"index": index, "delta": {"role": "assistant", "content": "", "refusal": None},
                      "logprobs": None, "finish_reason": None}]) for index in range(n)]
    parts = [split_pieces(reply.pieces, state.options.chunks) for reply in replies]
    for step in range(max(map(len, parts))):
        events.extend(chunk([{"index": index, "delta": {"content": pieces[step]}, "logprobs": None,
                              "finish_reason": None}])
                      for index, pieces in enumerate(parts) if step < len(pieces))
    events.extend(chunk([{"index": index, "delta": {}, "logprobs": None, "finish_reason": reply.finish_reason}])
                  for index, reply in enumerate(replies))
    if with_usage:
        events.append(sse_event({**head, "choices": [], "usage": usage}))
    events.append(DONE_EVENT)
    return await send_stream(request, controls, events, request_id)


async def _completions(request: web.Request) -> web.StreamResponse:
    """A legacy completion, as OpenAI makes one: ``max(n, best_of)`` completions generated and
    billed per prompt, ``n`` of them returned; ``max_tokens`` 16 unless the request sets it; a
    ``suffix`` billed as prompt with every prompt; ``echo`` puts the prompt before each text
    without billing it as completion; no stream with ``best_of`` above 1."""
    state, controls = await _begin(request)
    body, model = json_object(request)
    prompts = read_inputs(body.get("prompt"), "prompt")
    n = int_param(body, "n", low=1, high=MAX_CHOICES) or 1
    asked_best_of = int_param(body, "best_of", low=1, high=MAX_BEST_OF)
    best_of = asked_best_of or n
    if best_of < n:
        raise Refused(400, "best_of must be greater than or equal to n.", param="best_of")
    bound = int_param(body, "max_tokens", low=0)
    stream, include_usage = streaming(body)
    if stream and asked_best_of is not None and asked_best_of > 1:
        raise Refused(400, "Cannot stream results with best_of greater than 1.", param="best_of")
    suffix = body.get("suffix")
    if suffix is not None and not isinstance(suffix, str):
        raise Refused(400, "Invalid 'suffix': expected a string.", param="suffix", code="invalid_type")
    suffix_tokens = count_text(model, suffix) if suffix else 0
    prompt_tokens = sum(billed_tokens(model, prompt) + suffix_tokens for prompt in prompts)
    bound = LEGACY_DEFAULT_MAX_TOKENS if bound is None else bound
    generated = [[make_reply(state, model, seed_of(prompt) + index * CHOICE_STRIDE, controls, bound)
                  for index in range(best_of)] for prompt in prompts]
    usage = usage_object(controls, prompt_tokens, sum(reply.tokens for group in generated for reply in group))
    if usage is not None and controls.usage is None:
        usage = {key: usage[key] for key in ("prompt_tokens", "completion_tokens", "total_tokens")}
    echo = body.get("echo") is True
    replies = [(echo_text(model, prompt) if echo else "", reply)
               for prompt, group in zip(prompts, generated) for reply in group[:n]]
    number = state.next_number()
    request_id = f"req_fb{number:024d}"
    head = {"id": f"cmpl-fb{number:024d}", "object": "text_completion", "created": int(time.time()),
            "model": model, "system_fingerprint": SYSTEM_FINGERPRINT}
    if not stream:
        completion = {**head, "choices": [{"text": echoed + reply.text, "index": index, "logprobs": None,
                                           "finish_reason": reply.finish_reason}
                                          for index, (echoed, reply) in enumerate(replies)]}
        if usage is not None:
            completion["usage"] = usage
        return send_json(controls, completion, request_id)
    with_usage = include_usage and usage is not None

    def chunk(choices: list[dict[str, Any]]) -> bytes:
        return sse_event({**head, "choices": choices, "usage": None} if with_usage else {**head, "choices": choices})

    parts = [([echoed] if echoed else []) + split_pieces(reply.pieces, state.options.chunks)
             for echoed, reply in replies]
    events = []
    for step in range(max(map(len, parts))):
        events.extend(chunk([{"text": pieces[step], "index": index, "logprobs": None, "finish_reason": None}])
                      for index, pieces in enumerate(parts) if step < len(pieces))
    events.extend(chunk([{"text": "", "index": index, "logprobs": None, "finish_reason": reply.finish_reason}])
                  for index, (_, reply) in enumerate(replies))
    if with_usage:
        events.append(sse_event({**head, "choices": [], "usage": usage}))
    events.append(DONE_EVENT)
    return await send_stream(request, controls, events, request_id)


async def _embeddings(request: web.Request) -> web.StreamResponse:
    state, controls = await _begin(request)
    body, model = json_object(request)
    inputs = read_inputs(body.get("input"), "input", empty_text=False, max_items=MAX_EMBEDDING_INPUTS)
    dimensions = int_param(body, "dimensions", low=1, high=MAX_EMBEDDING_DIMENSIONS) or (
        3072 if "large" in model else 1536)
    encoding_format = body.get("encoding_format") or "float"
    if encoding_format not in ("float", "base64"):
        raise Refused(400, "Invalid 'encoding_format': expected 'float' or 'base64'.", param="encoding_format")
    data = []
    for index, item in enumerate(inputs):
        offset = seed_of(item) % MAX_EMBEDDING_DIMENSIONS
        if encoding_format == "float":
            vector: Any = state.embedding_floats[offset:offset + dimensions]
        else:
            vector = base64.b64encode(state.embedding_bytes[offset * 4:(offset + dimensions) * 4]).decode()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    tokens = sum(billed_tokens(model, item) for item in inputs)
    payload: dict[str, Any] = {"object": "list", "data": data, "model": model}
    if controls.no_usage:
        pass
    elif controls.usage is not None:
        payload["usage"] = controls.usage
    else:
        payload["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
    return send_json(controls, payload, f"req_fb{state.next_number():024d}")


async def _messages(request: web.Request) -> web.StreamResponse:
    return await messages_endpoint(request, request.app[_STATE])


async def _count_tokens(request: web.Request) -> web.StreamResponse:
    return await count_tokens_endpoint(request, request.app[_STATE])


async def _models(request: web.Request) -> web.StreamResponse:
    state, controls = await _begin(request)
    return send_body(controls, state.models_body, f"req_fb{state.next_number():024d}")


async def _model(request: web.Request) -> web.StreamResponse:
    """One model of the list, as OpenAI answers ``GET /v1/models/{model}``; 404 for the others."""
    state, controls = await _begin(request)
    name = request.match_info["model"]
    created = dict(MODELS).get(name)
    if created is None:
        raise Refused(404, f"The model '{name}' does not exist", param="model", code="model_not_found")
    return send_json(controls, {"id": name, "object": "model", "created": created, "owned_by": "system"},
                     f"req_fb{state.next_number():024d}")


async def _list_requests(request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps(request.app[RECEIVED]), content_type="application/json")


async def _clear_requests(request: web.Request) -> web.Response:
    request.app[RECEIVED].clear()
    return web.Response(status=204)
