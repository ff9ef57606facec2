"""The admin API's farebox keys (``/admin/keys``): create (201, the secret shown this once),
list a project's, show one, revoke (``DELETE``) and rotate; and rate limits
(``/admin/limits/{project|key}/{id}``: PUT, GET, DELETE). No answer but a create's or a
rotate's holds a secret, and none holds a secret's hash."""

from __future__ import annotations

import orjson
from aiohttp import web

from proxy.apis.body import parse_json_object
from proxy.control import keys, limits
from proxy.errors import BadRequest
from proxy.http.appkeys import SERVICES

__all__ = ["routes"]


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


def _changed(request: web.Request) -> None:
    """This process forgets the keys it remembers at once (the others within a second)."""
    auth = request.app[SERVICES].auth
    if auth is not None:
        auth.resolver.forget()


async def create_key(request: web.Request) -> web.Response:
    body = parse_json_object(await request.read())
    return _json(await keys.create_key(request.app[SERVICES].ledger, body), status=201)


async def list_keys(request: web.Request) -> web.Response:
    q = request.query
    for name in q:
        if name != "project":
            raise BadRequest(f"Unknown query parameter '{name}': use project.", param=name, code="invalid_value")
    if not q.get("project"):
        raise BadRequest("Query parameter 'project' is required, e.g. /admin/keys?project=acme.", param="project",
                         code="invalid_value")
    return _json({"keys": await keys.list_keys(request.app[SERVICES].ledger, q["project"])})


async def show_key(request: web.Request) -> web.Response:
    return _json(await keys.show_key(request.app[SERVICES].ledger, request.match_info["id"]))


async def revoke_key(request: web.Request) -> web.Response:
    view = await keys.revoke_key(request.app[SERVICES].ledger, request.match_info["id"])
    _changed(request)
    return _json(view)


async def rotate_key(request: web.Request) -> web.Response:
    issued = await keys.rotate_key(request.app[SERVICES].ledger, request.match_info["id"])
    _changed(request)
    return _json(issued)


async def set_limits(request: web.Request) -> web.Response:
    body = parse_json_object(await request.read())
    view = await limits.set_limits(request.app[SERVICES].ledger, request.match_info["scope"],
                                   request.match_info["id"], body)
    _changed(request)
    return _json(view)


async def show_limits(request: web.Request) -> web.Response:
    return _json(await limits.show_limits(request.app[SERVICES].ledger, request.match_info["scope"],
                                          request.match_info["id"]))


async def delete_limits(request: web.Request) -> web.Response:
    view = await limits.delete_limits(request.app[SERVICES].ledger, request.match_info["scope"],
                                      request.match_info["id"])
    _changed(request)
    return _json(view)


def routes() -> list[web.RouteDef]:
    return [
        web.post("/admin/keys", create_key),
        web.get("/admin/keys", list_keys),
        web.get("/admin/keys/{id}", show_key),
        web.delete("/admin/keys/{id}", revoke_key),
        web.post("/admin/keys/{id}/rotate", rotate_key),
        web.put("/admin/limits/{scope}/{id}", set_limits),
        web.get("/admin/limits/{scope}/{id}", show_limits),
        web.delete("/admin/limits/{scope}/{id}", delete_limits),
    ]
