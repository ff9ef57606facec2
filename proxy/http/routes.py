"""The data-plane routes aiohttp serves: the requests to metered endpoints that
``proxy.http.front`` hands over (adapted to an ``Exchange``), the endpoints passed through
unmetered (``PASSED_THROUGH``: models, stored responses, token counts), and 404 for the rest."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from urllib.parse import unquote

import orjson

from aiohttp import web
from multidict import CIMultiDict

from proxy.errors import FareboxError, NotFound, PayloadTooLarge, RequestTimeout
from proxy.apis.registry import METERED
from proxy.flow import serve_metered
from proxy.http.appkeys import EDGE, REQUEST_ID, SERVICES
from proxy.upstream.relay import response_headers

__all__ = ["metered", "pass_through", "routes", "not_found", "read_body", "PASSED_THROUGH"]


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


async def metered(request: web.Request) -> web.StreamResponse:
    """A metered endpoint (``proxy.apis.registry.METERED``) as aiohttp serves it: the requests
    ``proxy.http.front`` hands over (chunked bodies, ``Expect: 100-continue``, HTTP/1.0, unusual
    headers)."""
    fb, edge = request.app[SERVICES], request.app[EDGE]
    ex = _AiohttpExchange(request, await read_body(request, fb.settings.max_body_bytes, edge.body_timeout_s))
    try:
        await serve_metered(fb, ex)
    except Exception as exc:
        if ex.response is None or not ex.response.prepared:
            raise  # no answer begun: the middleware answers the error
        # An answer had begun: cut it, as farebox's own server does, so it cannot pass for whole.
        if not isinstance(exc, (FareboxError, ConnectionError)):
            edge.crashed(ex.request_id)
        ex.cut()
    assert ex.response is not None, "serve_metered answered nothing"
    return ex.response


class _AiohttpExchange:
    __slots__ = ("request", "request_id", "path", "query", "headers", "body", "response")

    def __init__(self, request: web.Request, body: bytes) -> None:
        self.request, self.request_id, self.headers, self.body = request, request[REQUEST_ID], request.headers, body
        self.path, self.query = request.path, request.rel_url.raw_query_string
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


# Where a client's path lies below each family's upstream base URL: OpenAI's base ends in /v1
# (https://api.openai.com/v1), Anthropic's does not (https://api.anthropic.com).
_ROOT = {"openai": "/v1", "anthropic": ""}


def pass_through(family: str, method: str, shape: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A handler that passes ``method shape`` (a path with ``{id}`` segments) through to
    ``family``'s upstream, unmetered: nothing it does is generated or billed. Each ``{id}`` is
    one path segment, sent on as the client encoded it (``%2F`` for a ``/`` in an id, as the SDKs
    send it); a dot segment, which would name another path upstream, is not found."""
    parts = shape.split("/")

    async def handler(request: web.Request) -> web.StreamResponse:
        raw_parts = request.rel_url.raw_path.split("/")
        if len(raw_parts) != len(parts) or any(
                (p == "{id}" and (not r or unquote(r) in (".", ".."))) or (p != "{id}" and p != r)
                for p, r in zip(parts, raw_parts)):
            raise NotFound(f"No such endpoint: {request.method} {request.path}.", code="unknown_endpoint")
        fb, edge = request.app[SERVICES], request.app[EDGE]
        body = await read_body(request, fb.settings.max_body_bytes, edge.body_timeout_s) if method == "POST" else None
        model = _model_of(body)
        assert fb.auth is not None
        await fb.auth.admit(request.headers, family, model)   # a farebox key's checks; auth = "keys" needs one
        upstream = fb.upstream_for(family, model)
        path = request.rel_url.raw_path[len(_ROOT[family]):]
        async with upstream.send(method, path, request.headers, body, query=request.rel_url.raw_query_string) as answer:
            payload = await upstream.read(answer)
            headers = response_headers(answer.headers, [("X-Request-Id", request[REQUEST_ID])])
            return web.Response(status=answer.status, body=payload, headers=headers)

    handler.__doc__ = f"``{method} {shape}`` passed through to the {family} upstream, unmetered."
    return handler


def _model_of(body: bytes | None) -> str | None:
    """The model a JSON body names, if any."""
    if body:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if isinstance(parsed, dict) and isinstance(parsed.get("model"), str):
            return parsed["model"]
    return None


PASSED_THROUGH = (
    ("openai", "GET", "/v1/models"),
    ("openai", "GET", "/v1/models/{id}"),
    ("openai", "POST", "/v1/responses/input_tokens"),
    ("openai", "GET", "/v1/responses/{id}"),
    ("openai", "DELETE", "/v1/responses/{id}"),
    ("openai", "GET", "/v1/responses/{id}/input_items"),
    ("openai", "POST", "/v1/responses/{id}/cancel"),
    ("anthropic", "POST", "/v1/messages/count_tokens"),
)
"""Endpoints passed through unmetered (nothing is generated): family, method, path."""


def routes() -> list[web.AbstractRouteDef]:
    """The data plane's routes: every metered path, the pass-through endpoints, 404 for the rest."""
    table = [web.post(path, metered) for path in METERED]
    for family, method, shape in PASSED_THROUGH:
        pattern = shape.replace("{id}", "{id:[^/]+}")
        table.append(web.route(method, pattern, pass_through(family, method, shape)))
    return table


async def not_found(request: web.Request) -> web.StreamResponse:
    raise NotFound(f"farebox does not serve {request.method} {request.path}: metered endpoints are "
                   f"{', '.join('POST ' + path for path in METERED)}; "
                   f"{', '.join(method + ' ' + shape for _, method, shape in PASSED_THROUGH)} pass through.",
                   code="unknown_endpoint")
