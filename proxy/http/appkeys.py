"""Typed keys for what the application shares with its handlers."""

from __future__ import annotations

from aiohttp import web

from proxy.compute import ResourceTable
from proxy.http.edge import Edge
from proxy.services import Services
from proxy.settings import Settings

__all__ = ["SETTINGS", "SERVICES", "EDGE", "RESOURCES", "REQUEST_ID", "ADMIN_ACCESS"]

SETTINGS = web.AppKey("settings", Settings)
SERVICES = web.AppKey("services", Services)
EDGE = web.AppKey("edge", Edge)
RESOURCES = web.AppKey("resources", ResourceTable)   # the resource price table of usage records
REQUEST_ID = web.RequestKey("request_id", str)
ADMIN_ACCESS = web.RequestKey("admin_access", str)  # "write" (admin_token) or "read" (admin_read_token)
