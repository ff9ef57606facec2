"""The budget and reading commands over the running proxy's admin API (``--url``).

Each operation is one request to the route ``proxy.control.admin`` serves, so the answer is
the proxy's own ledger. An unreachable proxy, a refused or missing admin token and a disabled
admin API are one-line ``CommandError``s (exit status 2); a 400 is the API's message, as
``BadRequest`` (exit status 2, as on the direct path); a 404 for a budget is "no budget".
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import orjson

from proxy.cli.source import EXIT_FAILURE, CommandError, Source
from proxy.control import export
from proxy.errors import BadRequest, NotFound

__all__ = ["AdminSource"]

T = TypeVar("T")

CONNECT_TIMEOUT_S = 10.0
TOTAL_TIMEOUT_S = 300.0   # one export page of up to export.MAX_LIMIT events fits well within it


@dataclass
class _Reply:
    status: int
    body: bytes
    headers: Any


def _error_of(body: bytes) -> tuple[str, str | None]:
    """The API's error message and code, from its OpenAI-shaped error body."""
    try:
        error = orjson.loads(body).get("error") or {}
        return str(error.get("message") or ""), error.get("code")
    except (orjson.JSONDecodeError, AttributeError):
        return body[:200].decode(errors="replace").strip(), None


def _path_part(value: str) -> str:
    return quote(value, safe="/@")


class AdminSource:
    """The ``Source`` operations as admin API requests to one proxy."""

    def __init__(self, base: str, token: str | None) -> None:
        self.base = base
        self.token = token
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def for_url(cls, url: str, token: str | None) -> "AdminSource":
        """The proxy's address as the operator gives it (``/v1``, the SDK's base URL, is allowed)."""
        base = url.strip().rstrip("/")
        if not re.match(r"^https?://[^/\s]+", base):
            raise CommandError(f"invalid --url {url!r}: the proxy's address, e.g. http://127.0.0.1:8080")
        return cls(base.removesuffix("/v1"), token)

    async def run(self, action: Callable[[Source], Awaitable[T]]) -> T:
        timeout = aiohttp.ClientTimeout(total=TOTAL_TIMEOUT_S, sock_connect=CONNECT_TIMEOUT_S)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
            self._session = session
            try:
                return await action(self)
            finally:
                self._session = None

    async def _request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                       body: dict[str, Any] | None = None, missing_ok: bool = False) -> _Reply | None:
        assert self._session is not None, "inside run() only"
        query = {k: str(v) for k, v in (params or {}).items() if v is not None}
        data = orjson.dumps(body) if body is not None else None
        try:
            async with self._session.request(method, self.base + path, params=query, data=data,
                                             headers={"Content-Type": "application/json"} if data else None) as resp:
                reply = _Reply(resp.status, await resp.read(), resp.headers)
        except aiohttp.ClientConnectorError as exc:
            raise CommandError(f"cannot reach farebox at {self.base}: {exc.os_error.strerror or exc}") from None
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise CommandError(f"no answer from farebox at {self.base}: {exc or type(exc).__name__}") from None
        if reply.status < 300:
            return reply
        message, code = _error_of(reply.body)
        if reply.status == 404 and code in ("budget_not_found", "key_not_found") and missing_ok:
            return None
        if reply.status == 400:
            raise BadRequest(message)
        if reply.status in (401, 403):
            how = ("refused the admin token" if self.token else "needs the admin token")
            raise CommandError(f"the admin API at {self.base} {how} ({reply.status}): give the token "
                               "`farebox serve` runs with, by --admin-token or FAREBOX_ADMIN_TOKEN")
        if reply.status == 404 and code == "project_not_found":
            raise NotFound(message, code=code)
        if reply.status == 404 and code == "admin_disabled":
            raise CommandError(f"the admin API at {self.base} is disabled: start `farebox serve` with "
                               "--admin-token (or FAREBOX_ADMIN_TOKEN)")
        if reply.status == 404:
            raise CommandError(f"{self.base}{path} answered 404: is {self.base} a farebox proxy?")
        raise CommandError(f"farebox at {self.base} answered {reply.status}: {message}", EXIT_FAILURE)

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        reply = await self._request(method, path, **kwargs)
        if reply is None:
            return None
        try:
            return orjson.loads(reply.body)
        except orjson.JSONDecodeError:
            raise CommandError(f"{self.base}{path} did not answer with JSON: is {self.base} a farebox proxy?") from None

    def _budget_path(self, scope: str, scope_id: str) -> str:
        return f"/admin/budgets/{_path_part(scope)}/{_path_part(scope_id)}"

    async def set_budget(self, scope: str, scope_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._json("PUT", self._budget_path(scope, scope_id), body=body)

    async def get_budget(self, scope: str, scope_id: str) -> dict[str, Any] | None:
        return await self._json("GET", self._budget_path(scope, scope_id), missing_ok=True)

    async def delete_budget(self, scope: str, scope_id: str) -> bool:
        return await self._json("DELETE", self._budget_path(scope, scope_id), missing_ok=True) is not None

    async def list_budgets(self, scope: str | None) -> list[dict[str, Any]]:
        return (await self._json("GET", "/admin/budgets", params={"scope": scope}))["budgets"]

    async def usage_report(self, scope: str, scope_id: str, period: str, at: str | None,
                           top: str | None) -> dict[str, Any]:
        return await self._json("GET", "/admin/usage", params={"scope": scope, "id": scope_id, "period": period,
                                                               "at": at, "top": top})

    async def usage_series(self, scope: str, scope_id: str, granularity: str, start: str | None,
                           end: str | None) -> dict[str, Any]:
        return await self._json("GET", "/admin/usage/series", params={
            "scope": scope, "id": scope_id, "granularity": granularity, "from": start, "to": end})

    async def forecast(self, scope: str, scope_id: str, period: str) -> dict[str, Any]:
        return await self._json("GET", "/admin/forecast", params={"scope": scope, "id": scope_id, "period": period})

    async def recommendations(self, project: str, period: str) -> dict[str, Any]:
        return await self._json("GET", "/admin/recommendations", params={"scope": "project", "id": project,
                                                                           "period": period})

    async def export_page(self, project: str | None, since: str | None, limit: int) -> export.Page:
        reply = await self._request("GET", "/admin/events", params={"project": project, "since": since,
                                                                    "limit": limit, "format": "ndjson"})
        assert reply is not None
        next_since = reply.headers.get("X-Next-Since")
        if next_since is None:
            raise CommandError(f"{self.base}/admin/events gave no X-Next-Since: is {self.base} a farebox proxy?")
        rows = [orjson.loads(line) for line in reply.body.splitlines() if line.strip()]
        return export.Page(rows, next_since)

    async def create_key(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._json("POST", "/admin/keys", body=body)

    async def list_keys(self, project: str) -> list[dict[str, Any]]:
        return (await self._json("GET", "/admin/keys", params={"project": project}))["keys"]

    async def _key_json(self, method: str, key_id: str, suffix: str = "") -> dict[str, Any]:
        found = await self._json(method, f"/admin/keys/{_path_part(key_id)}{suffix}", missing_ok=True)
        if found is None:
            raise NotFound(f"No key '{key_id}'.", code="key_not_found")
        return found

    async def show_key(self, key_id: str) -> dict[str, Any]:
        return await self._key_json("GET", key_id)

    async def revoke_key(self, key_id: str) -> dict[str, Any]:
        return await self._key_json("DELETE", key_id)

    async def rotate_key(self, key_id: str) -> dict[str, Any]:
        return await self._key_json("POST", key_id, "/rotate")

    def _limits_path(self, scope: str, scope_id: str) -> str:
        return f"/admin/limits/{_path_part(scope)}/{_path_part(scope_id)}"

    async def set_limits(self, scope: str, scope_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._json("PUT", self._limits_path(scope, scope_id), body=body)

    async def show_limits(self, scope: str, scope_id: str) -> dict[str, Any]:
        return await self._json("GET", self._limits_path(scope, scope_id))

    async def delete_limits(self, scope: str, scope_id: str) -> dict[str, Any]:
        return await self._json("DELETE", self._limits_path(scope, scope_id))
