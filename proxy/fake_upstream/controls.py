"""What one request to the fake upstream asks for: its JSON body, read once, and its X-Fake-*
headers (see the package's docstring); a request it cannot read is ``Refused`` in OpenAI's shape."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

MAX_CHOICES = 128
MAX_REPLY_TOKENS = 1_000_000

# Request headers that steer one response (see the package's docstring).
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
H_CONTENT_ENCODING = "X-Fake-Content-Encoding"


@dataclass(frozen=True, slots=True)
class Options:
    latency_s: float
    chunks: int
    chunk_delay_s: float
    reply_tokens: int


@dataclass(frozen=True, slots=True)
class Controls:
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
    content_encoding: str | None


class Refused(Exception):
    """The request is answered with an error instead; carries the status and the body."""

    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, body: bytes | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body if body is not None else orjson.dumps(
            {"error": {"message": message, "type": type_, "param": param, "code": code}})
BODY = web.RequestKey("fake_upstream_body", object)
INVALID_JSON = object()


async def begin(request: web.Request, options: Options) -> Controls:
    """Read the controls, wait the latency, and answer a forced status (raised as ``Refused``)."""
    controls = read_controls(request, options)
    if controls.latency_s:
        await asyncio.sleep(controls.latency_s)
    if controls.status is not None:
        raise forced_error(controls.status, controls.error_body)
    return controls


def read_controls(request: web.Request, options: Options) -> Controls:
    headers = request.headers
    status = _header_int(headers, H_STATUS, None)
    if status is not None and not 400 <= status <= 599:
        raise Refused(400, f"{H_STATUS} must be between 400 and 599", param=H_STATUS)
    usage: dict[str, Any] | None = None
    if (raw_usage := headers.get(H_USAGE)) is not None:
        try:
            usage = orjson.loads(raw_usage)
        except orjson.JSONDecodeError:
            usage = None
        if not isinstance(usage, dict):
            raise Refused(400, f"{H_USAGE} must be a JSON object", param=H_USAGE)
    error_body = headers.get(H_ERROR_BODY)
    return Controls(
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
        content_encoding=headers.get(H_CONTENT_ENCODING),
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
        raise Refused(400, f"{name} must be a whole number{limit}, not {raw!r}", param=name)
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
        raise Refused(400, f"{name} must be a number of milliseconds, not {raw!r}", param=name)
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
    raise Refused(400, f"{name} must be 1 or 0, not {raw!r}", param=name)


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


def forced_error(status: int, body: bytes | None) -> Refused:
    """The error X-Fake-Status asks for, with X-Fake-Error-Body's body when given."""
    type_, code, message = _FORCED_ERRORS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None,
                 f"Error {status}, as asked for with {H_STATUS}."))
    return Refused(status, message, type_=type_, code=code, body=body)


def json_object(request: web.Request) -> tuple[dict[str, Any], str]:
    """The request's JSON object body and its model, or a 400."""
    body = request[BODY]
    if body is INVALID_JSON or not isinstance(body, dict):
        raise Refused(400, "We could not parse the JSON body of your request: it must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise Refused(400, "you must provide a model parameter", param="model")
    return body, model


def int_param(body: dict[str, Any], name: str, *, low: int, high: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"between {low} and {high}"
        raise Refused(400, f"Invalid '{name}': expected an integer {bounds}.", param=name,
                       code="invalid_value")
    return value


def output_bound(body: dict[str, Any]) -> int | None:
    """The request's bound on output tokens per choice (the smaller one when both are given)."""
    bounds = [b for name in ("max_completion_tokens", "max_tokens")
              if (b := int_param(body, name, low=1)) is not None]
    return min(bounds) if bounds else None


def streaming(body: dict[str, Any]) -> tuple[bool, bool]:
    """Whether the request asks for a stream, and whether for the usage chunk in it."""
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise Refused(400, "Invalid 'stream': expected a boolean.", param="stream", code="invalid_type")
    options = body.get("stream_options")
    include_usage = bool(stream) and isinstance(options, dict) and options.get("include_usage") is True
    return bool(stream), include_usage
