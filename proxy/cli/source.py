"""What every command runs against: the operations behind the commands (``Source``), answered
by the ledger or by the running proxy's admin API, and how a command refuses or fails."""

from __future__ import annotations

from typing import Any, Protocol

from proxy.control import export

__all__ = ["CommandError", "Source", "EXIT_USAGE", "EXIT_FAILURE"]

EXIT_USAGE = 2     # the command cannot work as given: bad input or setting, no ledger there, no admin API
EXIT_FAILURE = 1   # it ran and the answer is no (no such budget), or the other side failed


class CommandError(Exception):
    """A one-line refusal or failure the CLI prints as ``farebox: <message>``."""

    def __init__(self, message: str, status: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class Source(Protocol):
    """The operations behind the commands, as the admin API names them."""

    async def set_budget(self, scope: str, scope_id: str, body: dict[str, Any]) -> dict[str, Any]: ...
    async def get_budget(self, scope: str, scope_id: str) -> dict[str, Any] | None: ...
    async def delete_budget(self, scope: str, scope_id: str) -> bool: ...
    async def list_budgets(self, scope: str | None) -> list[dict[str, Any]]: ...
    async def usage_report(self, scope: str, scope_id: str, period: str, at: str | None,
                           top: str | None) -> dict[str, Any]: ...
    async def usage_series(self, scope: str, scope_id: str, granularity: str, start: str | None,
                           end: str | None) -> dict[str, Any]: ...
    async def forecast(self, scope: str, scope_id: str, period: str) -> dict[str, Any]: ...
    async def export_page(self, project: str | None, since: str | None, limit: int) -> export.Page: ...
