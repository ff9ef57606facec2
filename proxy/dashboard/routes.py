"""The dashboard: ``GET /dashboard`` (one page) and ``GET /dashboard/assets/<file>`` (its script and
style sheet), all shipped in this package (``assets/``), nothing fetched from elsewhere.

The page holds no data and needs no token to load: its script asks for a token in a sign-in form,
keeps it in the tab's ``sessionStorage`` and calls the admin API (``/admin/...``) with it as
``Authorization: Bearer``. Every answer carries a Content-Security-Policy that allows scripts,
styles and requests from this origin only, and no framing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

__all__ = ["routes", "ASSETS", "SECURITY_HEADERS"]

_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
ASSETS: tuple[str, ...] = ("index.html", "app.js", "project.js", "charts.js", "style.css", "icon.svg")

SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    content_type: str
    etag: str


def _load() -> dict[str, _Asset]:
    folder = resources.files(__package__).joinpath("assets")
    out = {}
    for name in ASSETS:
        body = folder.joinpath(name).read_bytes()
        suffix = name[name.rindex("."):]
        out[name] = _Asset(body, _TYPES[suffix], '"' + hashlib.sha256(body).hexdigest()[:16] + '"')
    return out


def _answer(request: web.Request, asset: _Asset) -> web.Response:
    headers = {**SECURITY_HEADERS, "ETag": asset.etag, "Cache-Control": "no-cache"}
    if request.headers.get("If-None-Match") == asset.etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=asset.body, content_type=asset.content_type, charset="utf-8", headers=headers)


def routes() -> list[web.RouteDef]:
    """The dashboard's routes, with its files read once, here."""
    assets = _load()

    async def page(request: web.Request) -> web.Response:
        return _answer(request, assets["index.html"])

    async def asset(request: web.Request) -> web.Response:
        found = assets.get(request.match_info["name"])
        if found is None or request.match_info["name"] == "index.html":
            raise web.HTTPNotFound()
        return _answer(request, found)

    return [
        web.get("/dashboard", page),
        web.get("/dashboard/", page),
        web.get("/dashboard/assets/{name}", asset),
    ]
