"""Calendar periods in UTC: which bucket a moment falls in, and where that bucket starts and ends.

A usage aggregate and a budget's ``spent`` both live in the bucket of their period:

    hour   h2026112318   day    d20261123   week   w2026W48 (ISO week, Monday first)
    month  m202611       total  total       (one bucket for all time: it never resets)

Pure functions, no I/O. A naive ``datetime`` is read as UTC.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from functools import lru_cache

__all__ = ["PERIODS", "TOTAL", "bucket_id", "bucket_ids", "check_period", "period_bounds", "to_utc"]

PERIODS: tuple[str, ...] = ("hour", "day", "week", "month", "total")
TOTAL = "total"
_SECONDS_PER_HOUR = 3600


def check_period(period: str) -> str:
    """``period`` itself when it is one of PERIODS, else ValueError naming the choices."""
    if period not in PERIODS:
        raise ValueError(f"unknown period {period!r}: use one of {', '.join(PERIODS)}")
    return period


def to_utc(at: datetime) -> datetime:
    """``at`` as an aware UTC datetime (a naive one is taken to be UTC already)."""
    if at.tzinfo is None:
        return at.replace(tzinfo=timezone.utc)
    return at.astimezone(timezone.utc)


def bucket_id(period: str, at: datetime) -> str:
    """The bucket of ``period`` that contains ``at``."""
    check_period(period)
    at = to_utc(at)
    if period == "hour":
        return at.strftime("h%Y%m%d%H")
    if period == "day":
        return at.strftime("d%Y%m%d")
    if period == "week":
        year, week, _ = at.isocalendar()
        return f"w{year:04d}W{week:02d}"
    if period == "month":
        return at.strftime("m%Y%m")
    return TOTAL


@lru_cache(maxsize=64)
def _bucket_ids_of_hour(hour_index: int) -> tuple[str, ...]:
    at = datetime.fromtimestamp(hour_index * _SECONDS_PER_HOUR, tz=timezone.utc)
    return tuple(bucket_id(period, at) for period in PERIODS)


def bucket_ids(ts: float) -> tuple[str, ...]:
    """The buckets of every period (in PERIODS order) containing the epoch time ``ts``.

    Every bucket boundary is an hour boundary, so the answer is cached per hour: this runs on
    every request.
    """
    return _bucket_ids_of_hour(int(ts // _SECONDS_PER_HOUR))


def period_bounds(period: str, at: datetime) -> tuple[datetime | None, datetime | None]:
    """``(start, end)`` of the bucket containing ``at``; ``end`` is exclusive (the reset time).

    ``total`` has neither: it began with the first record and never resets, so ``(None, None)``.
    """
    check_period(period)
    at = to_utc(at)
    if period == "hour":
        start = at.replace(minute=0, second=0, microsecond=0)
        return start, start + timedelta(hours=1)
    if period == "day":
        start = at.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    if period == "week":
        day = at.replace(hour=0, minute=0, second=0, microsecond=0)
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    if period == "month":
        start = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        if start.month == 12:
            return start, start.replace(year=start.year + 1, month=1)
        return start, start.replace(month=start.month + 1)
    return None, None
