"""Buckets and period bounds in UTC: ISO weeks from Monday, months, and a total that never resets."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from proxy.ledger.periods import bucket_id, bucket_ids, period_bounds

UTC = timezone.utc


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_bucket_ids_name_the_period_and_its_calendar_unit():
    moment = at("2026-11-23T18:59:59")
    assert [bucket_id(p, moment) for p in ("hour", "day", "week", "month", "total")] == [
        "h2026112318", "d20261123", "w2026W48", "m202611", "total"]
    assert bucket_ids(moment.timestamp()) == ("h2026112318", "d20261123", "w2026W48", "m202611", "total")


def test_iso_week_runs_monday_to_sunday_and_belongs_to_its_iso_year():
    assert bucket_id("week", at("2026-11-29T23:59:59")) == "w2026W48"   # Sunday
    assert bucket_id("week", at("2026-11-30T00:00:00")) == "w2026W49"   # Monday
    assert bucket_id("week", at("2027-01-01T12:00:00")) == "w2026W53"   # a Friday in 2026's last ISO week
    assert period_bounds("week", at("2026-11-29T23:59:59")) == (at("2026-11-23T00:00:00"), at("2026-11-30T00:00:00"))


def test_bounds_of_hour_day_and_month_end_where_the_next_begins():
    assert period_bounds("hour", at("2026-11-23T18:59:59.999")) == (at("2026-11-23T18:00:00"), at("2026-11-23T19:00:00"))
    assert period_bounds("day", at("2026-11-30T23:59:59")) == (at("2026-11-30T00:00:00"), at("2026-12-01T00:00:00"))
    assert period_bounds("month", at("2026-12-31T23:59:59")) == (at("2026-12-01T00:00:00"), at("2027-01-01T00:00:00"))
    assert period_bounds("month", at("2028-02-29T10:00:00")) == (at("2028-02-01T00:00:00"), at("2028-03-01T00:00:00"))


def test_total_has_no_bounds_and_one_bucket_forever():
    assert period_bounds("total", at("2026-11-23T00:00:00")) == (None, None)
    assert bucket_id("total", at("1999-01-01T00:00:00")) == bucket_id("total", at("2099-01-01T00:00:00")) == "total"


def test_other_time_zones_and_naive_datetimes_are_read_as_utc():
    tokyo = datetime(2026, 12, 1, 8, 0, tzinfo=timezone(timedelta(hours=9)))  # 2026-11-30T23:00Z
    assert bucket_id("month", tokyo) == "m202611"
    assert bucket_id("day", datetime(2026, 11, 30, 23, 0)) == "d20261130"


def test_every_second_of_an_hour_maps_to_the_same_cached_buckets():
    start = at("2026-11-23T18:00:00").timestamp()
    assert bucket_ids(start) == bucket_ids(start + 3599.999) != bucket_ids(start + 3600)


def test_unknown_period_is_a_value_error():
    with pytest.raises(ValueError, match="unknown period 'year'"):
        bucket_id("year", at("2026-11-23T00:00:00"))
