"""The admin HTTP API (``/admin/...``, bearer admin token): usage reports, series, forecasts,
recommendations, event export, and budgets.

Input problems are 400 with a message that says what to fix; money in JSON is a decimal
string of USD. The same operations back the ``farebox`` CLI through ``proxy.control``.
"""

from __future__ import annotations

from urllib.parse import unquote

import orjson
from aiohttp import web

from proxy.control import budgets as control

from proxy.control import export
from proxy.control.executions import execution_summary

from proxy.control import recommendations as advice
from proxy.control import reports
from proxy.control.params import check_params
from proxy.http.appkeys import SERVICES
from proxy.errors import BadRequest, NotFound
from proxy.apis.body import parse_json_object

__all__ = ["routes"]


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


def _scope_id(request: web.Request) -> tuple[str, str]:
    return request.match_info["scope"], unquote(request.match_info["id"])


async def usage(request: web.Request) -> web.Response:
    q = request.query
    if "scope" not in q or "id" not in q:
        raise BadRequest("Query parameters 'scope' and 'id' are required, e.g. ?scope=project&id=acme&period=day.",
                         param="scope" if "scope" not in q else "id")
    check_params(q, ("scope", "id", "period", "at", "top"))
    report = await reports.usage_report(request.app[SERVICES].ledger, q["scope"], q["id"],
                                        q.get("period", "day"), q.get("at"), q.get("top"))
    return _json(report)


async def usage_series(request: web.Request) -> web.Response:
    q = request.query
    check_params(q, ("scope", "id", "granularity", "from", "to"))
    series = await reports.usage_series(request.app[SERVICES].ledger, q["scope"], q["id"],
                                        q.get("granularity", "hour"), q.get("from"), q.get("to"))
    return _json(series)


async def forecast(request: web.Request) -> web.Response:
    q = request.query
    check_params(q, ("scope", "id", "period"))
    return _json(await reports.forecast(request.app[SERVICES].ledger, q["scope"], q["id"], q.get("period", "month")))


async def recommendations(request: web.Request) -> web.Response:
    q = request.query
    check_params(q, ("scope", "id", "period"))
    fb = request.app[SERVICES]
    return _json(await advice.recommendations(fb.ledger, fb.catalog, q["scope"], q["id"], q.get("period", "month")))


async def events(request: web.Request) -> web.Response:
    """A page of recorded events, NDJSON (or CSV); ``X-Next-Since`` is the next page's cursor."""
    q = request.query
    check_params(q, ("project", "since", "limit", "format"), required=())
    fmt = export.parse_format(q.get("format"), request.headers.get("Accept", ""))
    page = await export.export_page(request.app[SERVICES].ledger, q.get("project"), q.get("since"), q.get("limit"))
    body, content_type = ((export.to_csv(page.rows), "text/csv") if fmt == "csv"
                          else (export.to_ndjson(page.rows), "application/x-ndjson"))
    return web.Response(body=body, content_type=content_type, charset="utf-8",
                        headers={"X-Next-Since": page.next_since, "X-Event-Count": str(len(page.rows))})


async def put_budget(request: web.Request) -> web.Response:
    scope, budget_id = _scope_id(request)
    body = parse_json_object(await request.read())
    status = await control.set_budget(request.app[SERVICES].ledger, scope, budget_id, body)
    return _json(status)


async def get_budget(request: web.Request) -> web.Response:
    scope, budget_id = _scope_id(request)
    status = await control.get_budget(request.app[SERVICES].ledger, scope, budget_id)
    if status is None:
        raise NotFound(f"No budget for {scope} '{budget_id}'.", code="budget_not_found")
    return _json(status)


async def delete_budget(request: web.Request) -> web.Response:
    scope, budget_id = _scope_id(request)
    if not await control.delete_budget(request.app[SERVICES].ledger, scope, budget_id):
        raise NotFound(f"No budget for {scope} '{budget_id}'.", code="budget_not_found")
    return _json({"deleted": True, "scope": scope, "id": budget_id})


async def list_budgets(request: web.Request) -> web.Response:
    q = request.query
    check_params(q, ("scope", "project"), required=())
    budgets = await control.list_budgets(request.app[SERVICES].ledger, q.get("scope"), q.get("project"))
    return _json({"budgets": budgets})


async def execution(request: web.Request) -> web.Response:
    check_params(request.query, (), required=())
    return _json(await execution_summary(request.app[SERVICES].ledger, unquote(request.match_info["id"])))


def routes() -> list[web.RouteDef]:
    return [
        web.get("/admin/usage", usage),
        web.get("/admin/usage/series", usage_series),
        web.get("/admin/forecast", forecast),
        web.get("/admin/recommendations", recommendations),
        web.get("/admin/events", events),
        web.get("/admin/executions/{id:.+}", execution),
        web.get("/admin/budgets", list_budgets),
        web.put("/admin/budgets/{scope}/{id:.+}", put_budget),
        web.get("/admin/budgets/{scope}/{id:.+}", get_budget),
        web.delete("/admin/budgets/{scope}/{id:.+}", delete_budget),
    ]
