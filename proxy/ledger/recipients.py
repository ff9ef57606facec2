"""Who hears of a budget's alerts by e-mail: the ``alert_emails`` kept beside its config.

``Budgets.set`` writes them (a JSON list in the budget's hash, absent when there are none);
this module only reads them, for the alert dispatcher and for the budget views of the admin API.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from proxy.domain import BUDGET_SCOPES, split_scope_id
from proxy.ledger.errors import redis_errors, text

if TYPE_CHECKING:
    from proxy.ledger.ledger import Ledger

__all__ = ["alert_emails", "alert_emails_of"]


def _parse(raw: bytes | str | None) -> list[str]:
    return [str(a) for a in json.loads(text(raw))] if raw else []


async def alert_emails(ledger: Ledger, scope: str, scope_id: str) -> list[str]:
    """The addresses of one budget (``acme``, ``acme/planner``, ...): [] when none or no budget."""
    return (await alert_emails_of(ledger, [(scope, scope_id)]))[0]


async def alert_emails_of(ledger: Ledger, budgets: Sequence[tuple[str, str]]) -> list[list[str]]:
    """The addresses of each ``(scope, id)``, in order, in one round trip."""
    if not budgets:
        return []
    with redis_errors():
        pipe = ledger.redis.pipeline(transaction=False)
        for scope, scope_id in budgets:
            project, local = split_scope_id(scope, scope_id, scopes=BUDGET_SCOPES)
            pipe.hget(ledger.keys.budget(project, scope, local), "alert_emails")
        return [_parse(raw) for raw in await pipe.execute()]
