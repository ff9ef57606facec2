"""Forecast arithmetic: integer nano-USD and milliseconds, exact."""

from __future__ import annotations

from proxy.control.forecast import HOUR_MS, project, runs_out_ms

DAY_MS = 24 * HOUR_MS


def test_run_rate_scales_spend_to_the_period_length():
    # 10 days into a 30-day month, $3 spent: $9 at the end, $0.0125 an hour.
    p = project("run_rate", 3_000_000_000, 0, 3_000_000_000, 10 * DAY_MS, 30 * DAY_MS)
    assert p.method == "run_rate" and p.projected_nano == 9_000_000_000 and p.rate_nano_per_hour == 12_500_000


def test_trend_adds_the_window_rate_over_what_is_left():
    # $1.40 in the last 7 days: $0.20 a day for the 20 days left, on top of $3 spent.
    p = project("trend", 3_000_000_000, 3 * DAY_MS, 1_400_000_000, 10 * DAY_MS, 30 * DAY_MS)
    assert p.projected_nano == 7_000_000_000 and p.window_ms == 7 * DAY_MS


def test_divisions_round_half_up_to_whole_nano_dollars():
    assert project("trend", 0, 0, 1, 2, 3).projected_nano == 1          # 0.5 → 1
    assert project("trend", 0, 0, 1, 3, 4).projected_nano == 0          # 0.33 → 0
    assert project("trend", 0, 0, 2, 3, 4).projected_nano == 1          # 0.67 → 1


def test_an_empty_window_projects_what_is_spent():
    p = project("run_rate", 0, 5_000, 0, 5_000, 10_000)
    assert p.projected_nano == 0 and p.rate_nano_per_hour == 0
    assert runs_out_ms(p, 100, None) is None


def test_after_the_period_nothing_more_is_projected():
    assert project("run_rate", 50, 0, 50, 2_000, 1_000).projected_nano == 50


def test_budget_runs_out_when_the_remaining_amount_is_spent_at_the_rate():
    p = project("run_rate", 3_000_000_000, 0, 3_000_000_000, 10 * DAY_MS, 30 * DAY_MS)  # $0.30 a day
    assert runs_out_ms(p, 1_500_000_000, 30 * DAY_MS) == 15 * DAY_MS
    assert runs_out_ms(p, 6_000_000_000, 30 * DAY_MS) is None            # the period resets first
    assert runs_out_ms(p, 6_000_000_000, 30 * DAY_MS + 1) == 30 * DAY_MS  # just before it does
    assert runs_out_ms(p, 60_000_000_000, None) == 210 * DAY_MS          # a total budget never resets


def test_runs_out_rounds_up_to_the_millisecond_and_now_when_nothing_is_left():
    p = project("trend", 0, 0, 3, 1_000, 10_000)
    assert runs_out_ms(p, 1, None) == 1_000 + 334
    assert runs_out_ms(p, 0, None) == 1_000
    idle = project("trend", 5, 0, 0, 1_000, 10_000)
    assert runs_out_ms(idle, 10, None) is None
