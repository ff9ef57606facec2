"""A session's one hash: it keeps only the buckets each period's TTL keeps, session budgets of
every period read their spend from it, and reports read it as they read every aggregate."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from proxy.domain import Attribution
from proxy.ledger.keys import Keys
from proxy.ledger.ledger import Ledger, Ttls
from proxy.ledger.periods import PERIODS
from proxy.ledger.reports import read_series, read_usage, target
from proxy.ledger.session_fields import decode, encode, oldest_kept
from tests.ledger.helpers import FakeClock, epoch, event

T0 = epoch("2026-11-23T18:30:00")  # a Monday
HOUR = 3600
WHO = Attribution("acme", "planner", "run-1", "k1")


async def raw(redis_client, key: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in (await redis_client.hgetall(key)).items()}


def tags(fields: dict[str, int], first: str) -> set[str]:
    return {name[:len(first)] for name in fields if name.startswith(first[0]) and not name.startswith("@")}


async def test_a_session_active_for_many_hours_keeps_only_its_recent_hour_buckets(redis_client, key_prefix):
    clock = FakeClock(T0)
    ledger = Ledger(redis_client, prefix=key_prefix, clock=clock, ttls=Ttls(hour=4 * HOUR))
    for n in range(30):  # one request an hour for 30 hours
        await ledger.settle(event(f"r{n}", WHO, ts=clock(), cost_nano=10))
        clock.advance(HOUR)
    fields = await raw(redis_client, Keys(key_prefix).session("acme", "run-1"))
    hours = sorted(t for t in tags(fields, "h2026112318"))
    # the hour of the last request and the 4 before it: those whose aggregate would still live
    assert hours == ["h2026112419", "h2026112420", "h2026112421", "h2026112422", "h2026112423"]
    assert fields["t$"] == 300 and fields["tr"] == 30  # the total keeps everything
    assert sorted(tags(fields, "d20261123")) == ["d20261123", "d20261124"]
    # reports read the buckets still there; the dropped ones read as nothing recorded
    series = await read_series(ledger, target("session", "acme/run-1"), "hour",
                               [utc("2026-11-24T18:00:00"), utc("2026-11-24T23:00:00")])
    assert [point["requests"] for point in series] == [0, 1]
    day = await read_usage(ledger, "session", "acme/run-1", "day", utc("2026-11-24T12:00:00"))
    assert day["requests"] == 24 and day["by_model"]["gpt-4o-mini"]["cost_usd"] == "0.00000024"


def utc(iso: str) -> datetime:
    return datetime.fromtimestamp(epoch(iso), tz=timezone.utc)


async def test_a_session_keeps_no_bucket_older_than_its_own_ttl(redis_client, key_prefix):
    clock = FakeClock(T0)
    ledger = Ledger(redis_client, prefix=key_prefix, clock=clock, ttls=Ttls(session=2 * 86400))
    for n in range(8):  # one request a day for 8 days
        await ledger.settle(event(f"r{n}", WHO, ts=clock(), cost_nano=10))
        clock.advance(86400)
    fields = await raw(redis_client, Keys(key_prefix).session("acme", "run-1"))
    assert sorted(tags(fields, "d20261123")) == ["d20261128", "d20261129", "d20261130"]
    assert sorted(tags(fields, "h2026112318")) == ["h2026112818", "h2026112918", "h2026113018"]
    assert sorted(tags(fields, "w2026W48")) == ["w2026W48", "w2026W49"]
    assert fields["tr"] == 8
    assert 2 * 86400 - 5 <= await redis_client.ttl(Keys(key_prefix).session("acme", "run-1")) <= 2 * 86400


@pytest.mark.parametrize("period", PERIODS)
async def test_a_session_budget_of_every_period_refuses_exactly_at_its_limit(redis_client, key_prefix, period):
    ledger = Ledger(redis_client, prefix=key_prefix, clock=FakeClock(T0))
    await ledger.set_budget("session", "acme/run-1", 1_000, period)
    await ledger.settle(event("r1", WHO, ts=T0, cost_nano=600))
    await ledger.settle(event("r2", Attribution("acme", "planner", "run-2"), ts=T0, cost_nano=900))
    assert (await ledger.budget_state("session", "acme/run-1")).spent_nano == 600
    assert (await ledger.reserve("q1", WHO, 401, deadline_s=60)).ok is False
    held = await ledger.reserve("q2", WHO, 400, deadline_s=60)
    assert held.ok is True and held.room_nano == 400
    await ledger.settle(event("q2", WHO, ts=T0, cost_nano=400))
    assert (await ledger.budget_state("session", "acme/run-1")).spent_nano == 1_000
    assert (await ledger.reserve("q3", WHO, 1, deadline_s=60)).ok is False
    assert (await ledger.reserve("q4", WHO, 0, deadline_s=60)).ok is True


async def test_a_session_budget_alert_reads_the_sessions_spend(redis_client, key_prefix):
    ledger = Ledger(redis_client, prefix=key_prefix, clock=FakeClock(T0))
    await ledger.set_budget("session", "acme/run-1", 1_000, "day", thresholds=(0.5,))
    first = await ledger.settle(event("r1", WHO, ts=T0, cost_nano=400))
    second = await ledger.settle(event("r2", WHO, ts=T0, cost_nano=100))
    assert first.alerts == ()
    assert [(a.scope, a.id, a.threshold, a.spent_nano) for a in second.alerts] == [("session", "acme/run-1", 0.5, 500)]


def test_encode_and_decode_are_inverse():
    buckets = {
        "h2026112318": {"requests": 3, "prompt_tokens": 30, "completion_tokens": 0, "cost": 12, "estimated": 1,
                        "m|gpt-4o|requests": 2, "m|gpt-4o|prompt_tokens": 20, "m|gpt-4o|cost": 10,
                        "m|ns/odd|model:v1|requests": 1, "m|ns/odd|model:v1|prompt_tokens": 10,
                        "m|ns/odd|model:v1|cost": 2},
        "total": {"requests": 1, "cost": 5, "m|gpt-4o|requests": 1, "m|gpt-4o|cost": 5},
    }
    encoded = encode(buckets)
    assert encoded["@gpt-4o"] == 1 and encoded["@ns/odd|model:v1"] == 2 and encoded["@"] == 2
    assert "h20261123181r" not in encoded and encoded["h20261123182r"] == 1
    expected = {b: {f: v for f, v in fields.items() if v} for b, fields in buckets.items()}
    assert decode(encoded) == expected


def test_the_oldest_buckets_kept_are_those_whose_aggregates_would_live():
    at = epoch("2026-12-02T10:00:00")
    assert oldest_kept(at, (48 * HOUR, 400 * 86400, 400 * 86400, None), 20 * 86400) == (
        "h2026113010", "d20261112", "w2026W46", "m202611")
    assert oldest_kept(at, (HOUR, None, None, None), None) == ("h2026120209", "", "", "")


async def test_a_repeated_settle_of_an_expired_session_creates_nothing(redis_client, key_prefix):
    ledger = Ledger(redis_client, prefix=key_prefix, clock=FakeClock(T0))
    await ledger.settle(event("r1", WHO, ts=T0, cost_nano=10))
    await redis_client.delete(Keys(key_prefix).session("acme", "run-1"))  # as if it had expired
    assert (await ledger.settle(event("r1", WHO, ts=T0, cost_nano=10))).recorded is False
    assert await redis_client.exists(Keys(key_prefix).session("acme", "run-1")) == 0
