"""A usage event's ``ttfb_ms``: written at the end of the event's stream entry when measured,
read back as None from entries written before it existed, through the spool and the export."""

from __future__ import annotations

import dataclasses

from proxy.control.export import export_page
from proxy.domain import Attribution, UsageEvent
from proxy.ledger.ledger import Ledger

WHO = Attribution("acme", "planner", "run-1", None)


def event(request_id: str, ttfb_ms: int | None) -> UsageEvent:
    return UsageEvent(
        request_id=request_id, ts=1_795_459_875.364, attribution=WHO, model="gpt-4o-mini", priced_model="gpt-4o-mini",
        endpoint="chat.completions", upstream="http://127.0.0.1:9000/v1", status=200, stream=False, estimated=False,
        prompt_tokens=15, completion_tokens=3, cached_tokens=0, cache_creation_tokens=0, reasoning_tokens=0,
        cost_nano=4_050, latency_ms=320, ttfb_ms=ttfb_ms,
    )


def test_ttfb_is_the_last_field_of_the_entry_and_reads_back():
    fields = event("r1", 305).to_fields()
    assert fields[-4:] == ["latency_ms", "320", "ttfb_ms", "305"]
    assert UsageEvent.from_fields(dict(zip(fields[::2], fields[1::2]))) == event("r1", 305)


def test_an_entry_without_ttfb_reads_as_not_measured():
    fields = event("r1", None).to_fields()
    assert "ttfb_ms" not in fields
    as_stored = {k.encode(): v.encode() for k, v in zip(fields[::2], fields[1::2])}
    assert UsageEvent.from_fields(as_stored).ttfb_ms is None


def test_a_spooled_event_from_before_ttfb_reads_back():
    old = event("r1", None).to_dict()
    del old["ttfb_ms"]
    assert UsageEvent.from_dict(old) == event("r1", None)
    assert UsageEvent.from_dict(event("r2", 7).to_dict()) == event("r2", 7)


async def test_events_with_and_without_ttfb_settle_and_export(redis_client, key_prefix):
    ledger = Ledger(redis_client, prefix=key_prefix)
    for e in (event("old", None), event("new", 305)):
        outcome = await ledger.settle(dataclasses.replace(e, ts=ledger.clock()))
        assert outcome.recorded
    page = await export_page(ledger, "acme", None, None)
    assert [(row["request_id"], row["latency_ms"]) for row in page.rows] == [("old", 320), ("new", 320)]
    entries = await redis_client.xrange(f"{key_prefix}:{{acme}}:events")
    assert [fields.get(b"ttfb_ms") for _, fields in entries] == [None, b"305"]
