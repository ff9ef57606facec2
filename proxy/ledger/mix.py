"""A project's recent usage mix: its recorded requests read back from its event stream, newest
first, for the advice of ``proxy.control.recommendations``.

The stream is read backwards in pages (``XREVRANGE``). An entry's id is the Redis server's time
when it was recorded, never before the request happened (give or take ``SKEW_MS`` between
clocks), so the read stops at the first id older than ``since``: nothing before it can belong to
the window. Entries are kept by their own ``ts`` (a request replayed from the spool is recorded
late, with its own time), up to ``limit`` of them, the latest; the answer says whether the limit
cut the window short.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from proxy.domain import UsageEvent, check_id
from proxy.ledger.errors import redis_errors

if TYPE_CHECKING:
    from proxy.ledger.ledger import Ledger

__all__ = ["Mix", "read_mix", "is_known", "PAGE", "SKEW_MS"]

PAGE = 1000         # entries per round trip
SKEW_MS = 300_000   # how far the proxies' clocks may run ahead of the Redis server's


@dataclass(frozen=True, slots=True)
class Mix:
    """The events of one project from ``since`` on (oldest first); ``complete`` is False when
    ``limit`` stopped the read before the period's first event."""

    events: list[UsageEvent]
    complete: bool


async def is_known(ledger: Ledger, project: str) -> bool:
    """Whether ``project`` recorded usage or has a budget (it is in the set of known projects)."""
    await ledger.settled()
    with redis_errors():
        return bool(await ledger.redis.sismember(ledger.keys.projects(), check_id(project, "project")))


async def read_mix(ledger: Ledger, project: str, since: float, until: float, limit: int) -> Mix:
    """The events of ``project`` with ``since <= ts < until``, at most ``limit`` of them (the latest
    recorded), oldest first."""
    await ledger.settled()  # what this process recorded so far is part of the answer
    key = ledger.keys.events(check_id(project, "project"))
    found: list[UsageEvent] = []
    upper = "+"
    oldest = f"{max(0, int(since * 1000) - SKEW_MS)}-0"
    while True:
        with redis_errors():
            page = await ledger.redis.xrevrange(key, max=upper, min=oldest, count=PAGE)
        for entry_id, fields in page:
            event = UsageEvent.from_fields(fields)
            if since <= event.ts < until:
                if len(found) == limit:
                    found.sort(key=lambda e: e.ts)
                    return Mix(found, False)
                found.append(event)
        if len(page) < PAGE:
            found.sort(key=lambda e: e.ts)
            return Mix(found, True)
        upper = "(" + (entry_id.decode() if isinstance(entry_id, bytes) else entry_id)
