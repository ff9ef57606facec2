"""Where spend is heading: pure arithmetic on integer nano-USD and epoch milliseconds, no I/O.

A projection extrapolates the rate observed in a window that ends now to the end of the period:

    projected = spent + window_cost × (period_end − now) / (now − window_start)

- ``run_rate``: the window is the period so far (window_cost = spent), so the projection is
  spent × period length / elapsed.
- ``trend``: the window is the recent past (``TREND_WINDOWS``: whole buckets before the current
  one, plus the current one so far), which follows a change of pace sooner; it may start before
  the period does.

At that rate a budget with ``remaining`` left runs out ``remaining × window / window_cost``
after now, unless its period resets first. Divisions round half up to whole nano-USD, and up
to whole milliseconds for a time.

How far to trust a projection (``confidence``) comes from the spend of the complete buckets
observed (``CONFIDENCE_BUCKETS``: days for a week or a month, hours for an hour or a day), n of
them with mean m and standard deviation s (population: divided by n):

    variation = s / m                       (the coefficient of variation; 0 for a steady spend)
    coverage  = min(1, n / full)            (``full``: the buckets that make a full sample)
    score     = coverage / (1 + variation)  (0 with no bucket or no spend)

``level`` is ``high`` from a score of 0.7, ``medium`` from 0.4, else ``low``. A steady spend
seen over enough buckets scores near 1; a spend that jumps from day to day, or a few days of
data, scores low. The score is a ratio, not money: it is the one float here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["TREND_WINDOWS", "FORECAST_PERIODS", "CONFIDENCE_BUCKETS", "Projection", "Confidence", "project",
           "runs_out_ms", "confidence"]

HOUR_MS = 3_600_000
# Trend window per forecast period: granularity of the series read, and whole buckets before the current one.
TREND_WINDOWS: dict[str, tuple[str, int]] = {"hour": ("hour", 3), "day": ("hour", 6), "week": ("day", 7),
                                             "month": ("day", 7)}
FORECAST_PERIODS: tuple[str, ...] = tuple(TREND_WINDOWS)
# Confidence per forecast period: granularity of the buckets observed, and how many make a full sample.
CONFIDENCE_BUCKETS: dict[str, tuple[str, int]] = {"hour": ("hour", 3), "day": ("hour", 12), "week": ("day", 7),
                                                  "month": ("day", 14)}
HIGH_CONFIDENCE = 0.7
MEDIUM_CONFIDENCE = 0.4


def _div_half_up(numerator: int, denominator: int) -> int:
    return (2 * numerator + denominator) // (2 * denominator)


@dataclass(frozen=True, slots=True)
class Projection:
    """A rate seen over ``[window_start_ms, now_ms)`` and the spend it leads to at ``end_ms``."""

    method: str
    window_start_ms: int
    window_cost_nano: int
    now_ms: int
    projected_nano: int
    rate_nano_per_hour: int

    @property
    def window_ms(self) -> int:
        return self.now_ms - self.window_start_ms


def project(method: str, spent_nano: int, window_start_ms: int, window_cost_nano: int, now_ms: int,
            end_ms: int) -> Projection:
    """The spend at ``end_ms`` if the window's rate holds from now on. An empty window (now is
    the period's first instant) shows no rate: the projection is what is spent."""
    window_ms = now_ms - window_start_ms
    if window_ms <= 0:
        return Projection(method, window_start_ms, window_cost_nano, now_ms, spent_nano, 0)
    remaining_ms = max(0, end_ms - now_ms)
    return Projection(method, window_start_ms, window_cost_nano, now_ms,
                      spent_nano + _div_half_up(window_cost_nano * remaining_ms, window_ms),
                      _div_half_up(window_cost_nano * HOUR_MS, window_ms))


def runs_out_ms(projection: Projection, remaining_nano: int, resets_ms: int | None) -> int | None:
    """When a budget with ``remaining_nano`` left is used up at the projection's rate: now when
    nothing is left; None when the rate is zero or the budget resets first."""
    if remaining_nano <= 0:
        return projection.now_ms
    if projection.window_cost_nano <= 0 or projection.window_ms <= 0:
        return None
    needed_ms = -(-remaining_nano * projection.window_ms // projection.window_cost_nano)  # rounded up
    at = projection.now_ms + needed_ms
    return None if resets_ms is not None and at >= resets_ms else at


@dataclass(frozen=True, slots=True)
class Confidence:
    """How far to trust a projection: ``score`` 0..1 and its ``level``, from ``buckets``
    complete buckets of mean ``mean_nano`` and standard deviation ``stdev_nano``."""

    level: str
    score: float
    buckets: int
    full: int
    mean_nano: int
    stdev_nano: int
    variation: float | None     # None when nothing was spent (no mean to compare with)


def confidence(costs: Sequence[int], full: int) -> Confidence:
    """The confidence of a projection from the spend of each complete bucket observed (see the
    module's docstring). Mean and deviation are worked out on integers; only the ratios are floats."""
    n = len(costs)
    total = sum(costs)
    if n == 0 or total <= 0:
        return Confidence("low", 0.0, n, full, 0, 0, None)
    spread = n * sum(c * c for c in costs) - total * total     # n² × variance, an exact integer
    root = math.isqrt(spread)
    variation = math.sqrt(spread) / total                       # s / m = sqrt(n² var) / (n m)
    score = round(min(1.0, n / full) / (1 + variation), 3)
    level = "high" if score >= HIGH_CONFIDENCE else "medium" if score >= MEDIUM_CONFIDENCE else "low"
    return Confidence(level, score, n, full, _div_half_up(total, n), _div_half_up(root, n), round(variation, 3))
