"""Reading spend, for the admin API and the CLI: usage reports, time series, forecasts.

Each function validates its input and raises ``BadRequest`` saying what to fix (the API
answers 400, the CLI exits 2), reads the ledger, and returns the JSON-ready dict both show.
"Now" is the ledger's clock, so tests pin it.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from pricing.money import nano_to_usd
from proxy.control.params import invalid, parse_at
from proxy.errors import BadRequest
from proxy.control.forecast import (CONFIDENCE_BUCKETS, FORECAST_PERIODS, TREND_WINDOWS, Confidence, Projection,
                                    confidence, project, runs_out_ms)
from proxy.ledger import reports as stored
from proxy.domain import BUDGET_SCOPES, iso_utc
from proxy.ledger.ledger import Ledger
from proxy.ledger.periods import period_bounds

__all__ = ["usage_report", "usage_series", "forecast", "parse_top",
           "MAX_POINTS", "DEFAULT_POINTS", "MAX_TOP"]

GRANULARITIES: dict[str, timedelta] = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
MAX_POINTS = {"hour": 744, "day": 366}      # 31 days of hours, a (leap) year of days
DEFAULT_POINTS = {"hour": 24, "day": 30}    # without ``from``: the last 24 hours / 30 days
DEFAULT_TOP = 10
MAX_TOP = 100


def _target(scope: str, scope_id: str) -> stored.Target:
    try:
        return stored.target(scope, scope_id)
    except ValueError as exc:
        raise invalid(exc, "scope" if "scope" in str(exc) else "id") from None


def _now(ledger: Ledger) -> datetime:
    return datetime.fromtimestamp(ledger.clock(), tz=timezone.utc)


def parse_top(value: str | int | None) -> int:
    """How many top sessions a project report lists: 0-100, default 10."""
    if value is None or value == "":
        return DEFAULT_TOP
    text = str(value).strip()
    if not text.isdigit() or int(text) > MAX_TOP:
        raise BadRequest(f"Invalid top '{value}': a number of sessions from 0 to {MAX_TOP}.", param="top",
                         code="invalid_value")
    return int(text)


async def usage_report(ledger: Ledger, scope: str, scope_id: str, period: str = "day", at: str | None = None,
                       top: str | int | None = None) -> dict[str, Any]:
    """One scope's usage in one period; a project's includes ``top_sessions``."""
    when = parse_at(at) if at else None
    count = parse_top(top)
    _target(scope, scope_id)
    try:
        return await stored.read_usage(ledger, scope, scope_id, period, when, top=count)
    except ValueError as exc:
        raise invalid(exc, "period") from None


# -- series ----------------------------------------------------------------------------------


def series_starts(granularity: str, start: str | None, end: str | None, now: datetime) -> list[datetime]:
    """Starts of the buckets that overlap ``[start, end)``; ``end`` defaults to now, ``start`` to
    ``DEFAULT_POINTS`` buckets back. 400 for bad dates, an empty range or too many points."""
    if granularity not in GRANULARITIES:
        raise BadRequest(f"Invalid granularity '{granularity}': use hour or day.", param="granularity",
                         code="invalid_value")
    step, most = GRANULARITIES[granularity], MAX_POINTS[granularity]
    to = parse_at(end, param="to") if end else now
    try:
        last = period_bounds(granularity, to - timedelta(microseconds=1))[0]
        if start:
            since = parse_at(start, param="from")
            if since >= to:
                raise BadRequest(f"Invalid range: from ({iso_utc(since)}) must be before to ({iso_utc(to)}).",
                                 param="from", code="invalid_value")
            first = period_bounds(granularity, since)[0]
        else:
            first = last - step * (DEFAULT_POINTS[granularity] - 1)
    except OverflowError:
        raise BadRequest("Invalid range: dates out of range.", param="from", code="invalid_value") from None
    count = (last - first) // step + 1
    if count > most:
        span = f"{most // 24} days" if granularity == "hour" else f"{most} days"
        raise BadRequest(f"Range too large: {count} {granularity}ly points; at most {most} ({span}) per request. "
                         "Narrow from/to" + (" or use granularity=day." if granularity == "hour" else "."),
                         param="from", code="range_too_large")
    return [first + step * i for i in range(count)]


def _point(values: Mapping[str, int]) -> dict[str, Any]:
    return {"requests": values["requests"], "prompt_tokens": values["prompt_tokens"],
            "completion_tokens": values["completion_tokens"],
            "total_tokens": values["prompt_tokens"] + values["completion_tokens"],
            "cached_tokens": values["cached_tokens"], "reasoning_tokens": values["reasoning_tokens"],
            "estimated_requests": values["estimated"], "cost_usd": nano_to_usd(values["cost"])}


async def usage_series(ledger: Ledger, scope: str, scope_id: str, granularity: str = "hour",
                       start: str | None = None, end: str | None = None) -> dict[str, Any]:
    """Usage per hour or per day, zero-filled, with the range's totals (the sum of the points)."""
    t = _target(scope, scope_id)
    starts = series_starts(granularity, start, end, _now(ledger))
    values = await stored.read_series(ledger, t, granularity, starts)
    totals = dict.fromkeys(stored.SERIES_FIELDS, 0)
    for point in values:
        for name, value in point.items():
            totals[name] += value
    step = GRANULARITIES[granularity]
    return {
        "scope": t.scope, "id": t.id, "granularity": granularity,
        "from": iso_utc(starts[0]), "to": iso_utc(starts[-1] + step),
        "points": [{"start": iso_utc(s), **_point(v)} for s, v in zip(starts, values)],
        "totals": _point(totals),
    }


# -- forecast --------------------------------------------------------------------------------


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _iso_ms(ms: int | None) -> str | None:
    return None if ms is None else iso_utc(datetime.fromtimestamp(ms / 1000, tz=timezone.utc))


async def forecast(ledger: Ledger, scope: str, scope_id: str, period: str = "month") -> dict[str, Any]:
    """Spend at the end of the current ``period``, projected from the period's run rate and from
    the recent trend, and when the scope's budget (if any) runs out at each rate."""
    t = _target(scope, scope_id)
    if period not in FORECAST_PERIODS:
        raise BadRequest(f"Invalid period '{period}' for a forecast: use one of {', '.join(FORECAST_PERIODS)} "
                         "(a forecast needs a period that ends).", param="period", code="invalid_value")
    now_s = ledger.clock()
    now = datetime.fromtimestamp(now_s, tz=timezone.utc)
    now_ms = int(now_s * 1000)
    start, end = period_bounds(period, now)
    assert start is not None and end is not None
    granularity, buckets = TREND_WINDOWS[period]
    step = GRANULARITIES[granularity]
    window_start = period_bounds(granularity, now)[0] - step * buckets
    budget_read = (ledger.budget_state(t.scope, t.id) if t.scope in BUDGET_SCOPES
                   else asyncio.sleep(0, result=None))
    observed_granularity, full = CONFIDENCE_BUCKETS[period]
    observed = _observed_buckets(period, start, now)
    spent_point, trend_points, observed_points, budget = await asyncio.gather(
        stored.read_series(ledger, t, period, [start]),
        stored.read_series(ledger, t, granularity, [window_start + step * i for i in range(buckets + 1)]),
        stored.read_series(ledger, t, observed_granularity, observed),
        budget_read,
    )
    spent = spent_point[0]["cost"]
    trend_cost = sum(p["cost"] for p in trend_points)
    projections = [
        (project("run_rate", spent, _ms(start), spent, now_ms, _ms(end)),
         f"the average rate of this {period} so far, since {iso_utc(start)}"),
        (project("trend", spent, _ms(window_start), trend_cost, now_ms, _ms(end)),
         f"the average rate of the last {buckets} {granularity}s and this {granularity} so far, "
         f"since {iso_utc(window_start)}"),
    ]
    budget_info = None
    remaining = resets_ms = None
    if budget is not None:
        remaining = max(0, budget.limit_nano - budget.spent_nano)
        resets_ms = None if budget.resets_at is None else _ms(budget.resets_at)
        budget_info = {"period": budget.period, "mode": budget.mode, "limit_usd": nano_to_usd(budget.limit_nano),
                       "spent_usd": nano_to_usd(budget.spent_nano), "remaining_usd": nano_to_usd(remaining),
                       "resets_at": _iso_ms(resets_ms)}

    def shown(p: Projection, basis: str) -> dict[str, Any]:
        out = {"method": p.method, "basis": basis, "window_start": _iso_ms(p.window_start_ms),
               "window_end": _iso_ms(p.now_ms), "window_cost_usd": nano_to_usd(p.window_cost_nano),
               "rate_usd_per_hour": nano_to_usd(p.rate_nano_per_hour), "projected_usd": nano_to_usd(p.projected_nano),
               "runs_out_at": None}
        if remaining is not None:
            out["runs_out_at"] = _iso_ms(runs_out_ms(p, remaining, resets_ms))
        return out

    return {
        "scope": t.scope, "id": t.id, "period": period, "period_start": iso_utc(start), "period_end": iso_utc(end),
        "now": iso_utc(now), "spent_usd": nano_to_usd(spent),
        "forecasts": {p.method: shown(p, basis) for p, basis in projections},
        "confidence": _shown_confidence(confidence([p["cost"] for p in observed_points], full), observed,
                                        observed_granularity),
        "budget": budget_info,
    }


def _observed_buckets(period: str, start: datetime, now: datetime) -> list[datetime]:
    """Starts of the complete buckets a forecast's confidence looks at: those of the period so
    far (days of a week or month, hours of a day); an hour, which has none, looks at the three
    hours before it."""
    granularity, full = CONFIDENCE_BUCKETS[period]
    step = GRANULARITIES[granularity]
    current = period_bounds(granularity, now)[0]
    first = current - step * full if period == "hour" else start
    return [first + step * i for i in range((current - first) // step)]


def _shown_confidence(c: Confidence, observed: list[datetime], granularity: str) -> dict[str, Any]:
    return {"level": c.level, "score": c.score, "granularity": granularity, "buckets_observed": c.buckets,
            "buckets_for_full_coverage": c.full,
            "observed_from": iso_utc(observed[0]) if observed else None,
            "observed_to": iso_utc(observed[-1] + GRANULARITIES[granularity]) if observed else None,
            "mean_usd": nano_to_usd(c.mean_nano), "stdev_usd": nano_to_usd(c.stdev_nano),
            "variation": c.variation}
