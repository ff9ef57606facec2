"""The usage-record routes aiohttp serves (``proxy.http.front`` hands them over, as every path
outside ``METERED``): ``POST /v1/usage-records`` (``proxy.compute``), and the holds
``POST /v1/usage-records/holds``, ``POST /v1/usage-records/holds/{id}/settle``,
``DELETE /v1/usage-records/holds/{id}`` (``proxy.holds``). Errors are OpenAI-shaped, as on
every ``/v1/`` path but Anthropic's."""

from __future__ import annotations

import orjson
from aiohttp import web

from pricing.money import nano_to_usd
from proxy import holds
from proxy.apis.body import parse_json_object
from proxy.compute import record_usage
from proxy.http.appkeys import EDGE, REQUEST_ID, RESOURCES, SERVICES
from proxy.http.routes import read_body
from proxy.services import Services

__all__ = ["routes"]

def _json(data: object, status: int, extra: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json", headers=extra)


async def _body(request: web.Request, fb: Services) -> dict:
    return parse_json_object(await read_body(request, fb.settings.max_body_bytes, request.app[EDGE].body_timeout_s))


async def usage_record(request: web.Request) -> web.Response:
    fb = request.app[SERVICES]
    answer = await record_usage(fb, request.app[RESOURCES], request.headers, await _body(request, fb), request[REQUEST_ID])
    return _json(answer, 201, {"X-Farebox-Cost-USD": answer["cost_usd"]})


async def create_hold(request: web.Request) -> web.Response:
    fb = request.app[SERVICES]
    return _json(await holds.create_hold(fb, request.app[RESOURCES], request.headers, await _body(request, fb)), 201)


async def settle_hold(request: web.Request) -> web.Response:
    fb = request.app[SERVICES]
    answer = await holds.settle_hold(fb, request.headers, request.match_info["id"], await _body(request, fb))
    return _json(answer, 200, {"X-Farebox-Cost-USD": answer["cost_usd"]})


async def release_hold(request: web.Request) -> web.Response:
    answer = await holds.release_hold(request.app[SERVICES], request.headers, request.match_info["id"])
    return _json(answer, 200, {"X-Farebox-Cost-USD": nano_to_usd(0)})


def routes() -> list[web.RouteDef]:
    return [
        web.post("/v1/usage-records", usage_record),
        web.post("/v1/usage-records/holds", create_hold),
        web.post("/v1/usage-records/holds/{id}/settle", settle_hold),
        web.delete("/v1/usage-records/holds/{id}", release_hold),
    ]
