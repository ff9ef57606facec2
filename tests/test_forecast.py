"""Forecast arithmetic: integer nano-USD and milliseconds, exact."""

from __future__ import annotations

from proxy.control.forecast import HOUR_MS, Confidence, confidence, project, runs_out_ms

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


# -- confidence -------------------------------------------------------------------------------

USD = 1_000_000_000


def test_a_steady_spend_over_a_full_sample_is_trusted_fully():
    c = confidence([USD] * 14, 14)
    assert (c.level, c.score, c.buckets, c.mean_nano, c.stdev_nano, c.variation) == ("high", 1.0, 14, USD, 0, 0.0)


def test_a_small_wobble_over_a_full_sample_stays_high():
    # $9, $11 alternating: mean $10, deviation $1, variation 0.1; score 1 / 1.1 = 0.909.
    c = confidence([9 * USD, 11 * USD] * 7, 14)
    assert (c.level, c.score, c.mean_nano, c.stdev_nano, c.variation) == ("high", 0.909, 10 * USD, USD, 0.1)


def test_a_spread_spend_is_medium():
    # $1, $3, $1, $3 of 4 buckets: mean $2, deviation $1, variation 0.5; score 1 / 1.5 = 0.667.
    c = confidence([USD, 3 * USD, USD, 3 * USD], 4)
    assert (c.level, c.score, c.mean_nano, c.stdev_nano, c.variation) == ("medium", 0.667, 2 * USD, USD, 0.5)


def test_few_buckets_lower_the_score_by_their_coverage():
    # $1 and $3 seen on 2 of 14 days: coverage 1/7, variation 0.5; score (1/7) / 1.5 = 0.095.
    c = confidence([USD, 3 * USD], 14)
    assert (c.level, c.score, c.buckets, c.full, c.variation) == ("low", 0.095, 2, 14, 0.5)


def test_no_buckets_or_no_spend_scores_zero():
    assert confidence([], 14) == Confidence("low", 0.0, 0, 14, 0, 0, None)
    assert confidence([0, 0, 0], 3) == Confidence("low", 0.0, 3, 3, 0, 0, None)


def test_the_level_boundaries():
    # variation 0 with 7 of 10 buckets: exactly 0.7 (high); 4 of 10: exactly 0.4 (medium); 3 of 10: low.
    assert confidence([USD] * 7, 10).level == "high"
    assert confidence([USD] * 4, 10).level == "medium"
    assert confidence([USD] * 3, 10).level == "low"
