"""Reading spend at a glance, for the admin API and the dashboard: every project's spend today and
this month, the newest events of a project, and the alert thresholds its budgets crossed.

Like ``reports``, each function validates its input, raises ``BadRequest`` saying what to fix,
and returns the JSON-ready dict; "now" is the ledger's clock.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any

from pricing.money import nano_to_usd
from proxy.control.export import event_row
from proxy.domain import check_id, iso_utc, public_id
from proxy.errors import BadRequest
from proxy.ledger import alert_log, glance
from proxy.ledger import reports as stored
from proxy.ledger.ledger import Ledger
from proxy.ledger.periods import period_bounds

__all__ = ["projects_overview", "recent_events", "alerts_fired", "MAX_RECENT", "DEFAULT_RECENT"]

MAX_RECENT = 200
DEFAULT_RECENT = 20
# The first letter of a period's bucket id (``proxy.ledger.periods.bucket_id``) and its strptime form.
_BUCKETS = {"h": ("hour", "%Y%m%d%H"), "d": ("day", "%Y%m%d"), "m": ("month", "%Y%m")}


def _project(value: str | None) -> str:
    if not value:
        raise BadRequest("Query parameter 'project' is required, e.g. ?project=acme.", param="project",
                         code="invalid_value")
    try:
        return check_id(value, "project")
    except ValueError as exc:
        raise BadRequest(str(exc), param="project", code="invalid_value") from None


async def projects_overview(ledger: Ledger) -> dict[str, Any]:
    """Every known project with its requests and spend today and this month (UTC), costliest this
    month first, and the sums over all of them."""
    now = datetime.fromtimestamp(ledger.clock(), tz=timezone.utc)
    day_start, day_end = period_bounds("day", now)
    month_start, month_end = period_bounds("month", now)
    projects = await stored.known_projects(ledger)
    reads = []
    for project in projects:
        t = stored.target("project", project)
        reads.append(stored.read_series(ledger, t, "day", [day_start]))
        reads.append(stored.read_series(ledger, t, "month", [month_start]))
    replies = await asyncio.gather(*reads)
    rows = []
    for n, project in enumerate(projects):
        today, month = replies[2 * n][0], replies[2 * n + 1][0]
        rows.append((month["cost"], today["cost"], project, today["requests"], month["requests"]))
    rows.sort(key=lambda row: (-row[0], row[2]))
    return {
        "day_start": iso_utc(day_start), "day_end": iso_utc(day_end),
        "month_start": iso_utc(month_start), "month_end": iso_utc(month_end),
        "today_usd": nano_to_usd(sum(r[1] for r in rows)), "month_usd": nano_to_usd(sum(r[0] for r in rows)),
        "requests_today": sum(r[3] for r in rows), "requests_month": sum(r[4] for r in rows),
        "projects": [{"id": project, "today_usd": nano_to_usd(today), "month_usd": nano_to_usd(month),
                      "requests_today": req_today, "requests_month": req_month}
                     for month, today, project, req_today, req_month in rows],
    }


def _count(value: str | None) -> int:
    if value is None or value == "":
        return DEFAULT_RECENT
    text = value.strip()
    if not text.isdigit() or not 1 <= int(text) <= MAX_RECENT:
        raise BadRequest(f"Invalid limit '{value}': a number of events from 1 to {MAX_RECENT}.", param="limit",
                         code="invalid_value")
    return int(text)


async def recent_events(ledger: Ledger, project: str | None, limit: str | None = None) -> dict[str, Any]:
    """The newest events of a project, newest first, and ``next_since``: the cursor from which
    ``GET /admin/events`` pages the events recorded after them."""
    name = _project(project)
    entries = await glance.newest_events(ledger, name, _count(limit))
    return {"project": name, "events": [event_row(e) for e in entries],
            "next_since": entries[0].id_text if entries else "0-0"}


def _bucket_period(bucket: str) -> tuple[str, datetime | None]:
    """``(period, start)`` of a bucket id: ``m202611`` → month from 2026-11-01."""
    if bucket == "total":
        return "total", None
    if bucket[:1] == "w":
        year, week = bucket[1:].split("W")
        return "week", datetime.fromisocalendar(int(year), int(week), 1).replace(tzinfo=timezone.utc)
    period, form = _BUCKETS[bucket[:1]]
    return period, datetime.strptime(bucket[1:], form).replace(tzinfo=timezone.utc)


def _percent(threshold: float) -> int | float:
    value = round(threshold * 100, 6)
    return int(value) if value == int(value) else value


async def alerts_fired(ledger: Ledger, project: str | None) -> dict[str, Any]:
    """The alert thresholds the project's budgets crossed, in the periods whose claims are kept:
    newest period first, then highest threshold first; and what became of each alert's
    deliveries (webhook or e-mail, delivered or failed), newest first (``deliveries``)."""
    name = _project(project)
    rows = []
    for claim in await glance.alert_claims(ledger, name):
        try:
            period, start = _bucket_period(claim.bucket)
        except (KeyError, ValueError):
            continue  # not a bucket this version wrote
        rows.append({"scope": claim.scope, "id": public_id(claim.scope, name, claim.local), "period": period,
                     "period_start": iso_utc(start), "threshold": claim.threshold,
                     "percent": _percent(claim.threshold)})
    rows.sort(key=lambda r: (r["period_start"] or "", r["threshold"], r["scope"], r["id"]), reverse=True)
    sent = [{**entry, "at": iso_utc(datetime.fromtimestamp(entry["at"], timezone.utc)),
             "percent": _percent(entry["threshold"])} for entry in await alert_log.deliveries(ledger, name)]
    return {"project": name, "alerts": rows, "deliveries": sent}
