"""Reads for overviews: the newest events of a project's stream, and the alert thresholds its
budgets crossed (the claims ``settle.lua`` keeps in ``fb:{acme}:alerted:<scope>:<local id>``).

Nothing here writes. Both are one or two round trips whatever the size of the stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from proxy.domain import check_id
from proxy.ledger.errors import redis_errors, text
from proxy.ledger.events import StreamEntry, parse_stream_id

if TYPE_CHECKING:
    from proxy.ledger.ledger import Ledger

__all__ = ["newest_events", "AlertClaim", "alert_claims"]


async def newest_events(ledger: Ledger, project: str, count: int) -> list[StreamEntry]:
    """The ``count`` newest entries of ``project``'s event stream, newest first."""
    await ledger.settled()  # what this process recorded so far is part of the answer
    check_id(project, "project")
    if count <= 0:
        return []
    with redis_errors():
        entries = await ledger.redis.xrevrange(ledger.keys.events(project), max="+", min="-", count=count)
    out = []
    for raw_id, fields in entries:
        entry_id = parse_stream_id(text(raw_id))
        assert entry_id is not None
        out.append(StreamEntry(entry_id, project, {text(f): text(v) for f, v in fields.items()}))
    return out


@dataclass(frozen=True, slots=True)
class AlertClaim:
    """A threshold a budget crossed in one period bucket (``bucket_id``'s form: ``m202611``)."""

    scope: str
    local: str        # the id inside the project
    bucket: str
    threshold: float


async def alert_claims(ledger: Ledger, project: str) -> list[AlertClaim]:
    """Every alert threshold the budgets of ``project`` crossed in the periods still kept."""
    await ledger.settled()
    check_id(project, "project")
    k = ledger.keys
    with redis_errors():
        members = sorted(text(m) for m in await ledger.redis.smembers(k.budget_index(project)))
        if not members:
            return []
        pipe = ledger.redis.pipeline(transaction=False)
        budgets = [member.partition(":")[::2] for member in members]
        for scope, local in budgets:
            pipe.hkeys(k.alerted(project, scope, local))
        replies = await pipe.execute()
    claims = []
    for (scope, local), fields in zip(budgets, replies):
        for field in fields:
            bucket, _, threshold = text(field).rpartition("|")
            try:
                claims.append(AlertClaim(scope, local, bucket, float(threshold)))
            except ValueError:
                continue  # not a claim this version wrote
    return claims
