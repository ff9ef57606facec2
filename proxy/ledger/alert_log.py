"""What became of each alert: one entry per delivery (a webhook URL, or a budget's e-mail
addresses) once it was delivered or given up, newest first, per project.

    fb:{acme}:alerts:sent     list   JSON entries, newest first, at most ``KEEP`` (400 days after the last)

An entry: ``{"alert_id", "at" (epoch s), "scope", "id", "threshold", "period", "period_start",
"channel" (webhook | email), "to" (the URL's origin, or the addresses), "outcome" (delivered |
failed), "attempts", "problem"}``. Written by the alert dispatcher after each delivery, never on
the request path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from proxy.domain import check_id
from proxy.ledger.errors import redis_errors

if TYPE_CHECKING:
    from proxy.ledger.ledger import Ledger

__all__ = ["note_delivery", "deliveries", "KEEP"]

KEEP = 200                      # entries kept per project
TTL_S = 400 * 86_400


def _key(ledger: Ledger, project: str) -> str:
    return ledger.keys.key(project, "alerts", "sent")


async def note_delivery(ledger: Ledger, project: str, entry: dict[str, Any]) -> None:
    """Keep ``entry`` as the newest of ``project``'s deliveries."""
    key = _key(ledger, project)
    with redis_errors():
        pipe = ledger.redis.pipeline(transaction=False)   # one key; no MULTI (a cluster client may not take it)
        pipe.lpush(key, orjson.dumps(entry))
        pipe.ltrim(key, 0, KEEP - 1)
        pipe.expire(key, TTL_S)
        await pipe.execute()


async def deliveries(ledger: Ledger, project: str, limit: int = KEEP) -> list[dict[str, Any]]:
    """``project``'s newest deliveries, newest first."""
    check_id(project, "project")
    with redis_errors():
        raw = await ledger.redis.lrange(_key(ledger, project), 0, max(0, limit - 1))
    return [orjson.loads(item) for item in raw]
