"""A deterministic OpenAI-compatible server, for trying farebox without a provider account.

``farebox fake-upstream`` runs it; farebox's end-to-end tests and its benchmark point farebox
at it. Replies are made of words that are one token each, picked from the request (a hash of
the last user message), so the same request always gets the same reply and its length in
tokens is known exactly. Usage is counted with the code farebox itself uses
(``proxy.tokens``, ``proxy.apis.chat_prompt``), so an estimate farebox makes and the usage reported here agree.

Endpoints::

    POST   /v1/chat/completions   chat.completion, or a stream of chat.completion.chunk
    POST   /v1/completions        text_completion, stream and not
    POST   /v1/embeddings         deterministic vectors (encoding_format float or base64)
    GET    /v1/models             a short list of models
    GET    /_fake/requests        the requests received (the last RECORD_LIMIT), as JSON
    DELETE /_fake/requests        forgets them

Replies are ``reply_tokens`` tokens long per choice, never more than the request's
``max_completion_tokens`` / ``max_tokens``; a reply cut at that bound ends with
``finish_reason: "length"``. A stream sends each choice's content in ``chunks`` pieces
(fewer when the reply has fewer tokens than that), ``chunk_delay_ms`` apart, and reports
usage in a last chunk only when ``stream_options.include_usage`` is true, in which case every
other chunk carries ``"usage": null`` (as OpenAI does).

Per-request controls, as request headers (farebox forwards them; tests send them with the
OpenAI SDK's ``extra_headers``). A value this server cannot read gets a 400 naming the header.

    X-Fake-Status: 429            answer with this status (400-599) and an OpenAI error body,
                                  no usage
    X-Fake-Error-Body: {...}      with X-Fake-Status: send this body instead of the default
    X-Fake-No-Usage: 1            report no usage at all, even when include_usage asks for it
                                  (like some OpenAI-compatible servers)
    X-Fake-Usage: {...}           report exactly this usage object instead of the counted one
    X-Fake-Reply-Tokens: N        reply length in tokens, per choice
    X-Fake-Chunk-Delay-Ms: N      pause between stream chunks
    X-Fake-Latency-Ms: N          pause before the response starts
    X-Fake-Ignore-Max-Tokens: 1   reply longer than max_tokens asked: max(reply tokens,
                                  bound + 1) tokens, finish_reason "stop"
    X-Fake-Drop-After-Chunks: N   streams only: send the first N ``data:`` events (the role
                                  chunk is the first), then cut the connection mid-body,
                                  never sending [DONE]
    X-Fake-Gzip: 1                gzip a successful non-stream body (Content-Encoding: gzip)

Flags read ``1``/``true``/``yes``/``on`` as on and ``0``/``false``/``no``/``off`` as off.
Controls apply in this order: latency, forced status, then the request is read and answered.

Requests to ``/_fake/`` are not recorded; the rest are, with header names in lower case.
"""

from __future__ import annotations

import array
import asyncio
import base64
import gzip
import hashlib
import itertools
import math
import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from proxy.apis.chat_prompt import count_chat_prompt_async, count_completion
from proxy.tokens import count_text, encoding_name_for_model, ensure_offline_encodings

__all__ = [
    "RECEIVED",
    "RECORD_LIMIT",
    "create_fake_app",
    "run_fake_upstream",
]

RECORD_LIMIT = 10_000
"""How many received requests are kept for tests (the oldest are forgotten first)."""

DEFAULT_PORT = 9000
MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_CHOICES = 128
MAX_REPLY_TOKENS = 1_000_000
MAX_EMBEDDING_DIMENSIONS = 4096
SYSTEM_FINGERPRINT = "fp_fb0fake001"
SEQUENCE_LENGTH = 4096  # words in the fixed pseudo-random sequence replies are cut from

RECEIVED = web.AppKey("fake_upstream_received", list)
"""Every request received, oldest first: dicts {method, path, headers (names in lower case),
body (the parsed JSON, or None when there is none or it is not JSON)}."""

# Request headers that steer one response (see the module docstring).
H_STATUS = "X-Fake-Status"
H_ERROR_BODY = "X-Fake-Error-Body"
H_NO_USAGE = "X-Fake-No-Usage"
H_USAGE = "X-Fake-Usage"
H_REPLY_TOKENS = "X-Fake-Reply-Tokens"
H_CHUNK_DELAY_MS = "X-Fake-Chunk-Delay-Ms"
H_LATENCY_MS = "X-Fake-Latency-Ms"
H_IGNORE_MAX_TOKENS = "X-Fake-Ignore-Max-Tokens"
H_DROP_AFTER_CHUNKS = "X-Fake-Drop-After-Chunks"
H_GZIP = "X-Fake-Gzip"

# Common English words; those that are not one token in a model's encoding (alone with a
# leading space, and capitalised at the start of a reply) are left out for that encoding.
WORDS = """
about above act add after again against air all also always an and animal answer any appear are
area as ask at back base be been before began begin best better between big bird black body book
both box boy build but by call came can car care carry cause center certain change children city
class close cold color come complete could country cover cross cut dark day did differ direct do
does dog door down draw during each early earth ease eat end enough even ever every example eye
face fall family far farm fast father feel feet few field figure find fine fire first fish five
fly follow food for form found four friend from get girl give go good got govern great ground
group grow had half hand happen hard has have head hear heard help her here high him his hold
home horse hour house how hundred idea if in interest is just keep kind king knew know land
large last late lay lead learn leave left less let letter life light like line list listen
little live long look love low machine made main make man many map mark may me mean measure men
might mile money more morning most mother mountain move much music must my name near need never
new next night no north note notice noun now number of off often old on once one only open or
order other our out over own page paper part pass pattern people person picture piece place
plain plan plant play point port pose power press problem product pull put question rain reach
read ready real red remember rest right river road rock room round rule run said same saw say
school science sea second see seem self sentence serve set several she ship short should show
side simple since sing six slow small so some song soon sound south space spell stand star start
state step still stop story study such sun sure table take talk tell ten than the their them
then there these they thing think this those though thought three through time to together told
too took top toward town travel tree true try turn two under unit until up us use usual verb
very voice wait walk want war was watch water way we well went were west what when where which
while white who whole why will wind with wood word work world would write year young your
""".split()

MODELS = (
    ("gpt-4o", 1715367049),
    ("gpt-4o-mini", 1721172741),
    ("gpt-4.1", 1744316542),
    ("gpt-4.1-mini", 1744318173),
    ("o4-mini", 1744225351),
    ("gpt-3.5-turbo", 1677610602),
    ("text-embedding-3-small", 1705948997),
    ("text-embedding-3-large", 1705953180),
)


@dataclass(frozen=True, slots=True)
class _Options:
    latency_s: float
    chunks: int
    chunk_delay_s: float
    reply_tokens: int


@dataclass(frozen=True, slots=True)
class _Controls:
    """What one request's X-Fake-* headers ask for, defaults filled in from the options."""

    status: int | None
    error_body: bytes | None
    no_usage: bool
    usage: dict[str, Any] | None
    reply_tokens: int
    chunk_delay_s: float
    latency_s: float
    ignore_max_tokens: bool
    drop_after: int | None
    gzip: bool


class _Refused(Exception):
    """The request is answered with an error instead; carries the status and the body."""

    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, body: bytes | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body if body is not None else orjson.dumps(
            {"error": {"message": message, "type": type_, "param": param, "code": code}})


class _Vocabulary:
    """Whole-token words for one encoding, laid out in a fixed sequence replies are cut from."""

    def __init__(self, model: str) -> None:
        words = [w for w in WORDS
                 if count_text(model, " " + w) == 1 and count_text(model, w.capitalize()) == 1]
        if len(words) < 16:
            raise RuntimeError(f"too few one-token words for model {model!r}")
        # A fixed linear congruential sequence: the same on every run and every machine.
        state = 0x2545F4914F6CDD1D
        order = []
        for _ in range(SEQUENCE_LENGTH):
            state = (state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
            order.append(words[(state >> 33) % len(words)])
        self.spaced = [" " + w for w in order]
        self.capitalised = [w.capitalize() for w in order]

    def reply(self, seed: int, length: int) -> list[str]:
        """``length`` one-token pieces starting at a place chosen by ``seed``; joined, the reply."""
        if length <= 0:
            return []
        start = seed % SEQUENCE_LENGTH
        pieces = [self.capitalised[start]]
        remaining, position = length - 1, (start + 1) % SEQUENCE_LENGTH
        while remaining > 0:
            part = self.spaced[position:position + remaining]
            pieces.extend(part)
            remaining -= len(part)
            position = 0
        return pieces


class _FakeUpstream:
    """The server's state: options, id counter, vocabularies and the embedding table."""

    def __init__(self, options: _Options) -> None:
        self.options = options
        self.counter = itertools.count(1)
        self.vocabularies: dict[str, _Vocabulary] = {}
        self.models_body = orjson.dumps({
            "object": "list",
            "data": [{"id": name, "object": "model", "created": created, "owned_by": "system"}
                     for name, created in MODELS],
        })
        # A fixed table of float32 values; an embedding is a window into it.
        table = array.array("f", (math.sin(i * 0.618034) * 0.05 for i in range(2 * MAX_EMBEDDING_DIMENSIONS)))
        self.embedding_floats = table.tolist()
        self.embedding_bytes = table.tobytes()

    def vocabulary(self, model: str) -> _Vocabulary:
        name = encoding_name_for_model(model)
        vocabulary = self.vocabularies.get(name)
        if vocabulary is None:
            vocabulary = self.vocabularies[name] = _Vocabulary(model)
        return vocabulary

    def next_number(self) -> int:
        return next(self.counter)


_STATE = web.AppKey("fake_upstream_state", _FakeUpstream)
_BODY = web.RequestKey("fake_upstream_body", object)
_INVALID_JSON = object()


def create_fake_app(*, latency_ms: float = 0, chunks: int = 8, chunk_delay_ms: float = 0,
                    reply_tokens: int = 16) -> web.Application:
    """The fake upstream as an aiohttp application (see the module docstring)."""
    if chunks < 1:
        raise ValueError("chunks must be at least 1")
    if latency_ms < 0 or chunk_delay_ms < 0 or not 0 <= reply_tokens <= MAX_REPLY_TOKENS:
        raise ValueError(f"latency_ms and chunk_delay_ms must not be negative, reply_tokens "
                         f"must be between 0 and {MAX_REPLY_TOKENS}")
    ensure_offline_encodings()
    state = _FakeUpstream(_Options(latency_s=latency_ms / 1000, chunks=chunks,
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
        web.get("/v1/models", _models),
        web.get("/_fake/requests", _list_requests),
        web.delete("/_fake/requests", _clear_requests),
    ])
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
                body = _INVALID_JSON
        request[_BODY] = body
        received = request.app[RECEIVED]
        received.append({"method": request.method, "path": request.path,
                         "headers": _header_dict(request.headers),
                         "body": None if body is _INVALID_JSON else body})
        if len(received) > RECORD_LIMIT:
            del received[0]
    try:
        return await handler(request)
    except _Refused as refused:
        return web.Response(status=refused.status, body=refused.body,
                            content_type="application/json")


def _header_dict(headers: Any) -> dict[str, str]:
    """Header names in lower case (as HTTP/2 and httpx send them); repeats joined with ", "."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def _read_controls(request: web.Request, options: _Options) -> _Controls:
    headers = request.headers
    status = _header_int(headers, H_STATUS, None)
    if status is not None and not 400 <= status <= 599:
        raise _Refused(400, f"{H_STATUS} must be between 400 and 599", param=H_STATUS)
    usage: dict[str, Any] | None = None
    if (raw_usage := headers.get(H_USAGE)) is not None:
        try:
            usage = orjson.loads(raw_usage)
        except orjson.JSONDecodeError:
            usage = None
        if not isinstance(usage, dict):
            raise _Refused(400, f"{H_USAGE} must be a JSON object", param=H_USAGE)
    error_body = headers.get(H_ERROR_BODY)
    return _Controls(
        status=status,
        error_body=None if error_body is None else error_body.encode(),
        no_usage=_header_flag(headers, H_NO_USAGE),
        usage=usage,
        reply_tokens=_header_int(headers, H_REPLY_TOKENS, options.reply_tokens, high=MAX_REPLY_TOKENS),
        chunk_delay_s=_header_ms(headers, H_CHUNK_DELAY_MS, options.chunk_delay_s),
        latency_s=_header_ms(headers, H_LATENCY_MS, options.latency_s),
        ignore_max_tokens=_header_flag(headers, H_IGNORE_MAX_TOKENS),
        drop_after=_header_int(headers, H_DROP_AFTER_CHUNKS, None),
        gzip=_header_flag(headers, H_GZIP),
    )


def _header_int(headers: Any, name: str, default: int | None, *, high: int | None = None) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0 or (high is not None and value > high):
        limit = "" if high is None else f" up to {high}"
        raise _Refused(400, f"{name} must be a whole number{limit}, not {raw!r}", param=name)
    return value


def _header_ms(headers: Any, name: str, default_s: float) -> float:
    raw = headers.get(name)
    if raw is None:
        return default_s
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not value >= 0 or math.isinf(value):
        raise _Refused(400, f"{name} must be a number of milliseconds, not {raw!r}", param=name)
    return value / 1000


def _header_flag(headers: Any, name: str) -> bool:
    raw = headers.get(name)
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise _Refused(400, f"{name} must be 1 or 0, not {raw!r}", param=name)


_FORCED_ERRORS = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("permission_error", None, "You are not allowed to make this request."),
    404: ("invalid_request_error", "model_not_found",
          "The model does not exist or you do not have access to it."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again later."),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


def _forced_error(status: int, body: bytes | None) -> _Refused:
    """The error X-Fake-Status asks for, with X-Fake-Error-Body's body when given."""
    type_, code, message = _FORCED_ERRORS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None,
                 f"Error {status}, as asked for with {H_STATUS}."))
    return _Refused(status, message, type_=type_, code=code, body=body)


async def _begin(request: web.Request) -> tuple[_FakeUpstream, _Controls]:
    """Read the controls, wait the latency, and answer a forced status."""
    state = request.app[_STATE]
    controls = _read_controls(request, state.options)
    if controls.latency_s:
        await asyncio.sleep(controls.latency_s)
    if controls.status is not None:
        raise _forced_error(controls.status, controls.error_body)
    return state, controls


def _json_object(request: web.Request) -> tuple[dict[str, Any], str]:
    """The request's JSON object body and its model, or a 400."""
    body = request[_BODY]
    if body is _INVALID_JSON or not isinstance(body, dict):
        raise _Refused(400, "We could not parse the JSON body of your request: it must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _Refused(400, "you must provide a model parameter", param="model")
    return body, model


def _int_param(body: dict[str, Any], name: str, *, low: int, high: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"between {low} and {high}"
        raise _Refused(400, f"Invalid '{name}': expected an integer {bounds}.", param=name,
                       code="invalid_value")
    return value


def _output_bound(body: dict[str, Any]) -> int | None:
    """The request's bound on output tokens per choice (the smaller one when both are given)."""
    bounds = [b for name in ("max_completion_tokens", "max_tokens")
              if (b := _int_param(body, name, low=1)) is not None]
    return min(bounds) if bounds else None


def _streaming(body: dict[str, Any]) -> tuple[bool, bool]:
    """Whether the request asks for a stream, and whether for the usage chunk in it."""
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _Refused(400, "Invalid 'stream': expected a boolean.", param="stream", code="invalid_type")
    options = body.get("stream_options")
    include_usage = bool(stream) and isinstance(options, dict) and options.get("include_usage") is True
    return bool(stream), include_usage


def _seed(value: Any) -> int:
    """A number that depends only on ``value`` (JSON), the same on every run."""
    return int.from_bytes(hashlib.blake2b(orjson.dumps(value), digest_size=8).digest(), "big")


def _chat_seed(messages: list[Any]) -> int:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _seed(message.get("content"))
    return _seed(messages)


# --- replies ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Reply:
    pieces: list[str]  # one token each; joined, the text
    text: str
    tokens: int
    finish_reason: str


CHOICE_STRIDE = 613  # how far apart in the word sequence the choices of one request start


def _reply(state: _FakeUpstream, model: str, seed: int, controls: _Controls, bound: int | None) -> _Reply:
    length, finish_reason = controls.reply_tokens, "stop"
    if bound is not None:
        if controls.ignore_max_tokens:
            length = max(length, bound + 1)
        elif length > bound:
            length, finish_reason = bound, "length"
    pieces = state.vocabulary(model).reply(seed, length)
    text = "".join(pieces)
    tokens = count_completion(model, text)
    # Every piece is one token, so this never runs unless an encoding surprises us; the
    # bound holds either way.
    while bound is not None and not controls.ignore_max_tokens and tokens > bound:
        pieces = pieces[:len(pieces) - (tokens - bound)]
        text = "".join(pieces)
        tokens = count_completion(model, text)
        finish_reason = "length"
    return _Reply(pieces, text, tokens, finish_reason)


def _split(pieces: list[str], parts: int) -> list[str]:
    """``pieces`` joined into ``parts`` nearly equal strings (fewer when there are fewer pieces)."""
    if not pieces:
        return []
    parts = min(parts, len(pieces))
    size, extra = divmod(len(pieces), parts)
    out, start = [], 0
    for index in range(parts):
        end = start + size + (index < extra)
        out.append("".join(pieces[start:end]))
        start = end
    return out


def _usage(controls: _Controls, prompt_tokens: int, completion_tokens: int) -> dict[str, Any] | None:
    """The usage object to report: none, the one X-Fake-Usage gives, or the counted one."""
    if controls.no_usage:
        return None
    if controls.usage is not None:
        return controls.usage
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    }


# --- answering -------------------------------------------------------------------------------

def _send_json(controls: _Controls, payload: Any, request_id: str) -> web.Response:
    return _send_body(controls, orjson.dumps(payload), request_id)


def _send_body(controls: _Controls, data: bytes, request_id: str) -> web.Response:
    headers = {"X-Request-Id": request_id}
    if controls.gzip:
        data = gzip.compress(data, compresslevel=1)
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=data, content_type="application/json", headers=headers)


def _event(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


DONE_EVENT = b"data: [DONE]\n\n"


async def _send_stream(request: web.Request, controls: _Controls, events: list[bytes],
                       request_id: str) -> web.StreamResponse:
    """Write each event on its own, ``chunk_delay`` apart; or cut the connection early."""
    response = web.StreamResponse(headers={"Cache-Control": "no-cache", "X-Request-Id": request_id})
    response.content_type = "text/event-stream"
    response.charset = "utf-8"
    await response.prepare(request)
    dropping = controls.drop_after is not None
    if dropping:
        events = events[:-1][:controls.drop_after]  # never the [DONE]
    for position, event in enumerate(events):
        if position and controls.chunk_delay_s:
            await asyncio.sleep(controls.chunk_delay_s)
        await response.write(event)
    if dropping:
        transport = request.transport
        if transport is not None:
            transport.close()  # what was written goes out, then the connection ends mid-body
        return response
    await response.write_eof()
    return response


# --- endpoints -------------------------------------------------------------------------------

async def _chat_completions(request: web.Request) -> web.StreamResponse:
    state, controls = await _begin(request)
    body, model = _json_object(request)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _Refused(400, "Invalid 'messages': expected a non-empty array.", param="messages")
    n = _int_param(body, "n", low=1, high=MAX_CHOICES) or 1
    bound = _output_bound(body)
    stream, include_usage = _streaming(body)
    prompt_tokens = await count_chat_prompt_async(model, body)
    seed = _chat_seed(messages)
    replies = [_reply(state, model, seed + index * CHOICE_STRIDE, controls, bound) for index in range(n)]
    usage = _usage(controls, prompt_tokens, sum(reply.tokens for reply in replies))
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
        return _send_json(controls, completion, request_id)
    head.update(object="chat.completion.chunk", service_tier="default", system_fingerprint=SYSTEM_FINGERPRINT)
    with_usage = include_usage and usage is not None

    def chunk(choices: list[dict[str, Any]]) -> bytes:
        return _event({**head, "choices": choices, "usage": None} if with_usage else {**head, "choices": choices})

    events = [chunk([{"index": index, "delta": {"role": "assistant", "content": "", "refusal": None},
                      "logprobs": None, "finish_reason": None}]) for index in range(n)]
    parts = [_split(reply.pieces, state.options.chunks) for reply in replies]
    for step in range(max(map(len, parts))):
        events.extend(chunk([{"index": index, "delta": {"content": pieces[step]}, "logprobs": None,
                              "finish_reason": None}])
                      for index, pieces in enumerate(parts) if step < len(pieces))
    events.extend(chunk([{"index": index, "delta": {}, "logprobs": None, "finish_reason": reply.finish_reason}])
                  for index, reply in enumerate(replies))
    if with_usage:
        events.append(_event({**head, "choices": [], "usage": usage}))
    events.append(DONE_EVENT)
    return await _send_stream(request, controls, events, request_id)


async def _completions(request: web.Request) -> web.StreamResponse:
    state, controls = await _begin(request)
    body, model = _json_object(request)
    prompts = _prompts(body.get("prompt"), "prompt")
    n = _int_param(body, "n", low=1, high=MAX_CHOICES) or 1
    bound = _int_param(body, "max_tokens", low=1)
    stream, include_usage = _streaming(body)
    prompt_tokens = sum(count_text(model, p) if isinstance(p, str) else len(p) for p in prompts)
    replies = [_reply(state, model, _seed(prompt) + index * CHOICE_STRIDE, controls, bound)
               for prompt in prompts for index in range(n)]
    usage = _usage(controls, prompt_tokens, sum(reply.tokens for reply in replies))
    if usage is not None and controls.usage is None:
        usage = {key: usage[key] for key in ("prompt_tokens", "completion_tokens", "total_tokens")}
    number = state.next_number()
    request_id = f"req_fb{number:024d}"
    head = {"id": f"cmpl-fb{number:024d}", "object": "text_completion", "created": int(time.time()),
            "model": model, "system_fingerprint": SYSTEM_FINGERPRINT}
    if not stream:
        completion = {**head, "choices": [{"text": reply.text, "index": index, "logprobs": None,
                                           "finish_reason": reply.finish_reason}
                                          for index, reply in enumerate(replies)]}
        if usage is not None:
            completion["usage"] = usage
        return _send_json(controls, completion, request_id)
    with_usage = include_usage and usage is not None

    def chunk(choices: list[dict[str, Any]]) -> bytes:
        return _event({**head, "choices": choices, "usage": None} if with_usage else {**head, "choices": choices})

    parts = [_split(reply.pieces, state.options.chunks) for reply in replies]
    events = []
    for step in range(max(map(len, parts))):
        events.extend(chunk([{"text": pieces[step], "index": index, "logprobs": None, "finish_reason": None}])
                      for index, pieces in enumerate(parts) if step < len(pieces))
    events.extend(chunk([{"text": "", "index": index, "logprobs": None, "finish_reason": reply.finish_reason}])
                  for index, reply in enumerate(replies))
    if with_usage:
        events.append(_event({**head, "choices": [], "usage": usage}))
    events.append(DONE_EVENT)
    return await _send_stream(request, controls, events, request_id)


def _prompts(value: Any, name: str) -> list[str | list[int]]:
    """A prompt or an embedding input as a list of texts and token arrays, or a 400."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(item, int) and not isinstance(item, bool) for item in value):
            return [value]
        if all(isinstance(item, str) or (isinstance(item, list) and all(
                isinstance(token, int) and not isinstance(token, bool) for token in item)) for item in value):
            return value
    raise _Refused(400, f"Invalid '{name}': expected a string, an array of strings or of token arrays.",
                   param=name)


async def _embeddings(request: web.Request) -> web.StreamResponse:
    state, controls = await _begin(request)
    body, model = _json_object(request)
    inputs = _prompts(body.get("input"), "input")
    dimensions = _int_param(body, "dimensions", low=1, high=MAX_EMBEDDING_DIMENSIONS) or (
        3072 if "large" in model else 1536)
    encoding_format = body.get("encoding_format") or "float"
    if encoding_format not in ("float", "base64"):
        raise _Refused(400, "Invalid 'encoding_format': expected 'float' or 'base64'.", param="encoding_format")
    data = []
    for index, item in enumerate(inputs):
        offset = _seed(item) % MAX_EMBEDDING_DIMENSIONS
        if encoding_format == "float":
            vector: Any = state.embedding_floats[offset:offset + dimensions]
        else:
            vector = base64.b64encode(state.embedding_bytes[offset * 4:(offset + dimensions) * 4]).decode()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    tokens = sum(count_text(model, item) if isinstance(item, str) else len(item) for item in inputs)
    payload: dict[str, Any] = {"object": "list", "data": data, "model": model}
    if controls.no_usage:
        pass
    elif controls.usage is not None:
        payload["usage"] = controls.usage
    else:
        payload["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
    return _send_json(controls, payload, f"req_fb{state.next_number():024d}")


async def _models(request: web.Request) -> web.StreamResponse:
    state, controls = await _begin(request)
    return _send_body(controls, state.models_body, f"req_fb{state.next_number():024d}")


async def _list_requests(request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps(request.app[RECEIVED]), content_type="application/json")


async def _clear_requests(request: web.Request) -> web.Response:
    request.app[RECEIVED].clear()
    return web.Response(status=204)
