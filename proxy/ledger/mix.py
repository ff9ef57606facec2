"""A project's recent usage mix: its recorded requests read back from its event stream, newest
first, for the advice of ``proxy.control.recommendations``.

The stream is read backwards in pages (``XREVRANGE``) and stops at the first entry recorded
before ``since`` (by the event's own ``ts``), or once ``limit`` entries are read: the answer
says which, so a caller can tell a whole period from the most recent part of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from proxy.domain import UsageEvent, check_id
from proxy.ledger.errors import redis_errors

if TYPE_CHECKING:
    from proxy.ledger.ledger import Ledger

__all__ = ["Mix", "read_mix", "PAGE"]

PAGE = 1000     # entries per round trip


@dataclass(frozen=True, slots=True)
class Mix:
    """The events of one project from ``since`` on (oldest first); ``complete`` is False when
    ``limit`` stopped the read before the period's first event."""

    events: list[UsageEvent]
    complete: bool


async def read_mix(ledger: Ledger, project: str, since: float, until: float, limit: int) -> Mix:
    """The events of ``project`` with ``since <= ts < until``, at most ``limit`` of them (the latest)."""
    await ledger.settled()  # what this process recorded so far is part of the answer
    key = ledger.keys.events(check_id(project, "project"))
    found: list[UsageEvent] = []
    upper = "+"
    while True:
        with redis_errors():
            page = await ledger.redis.xrevrange(key, max=upper, min="-", count=PAGE)
        for entry_id, fields in page:
            event = UsageEvent.from_fields(fields)
            if event.ts < since:
                return Mix(found[::-1], True)
            if event.ts < until:
                if len(found) == limit:
                    return Mix(found[::-1], False)
                found.append(event)
        if len(page) < PAGE:
            return Mix(found[::-1], True)
        upper = "(" + (entry_id.decode() if isinstance(entry_id, bytes) else entry_id)
