"""The sink's side of the streams: a consumer group whose entries leave Redis only once
acknowledged, then by the length or age kept; reclaiming what a dead consumer left pending;
a stream and group made again after Redis lost them."""

from __future__ import annotations

import asyncio

import pytest

from proxy.domain import Attribution
from proxy.ledger.drain import Drain
from proxy.ledger.ledger import Ledger
from tests.ledger.helpers import epoch, event

T0 = epoch("2026-11-23T18:30:00")


@pytest.fixture
def ledger(redis_client, key_prefix) -> Ledger:
    return Ledger(redis_client, prefix=key_prefix, stream_maxlen=0)


async def settle(ledger: Ledger, n: int, project: str = "acme", first: int = 0) -> None:
    for i in range(first, first + n):
        await ledger.settle(event(f"r{i}", Attribution(project), ts=T0))


async def length(ledger: Ledger, project: str = "acme") -> int:
    return int(await ledger.redis.xlen(ledger.keys.events(project)))


async def test_entries_leave_only_once_acknowledged_then_by_length(ledger):
    await settle(ledger, 30)
    drain = Drain(ledger, "one")
    first = await drain.read(["acme"], 20)
    assert [e.fields["request_id"] for e in first] == [f"r{i}" for i in range(20)]
    # Nothing acknowledged: a length of 5 trims nothing, and all 30 are behind.
    [state] = await drain.tidy(["acme"], 5)
    assert (state.length, state.pending, state.undelivered, state.trimmed) == (30, 20, 10, 0)
    assert state.behind == 30 and state.oldest_ms == first[0].id[0]
    await drain.ack(first[:15])
    [state] = await drain.tidy(["acme"], 5)
    assert (state.length, state.pending, state.trimmed) == (15, 5, 15)  # r15.. stay: r15-r19 pending
    rest = await drain.read(["acme"], 100)
    await drain.ack(first[15:] + rest)
    [state] = await drain.tidy(["acme"], 5)
    assert (state.length, state.behind, state.oldest_ms) == (5, 0, None)
    # Length 0 keeps every acknowledged entry.
    [state] = await drain.tidy(["acme"], 0)
    assert (state.length, state.trimmed) == (5, 0)


async def test_age_trims_only_acknowledged_entries(ledger):
    await settle(ledger, 4)
    drain = Drain(ledger, "one")
    got = await drain.read(["acme"], 2)
    await drain.ack(got)
    [state] = await drain.tidy(["acme"], 0, "99999999999999-0")  # every entry is older than that
    assert (state.length, state.trimmed, state.behind) == (2, 2, 2)


async def test_a_dead_consumers_entries_are_reclaimed(ledger):
    await settle(ledger, 5)
    dead, alive = Drain(ledger, "dead"), Drain(ledger, "alive")
    taken = await dead.read(["acme"], 3)
    assert len(taken) == 3
    assert await alive.reclaim("acme", 60_000, 100) == []  # not idle long enough
    await asyncio.sleep(0.05)
    reclaimed = await alive.reclaim("acme", 20, 100)
    assert [e.id for e in reclaimed] == [e.id for e in taken]
    assert await alive.ack(reclaimed) == 3
    assert len(await alive.read(["acme"], 100)) == 2


async def test_two_consumers_share_the_entries(ledger):
    await settle(ledger, 10)
    a, b = Drain(ledger, "a"), Drain(ledger, "b")
    first, second = await a.read(["acme"], 6), await b.read(["acme"], 6)
    assert len(first) == 6 and len(second) == 4
    assert not {e.id for e in first} & {e.id for e in second}


async def test_a_lost_stream_and_group_are_made_again(ledger):
    await settle(ledger, 2)
    drain = Drain(ledger, "one")
    assert len(await drain.read(["acme"], 10)) == 2
    await ledger.redis.delete(ledger.keys.events("acme"))
    with pytest.raises(Exception, match="NOGROUP"):
        await drain.read(["acme"], 10)
    await settle(ledger, 1, first=2)
    assert [e.fields["request_id"] for e in await drain.read(["acme"], 10)] == ["r2"]


async def test_events_recorded_before_the_group_existed_are_drained(ledger):
    await settle(ledger, 3)
    drain = Drain(ledger, "late")
    assert await drain.projects() == ["acme"]
    assert len(await drain.read(await drain.projects(), 10)) == 3
