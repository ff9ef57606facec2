"""Where the budget and reading commands find the ledger the running proxy uses.

Three places, chosen in this order:

- ``--url`` / ``FAREBOX_URL``: the running proxy's admin API (``proxy.cli.remote``), with the
  admin token of ``--admin-token`` / ``FAREBOX_ADMIN_TOKEN``;
- ``--redis-url`` / ``REDIS_URL``: that Redis, directly;
- otherwise the embedded Redis of ``--data-dir`` (default ``./.farebox``), which must already
  hold farebox's data. These commands never create a data directory: a budget set on a new,
  empty ledger would silently not apply to the proxy, so they refuse and say where they looked.

Every command is an ``action`` run against a ``Source``: the same operations, answered by the
ledger (``LedgerSource``) or by the admin API (``AdminSource``), so both print the same output.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from proxy.cli.remote import AdminSource
from proxy.cli.source import CommandError, Source
from proxy.control import budgets as control_budgets
from proxy.control import export
from proxy.control import keys as control_keys
from proxy.control import limits as control_limits
from proxy.control import reports
from proxy.ledger.embedded import SOCKET_NAME
from proxy.settings import Settings

__all__ = ["LedgerSource", "Runner", "runner", "holds_embedded_data", "check_embedded"]

T = TypeVar("T")

Runner = Callable[[Callable[[Source], Awaitable[T]]], T]

# What the embedded Redis leaves in its data directory: snapshot, append-only file (one file up
# to Redis 6, a directory from Redis 7), and its socket while it runs.
EMBEDDED_DATA_NAMES = ("farebox.rdb", "farebox.aof", "appendonlydir", SOCKET_NAME)


class LedgerSource:
    """The operations on a ledger, as ``proxy.control`` does them for the admin API."""

    def __init__(self, ledger: Any, settings: Settings | None = None) -> None:
        self.ledger = ledger
        self.settings = settings

    async def set_budget(self, scope: str, scope_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return await control_budgets.set_budget(self.ledger, scope, scope_id, body)

    async def get_budget(self, scope: str, scope_id: str) -> dict[str, Any] | None:
        return await control_budgets.get_budget(self.ledger, scope, scope_id)

    async def delete_budget(self, scope: str, scope_id: str) -> bool:
        return await control_budgets.delete_budget(self.ledger, scope, scope_id)

    async def list_budgets(self, scope: str | None) -> list[dict[str, Any]]:
        return await control_budgets.list_budgets(self.ledger, scope)

    async def usage_report(self, scope: str, scope_id: str, period: str, at: str | None,
                           top: str | None) -> dict[str, Any]:
        return await reports.usage_report(self.ledger, scope, scope_id, period, at, top)

    async def usage_series(self, scope: str, scope_id: str, granularity: str, start: str | None,
                           end: str | None) -> dict[str, Any]:
        return await reports.usage_series(self.ledger, scope, scope_id, granularity, start, end)

    async def forecast(self, scope: str, scope_id: str, period: str) -> dict[str, Any]:
        return await reports.forecast(self.ledger, scope, scope_id, period)

    async def recommendations(self, project: str, period: str) -> dict[str, Any]:
        from proxy.control.recommendations import recommendations  # noqa: PLC0415
        from proxy.http.app import build_catalog  # noqa: PLC0415

        catalog = await asyncio.to_thread(build_catalog, self.settings or Settings())
        return await recommendations(self.ledger, catalog, "project", project, period)

    async def export_page(self, project: str | None, since: str | None, limit: int) -> export.Page:
        return await export.export_page(self.ledger, project, since, limit)

    async def set_limits(self, scope: str, scope_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return await control_limits.set_limits(self.ledger, scope, scope_id, body)

    async def show_limits(self, scope: str, scope_id: str) -> dict[str, Any]:
        return await control_limits.show_limits(self.ledger, scope, scope_id)

    async def delete_limits(self, scope: str, scope_id: str) -> dict[str, Any]:
        return await control_limits.delete_limits(self.ledger, scope, scope_id)

    async def create_key(self, body: dict[str, Any]) -> dict[str, Any]:
        return await control_keys.create_key(self.ledger, body)

    async def list_keys(self, project: str) -> list[dict[str, Any]]:
        return await control_keys.list_keys(self.ledger, project)

    async def show_key(self, key_id: str) -> dict[str, Any]:
        return await control_keys.show_key(self.ledger, key_id)

    async def revoke_key(self, key_id: str) -> dict[str, Any]:
        return await control_keys.revoke_key(self.ledger, key_id)

    async def rotate_key(self, key_id: str) -> dict[str, Any]:
        return await control_keys.rotate_key(self.ledger, key_id)


async def with_ledger(settings: Settings, action: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``action`` on the ledger of the configured Redis (the one place the CLI opens Redis)."""
    from proxy.ledger.connection import RedisHandle  # noqa: PLC0415
    from proxy.ledger.ledger import Ledger  # noqa: PLC0415

    handle = await RedisHandle.open(settings.redis_target, settings.data_dir)
    try:
        ledger = Ledger(handle.client, prefix=settings.redis_prefix)
        await ledger.migrate()  # what it reads is in this version's layout
        return await action(ledger)
    finally:
        await handle.close()


def holds_embedded_data(data_dir: Path) -> bool:
    """True when ``data_dir`` is an embedded Redis's data directory (running or not)."""
    return data_dir.is_dir() and any((data_dir / name).exists() for name in EMBEDDED_DATA_NAMES)


def check_embedded(settings: Settings) -> None:
    """Refuse (``CommandError``) unless the data directory holds an embedded Redis's data."""
    data_dir = Path(settings.data_dir).resolve()
    if holds_embedded_data(data_dir):
        return
    found = "does not exist" if not data_dir.exists() else "holds no farebox data"
    raise CommandError(
        f"{data_dir} {found}, so this is not the ledger a running farebox uses; point the command at it: "
        "--data-dir DIR (the directory `farebox serve` runs with), REDIS_URL / --redis-url, or --url URL "
        "with --admin-token (the running proxy)")


def admin_url(flag: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """The proxy's address from ``--url`` or ``FAREBOX_URL`` (flag first), or None."""
    env = os.environ if env is None else env
    return flag or env.get("FAREBOX_URL") or None


def runner(settings: Settings, url: str | None) -> Runner:
    """How this command reaches the ledger; refuses (``CommandError``) before touching anything."""
    if url:
        token = settings.admin_token.get_secret_value() if settings.admin_token else None
        source = AdminSource.for_url(url, token)

        def run_remote(action: Callable[[Source], Awaitable[T]]) -> T:
            return asyncio.run(source.run(action))
        return run_remote

    if not settings.redis_url:
        check_embedded(settings)

    def run_local(action: Callable[[Source], Awaitable[T]]) -> T:
        return asyncio.run(with_ledger(settings, lambda ledger: action(LedgerSource(ledger, settings))))
    return run_local
