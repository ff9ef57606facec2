"""Azure OpenAI's deployment paths on the fake upstream, so a configured ``api = "azure"``
upstream can be tried offline.

``POST /openai/deployments/{deployment}/chat/completions`` (and ``/completions``,
``/embeddings``) are answered by the fake's own OpenAI handlers, after the checks Azure makes
first: an ``api-version`` query parameter (else 404, as Azure answers a path without one) and
an ``api-key`` header (else 401, Azure's wording). A body that names no model (as Azure's SDK
clients may send it) is answered for the deployment's name. Errors come in Azure's shape,
``{"error": {"code": "...", "message": "..."}}``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from proxy.fake_upstream.controls import BODY, Refused

__all__ = ["azure_routes"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_NO_KEY = ("Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key "
           "for an active subscription and use a correct regional API endpoint for your resource.")


def _azure_error(status: int, message: str) -> Refused:
    return Refused(status, message, body=orjson.dumps({"error": {"code": str(status), "message": message}}))


def _deployed(handler: Handler) -> Handler:
    """``handler`` behind Azure's checks of the API version and the key."""

    async def deployed(request: web.Request) -> web.StreamResponse:
        if not request.query.get("api-version"):
            raise _azure_error(404, "Resource not found")
        if not request.headers.get("api-key"):
            raise _azure_error(401, _NO_KEY)
        body = request[BODY]
        if isinstance(body, dict) and "model" not in body:
            request[BODY] = {**body, "model": request.match_info["deployment"]}
        return await handler(request)

    return deployed


def azure_routes(*, chat: Handler, completions: Handler, embeddings: Handler) -> list[web.RouteDef]:
    """The deployment routes, answered by the fake's handlers of the same OpenAI endpoints."""
    base = "/openai/deployments/{deployment}"
    return [
        web.post(f"{base}/chat/completions", _deployed(chat)),
        web.post(f"{base}/completions", _deployed(completions)),
        web.post(f"{base}/embeddings", _deployed(embeddings)),
    ]
