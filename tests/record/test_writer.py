"""A stream entry as a usage_events row: every field, and the same day and month as the
aggregates Redis put it in, even in the last half millisecond of a month."""

from __future__ import annotations

from datetime import date, datetime, timezone

from proxy.domain import Attribution
from proxy.ledger.events import StreamEntry
from proxy.ledger.periods import bucket_ids
from proxy.record.writer import COLUMNS, row_of
from tests.ledger.helpers import epoch, event


def _entry(e) -> StreamEntry:
    fields = e.to_fields()
    return StreamEntry((1, 0), e.attribution.project, dict(zip(fields[::2], fields[1::2])))


def test_the_last_half_millisecond_of_a_month_stays_in_that_month():
    ts = epoch("2026-11-30T23:59:59") + 0.9996
    e = event("r1", Attribution("acme", "planner", "run-1", "k1"), ts=ts, cost_nano=7, cached=3, clamped=99)
    assert bucket_ids(ts)[3] == "m202611"
    row = row_of(_entry(e))
    values = dict(zip(COLUMNS, row.values))
    assert row.month == date(2026, 11, 1)
    assert values["ts"] == datetime(2026, 11, 30, 23, 59, 59, 999000, tzinfo=timezone.utc)
    assert (values["project"], values["agent"], values["session"], values["key_id"]) == ("acme", "planner", "run-1", "k1")
    assert (values["cost_nano"], values["cached_tokens"], values["clamped_max_tokens"], values["stream_id"]) == (7, 3, 99, "1-0")


def test_an_entry_without_session_or_key_has_nulls():
    values = dict(zip(COLUMNS, row_of(_entry(event("r2", Attribution("acme"), ts=epoch("2026-11-02T10:00:00")))).values))
    assert values["session"] is None and values["key_id"] is None and values["ttfb_ms"] is None
