"""Event streams: merged pages in id order whose cursor loses nothing, and trimming by age."""

from __future__ import annotations

import time

import pytest

from proxy.ledger import events as streams
from proxy.domain import Attribution, UsageEvent
from proxy.ledger.ledger import Ledger
from proxy.control.retention import trim_once
from tests.ledger.helpers import FakeClock, epoch, event

T0 = epoch("2026-11-23T18:30:00")


@pytest.fixture
def ledger(redis_client, key_prefix) -> Ledger:
    return Ledger(redis_client, prefix=key_prefix, clock=FakeClock(T0))


async def add(ledger: Ledger, project: str, entry_id: str, request_id: str) -> None:
    """An event appended under a chosen id (the ids settle gets are the server's time)."""
    fields = event(request_id, Attribution(project), ts=T0).to_fields()
    await ledger.redis.xadd(ledger.keys.events(project), dict(zip(fields[::2], fields[1::2])), id=entry_id)


def ids(page: list[streams.StreamEntry]) -> list[tuple[str, str]]:
    return [(e.id_text, e.project) for e in page]


async def test_stream_ids_parse_and_step():
    assert streams.parse_stream_id("1732386600000-3") == (1732386600000, 3)
    assert streams.parse_stream_id("1732386600000") is None
    assert streams.parse_stream_id("12-x") is None
    assert streams.after((5, 3)) == (5, 4)
    assert streams.after((5, streams.MAX_SEQ)) == (6, 0)


async def test_settled_events_read_back_as_they_were_recorded(ledger: Ledger):
    recorded = event("r1", Attribution("acme", "planner", "run-1", "k1"), ts=T0, cost_nano=123, clamped=300,
                     estimated=True)
    await ledger.settle(recorded)
    [entry] = await streams.read_events(ledger, ["acme"], (0, 0), 10)
    assert entry.project == "acme"
    assert UsageEvent.from_fields(entry.fields) == recorded


async def test_projects_merge_in_id_order_and_ties_follow_project_order(ledger: Ledger):
    for project, entry_id, rid in [("acme", "1000-0", "a1"), ("acme", "1000-1", "a2"), ("acme", "3000-0", "a3"),
                                   ("beta", "1000-0", "b1"), ("beta", "2000-0", "b2"), ("gamma", "5-0", "c1")]:
        await add(ledger, project, entry_id, rid)
    page = await streams.read_events(ledger, ["acme", "beta", "gamma"], (0, 0), 100)
    assert ids(page) == [("5-0", "gamma"), ("1000-0", "acme"), ("1000-0", "beta"), ("1000-1", "acme"),
                         ("2000-0", "beta"), ("3000-0", "acme")]
    assert [e.fields["request_id"] for e in page] == ["c1", "a1", "b1", "a2", "b2", "a3"]
    later = await streams.read_events(ledger, ["acme", "beta", "gamma"], (1000, 1), 100)
    assert ids(later) == [("1000-1", "acme"), ("2000-0", "beta"), ("3000-0", "acme")]


async def test_a_page_never_splits_entries_sharing_an_id(ledger: Ledger):
    for project in ("acme", "beta", "gamma"):
        await add(ledger, project, "1000-0", project)
    await add(ledger, "acme", "2000-0", "acme-2")
    page = await streams.read_events(ledger, ["acme", "beta", "gamma"], (0, 0), 1)
    assert ids(page) == [("1000-0", "acme"), ("1000-0", "beta"), ("1000-0", "gamma")]
    rest = await streams.read_events(ledger, ["acme", "beta", "gamma"], streams.after(page[-1].id), 1)
    assert ids(rest) == [("2000-0", "acme")]


async def test_paging_with_the_last_id_as_cursor_reads_everything_once(ledger: Ledger):
    expected = []
    for n in range(250):
        project = ("acme", "beta", "gamma")[n % 3] if n % 7 else "acme"
        entry_id = f"{1000 + n // 4}-{(n % 4) // 3}"  # never decreasing; many ids shared by projects
        if (entry_id, project) in expected:
            continue
        await add(ledger, project, entry_id, f"r{n}")
        expected.append((entry_id, project))
    expected.sort(key=lambda x: (streams.parse_stream_id(x[0]), x[1]))
    for limit in (1, 7, 100, 1000):
        seen, start = [], (0, 0)
        while True:
            page = await streams.read_events(ledger, ["acme", "beta", "gamma"], start, limit)
            if not page:
                break
            assert len(page) <= limit + 2
            seen += ids(page)
            start = streams.after(page[-1].id)
        assert seen == expected, limit


async def test_a_project_without_a_stream_reads_empty(ledger: Ledger):
    assert await streams.read_events(ledger, ["nobody"], (0, 0), 10) == []
    assert await streams.read_events(ledger, [], (0, 0), 10) == []


async def test_trimming_removes_only_events_older_than_the_cutoff(ledger: Ledger):
    for project, entry_id in [("acme", "1000-0"), ("acme", "1999-9"), ("acme", "2000-0"), ("beta", "1500-0"),
                              ("beta", "2500-0")]:
        await add(ledger, project, entry_id, f"{project}-{entry_id}")
    assert await streams.trim_older_than(ledger, ["acme", "beta"], 2000) == 3
    page = await streams.read_events(ledger, ["acme", "beta"], (0, 0), 10)
    assert ids(page) == [("2000-0", "acme"), ("2500-0", "beta")]


async def test_trim_once_reads_the_projects_and_the_clock(ledger: Ledger):
    await add(ledger, "acme", "5000-0", "old")
    await ledger.settle(event("r1", Attribution("acme"), ts=T0))  # stream id: the server's time now
    assert await trim_once(ledger, 3600, time.time) == 1
    [left] = await streams.read_events(ledger, ["acme"], (0, 0), 10)
    assert left.fields["request_id"] == "r1"
    assert await trim_once(ledger, 3600, lambda: time.time() + 7200) == 1
    assert await streams.read_events(ledger, ["acme"], (0, 0), 10) == []
