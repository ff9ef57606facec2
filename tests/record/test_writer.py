"""A stream entry as a usage_events row: every field, and the same day and month as the
aggregates Redis put it in, even in the last half millisecond of a month."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timezone

import pytest

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


def test_every_column_is_the_events_value():
    e = replace(event("r3", Attribution("acme", "planner", "run-1", "k1"), ts=epoch("2026-11-02T10:00:00.25"),
                      cost_nano=123_456, prompt=900, completion=80, cached=300, cache_creation=40, reasoning=12,
                      model="gpt-4o-2024-08-06", priced_model="gpt-4o", estimated=True, status=201, stream=True,
                      clamped=512),
                ttfb_ms=37, cache_creation_1h_tokens=9, web_search_calls=2, output_bound=4096, reserved_nano=999)
    values = dict(zip(COLUMNS, row_of(_entry(e)).values))
    a = e.attribution
    assert values == {
        "request_id": "r3", "ts": datetime(2026, 11, 2, 10, 0, 0, 250000, tzinfo=timezone.utc), "stream_id": "1-0",
        "project": a.project, "agent": a.agent, "session": a.session, "key_id": a.key_id, "model": e.model,
        "priced_model": e.priced_model, "endpoint": e.endpoint, "upstream": e.upstream, "status": 201, "stream": True,
        "estimated": True, "prompt_tokens": 900, "completion_tokens": 80, "cached_tokens": 300,
        "cache_creation_tokens": 40, "cache_creation_1h_tokens": 9, "reasoning_tokens": 12, "web_search_calls": 2,
        "cost_nano": 123_456, "latency_ms": 42, "ttfb_ms": 37, "clamped_max_tokens": 512}


def test_an_entry_from_before_the_later_fields_reads_their_defaults():
    fields = dict(zip(*[iter(event("r4", Attribution("acme"), ts=epoch("2026-11-02T10:00:00")).to_fields())] * 2))
    for later in ("cache_creation_1h_tokens", "web_search_calls", "ttfb_ms", "clamped_max_tokens"):
        fields.pop(later, None)
    values = dict(zip(COLUMNS, row_of(StreamEntry((5, 1), "acme", fields)).values))
    assert (values["cache_creation_1h_tokens"], values["web_search_calls"], values["ttfb_ms"],
            values["clamped_max_tokens"], values["stream_id"]) == (0, 0, None, None, "5-1")


@pytest.mark.parametrize("fields", [{"type": "alert"}, {**dict.fromkeys(COLUMNS, "x"), "ts": "1.0"}])
def test_an_entry_that_is_not_a_usage_event_is_refused(fields):
    with pytest.raises((KeyError, ValueError)):
        row_of(StreamEntry((1, 0), "acme", fields))
