"""The data-plane routes aiohttp serves: the requests ``proxy.http.front`` hands over for chat
completions (adapted to an ``Exchange``), ``GET /v1/models`` and ``/v1/models/{model}`` passed
through, and 404 for the rest."""

from __future__ import annotations

import asyncio
from urllib.parse import unquote

from aiohttp import web
from multidict import CIMultiDict

from proxy.errors import FareboxError, NotFound, PayloadTooLarge, RequestTimeout
from proxy.flow import serve_chat
from proxy.http.appkeys import EDGE, REQUEST_ID, SERVICES
from proxy.upstream.relay import response_headers

__all__ = ["chat_completions", "model", "models", "not_found", "read_body"]


async def read_body(request: web.Request, limit: int, timeout_s: float) -> bytes:
    """The request body, refusing (413) anything over ``limit`` bytes before reading it all, and
    (408) a body not all here within ``timeout_s``."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"Request body of {request.content_length} bytes exceeds the limit of {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes.")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout("The request body did not arrive in time.") from None
    return b"".join(chunks)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """``POST /v1/chat/completions`` as aiohttp serves it: the requests ``proxy.http.front`` hands
    over (chunked bodies, ``Expect: 100-continue``, HTTP/1.0, unusual headers)."""
    fb, edge = request.app[SERVICES], request.app[EDGE]
    ex = _AiohttpExchange(request, await read_body(request, fb.settings.max_body_bytes, edge.body_timeout_s))
    try:
        await serve_chat(fb, ex)
    except Exception as exc:
        if ex.response is None or not ex.response.prepared:
            raise  # no answer begun: the middleware answers the error
        # An answer had begun: cut it, as farebox's own server does, so it cannot pass for whole.
        if not isinstance(exc, (FareboxError, ConnectionError)):
            edge.crashed(ex.request_id)
        ex.cut()
    assert ex.response is not None, "serve_chat answered nothing"
    return ex.response


class _AiohttpExchange:
    __slots__ = ("request", "request_id", "headers", "body", "response")

    def __init__(self, request: web.Request, body: bytes) -> None:
        self.request, self.request_id, self.headers, self.body = request, request[REQUEST_ID], request.headers, body
        self.response: web.StreamResponse | None = None

    def reply(self, status: int, headers: CIMultiDict[str], body: bytes) -> None:
        self.response = web.Response(status=status, body=body, headers=headers)

    async def start(self, status: int, headers: CIMultiDict[str]) -> None:
        self.response = web.StreamResponse(status=status, headers=headers)
        await self.response.prepare(self.request)

    async def write(self, data: bytes) -> None:
        assert self.response is not None
        await self.response.write(data)

    async def finish(self) -> None:
        assert self.response is not None
        await self.response.write_eof()

    def cut(self) -> None:
        if self.request.transport is not None:
            self.request.transport.close()


async def models(request: web.Request) -> web.StreamResponse:
    """``GET /v1/models`` passes through unmetered."""
    return await _pass_through(request, "/models")


_MODELS_PREFIX = "/v1/models/"


async def model(request: web.Request) -> web.StreamResponse:
    """``GET /v1/models/{model}`` (the SDKs' ``models.retrieve``) passes through unmetered. The
    id is one path segment, sent on as the client encoded it (``%2F`` for a ``/`` in an id, as
    the SDKs send it); a dot segment, which would name another path upstream, is not found."""
    raw_path = request.rel_url.raw_path
    segment = raw_path[len(_MODELS_PREFIX):]
    if not raw_path.startswith(_MODELS_PREFIX) or "/" in segment or unquote(segment) in (".", ".."):
        raise NotFound(f"No such endpoint: GET {request.path}.", code="unknown_endpoint")
    return await _pass_through(request, f"/models/{segment}")


async def _pass_through(request: web.Request, path: str) -> web.StreamResponse:
    """The upstream's answer to ``GET path`` (below its base URL) with the request's query string:
    status, headers (as ``response_headers`` makes them) and body as the upstream sent them."""
    fb = request.app[SERVICES]
    async with fb.upstream.send("GET", path, request.headers, query=request.rel_url.raw_query_string) as upstream:
        payload = await fb.upstream.read(upstream)
        headers = response_headers(upstream.headers, [("X-Request-Id", request[REQUEST_ID])])
        return web.Response(status=upstream.status, body=payload, headers=headers)


async def not_found(request: web.Request) -> web.StreamResponse:
    raise NotFound(f"farebox does not serve {request.method} {request.path}: metered endpoints are "
                   "POST /v1/chat/completions; GET /v1/models and GET /v1/models/{model} pass through.",
                   code="unknown_endpoint")
