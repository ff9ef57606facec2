"""Event retention by age: a background task that trims every project's event stream.

Retention by length (``stream_maxlen``) happens on every append; by age (``stream_max_age_s``)
here, every ``interval_for(max_age_s)`` seconds, so an event lives at most about that much
longer than its age limit. Several processes trimming the same streams do no harm.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from proxy.errors import LedgerUnavailable
from proxy.ledger.events import trim_older_than
from proxy.ledger.ledger import Ledger
from proxy.ledger.reports import known_projects

__all__ = ["interval_for", "trim_once", "trim_forever", "MAX_INTERVAL_S"]

log = logging.getLogger("farebox")

MAX_INTERVAL_S = 60.0


def interval_for(max_age_s: int) -> float:
    """A tenth of the age limit, between 1 second and a minute."""
    return min(MAX_INTERVAL_S, max(1.0, max_age_s / 10))


async def trim_once(ledger: Ledger, max_age_s: int, clock: Callable[[], float]) -> int:
    """Remove events older than ``max_age_s`` from every project's stream; returns how many."""
    cutoff_ms = int((clock() - max_age_s) * 1000)
    return await trim_older_than(ledger, await known_projects(ledger), max(0, cutoff_ms))


async def trim_forever(ledger: Ledger, max_age_s: int, clock: Callable[[], float]) -> None:
    """``trim_once`` at every interval until cancelled; a Redis outage just skips a round."""
    interval = interval_for(max_age_s)
    while True:
        try:
            removed = await trim_once(ledger, max_age_s, clock)
        except LedgerUnavailable as exc:
            log.warning("event retention: %s; trying again in %.0f s", exc.message, interval)
        else:
            if removed:
                log.info("event retention: removed %d events older than %d s", removed, max_age_s)
        await asyncio.sleep(interval)
