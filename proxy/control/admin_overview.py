"""The admin API's overview routes: ``GET /admin/projects`` (every project's spend today and this
month), ``GET /admin/events/recent?project=P`` (its newest events), ``GET /admin/alerts?project=P``
(the alert thresholds its budgets crossed) and ``GET /admin/access`` (what the token presented
may do: ``write`` for the admin token, ``read`` for the read-only one)."""

from __future__ import annotations

import orjson
from aiohttp import web

from proxy.control import overview
from proxy.control.params import check_params
from proxy.errors import BadRequest
from proxy.http.appkeys import ADMIN_ACCESS, SERVICES

__all__ = ["routes"]


def _json(data: object) -> web.Response:
    return web.Response(body=orjson.dumps(data), content_type="application/json")


def _no_params(request: web.Request) -> None:
    for name in request.query:
        raise BadRequest(f"Unknown query parameter '{name}': {request.path} takes none.", param=name,
                         code="invalid_value")


async def projects(request: web.Request) -> web.Response:
    _no_params(request)
    return _json(await overview.projects_overview(request.app[SERVICES].ledger))


async def recent_events(request: web.Request) -> web.Response:
    q = request.query
    check_params(q, ("project", "limit"), required=())
    return _json(await overview.recent_events(request.app[SERVICES].ledger, q.get("project"), q.get("limit")))


async def alerts(request: web.Request) -> web.Response:
    q = request.query
    check_params(q, ("project",), required=())
    return _json(await overview.alerts_fired(request.app[SERVICES].ledger, q.get("project")))


async def access(request: web.Request) -> web.Response:
    _no_params(request)
    return _json({"access": request[ADMIN_ACCESS]})


def routes() -> list[web.RouteDef]:
    return [
        web.get("/admin/projects", projects),
        web.get("/admin/events/recent", recent_events),
        web.get("/admin/alerts", alerts),
        web.get("/admin/access", access),
    ]
