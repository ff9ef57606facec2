"""Recommendations for one project, for the admin API and the CLI: the period's recorded events,
the period's aggregate, and the price catalog, turned into advice by ``proxy.control.advice``.

Input: ``scope`` must be ``project`` (advice is about a project's own mix), ``id`` a project that
recorded usage or has a budget (404 otherwise), ``period`` ``day``, ``week`` or ``month``
(default; the current one, up to now). A known project with no events in the period gets an
empty list. At most ``MAX_EVENTS`` events are read, the most recent; what they miss of the
period's recorded spend is made up by ``Window.monthly``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from pricing.catalog import Catalog
from proxy.control.advice import Window, advise
from proxy.domain import ID_PATTERN, iso_utc
from proxy.errors import BadRequest, NotFound
from proxy.ledger import mix
from proxy.ledger import reports as stored
from proxy.ledger.ledger import Ledger
from proxy.ledger.periods import period_bounds

__all__ = ["recommendations", "PERIODS", "MAX_EVENTS"]

PERIODS = ("day", "week", "month")
MAX_EVENTS = 50_000   # the default stream length of a project (stream_maxlen)


def _check(scope: str | None, scope_id: str | None, period: str | None) -> tuple[str, str]:
    if scope != "project":
        raise BadRequest(f"Invalid scope '{scope}': recommendations are made for a project; use scope=project.",
                         param="scope", code="invalid_value")
    if scope_id is None or not ID_PATTERN.fullmatch(scope_id):
        raise BadRequest(f"Invalid project id '{scope_id}': 1-128 letters, digits and . _ - @.", param="id",
                         code="invalid_value")
    chosen = period or "month"
    if chosen not in PERIODS:
        raise BadRequest(f"Invalid period '{chosen}' for recommendations: use day, week or month.", param="period",
                         code="invalid_value")
    return scope_id, chosen


async def recommendations(ledger: Ledger, catalog: Catalog, scope: str | None, scope_id: str | None,
                          period: str | None = "month") -> dict[str, Any]:
    """``{"scope", "id", "period", "period_start", "now", "events", "recommendations": [...]}``."""
    project, period = _check(scope, scope_id, period)
    if not await mix.is_known(ledger, project):
        raise NotFound(f"No usage or budget recorded for project '{project}'.", code="project_not_found")
    now_s = ledger.clock()
    now = datetime.fromtimestamp(now_s, tz=timezone.utc)
    start, _ = period_bounds(period, now)
    assert start is not None
    read = await mix.read_mix(ledger, project, start.timestamp(), now_s, MAX_EVENTS)
    recorded = await stored.read_series(ledger, stored.target("project", project), period, [start])
    window = Window(int(start.timestamp() * 1000), int(now_s * 1000), sum(e.cost_nano for e in read.events),
                    recorded[0]["cost"])
    return {
        "scope": "project", "id": project, "period": period, "period_start": iso_utc(start), "now": iso_utc(now),
        "events": len(read.events), "events_complete": read.complete,
        "recommendations": advise(read.events, catalog, window) if read.events else [],
    }
