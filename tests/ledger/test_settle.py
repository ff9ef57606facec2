"""settle: one request recorded exactly once in every aggregate and in the event stream."""

from __future__ import annotations

from datetime import datetime

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from proxy.errors import LedgerUnavailable
from proxy.ledger.idempotency import slot
from proxy.ledger.keys import Keys
from proxy.domain import Attribution, SettleOutcome, UsageEvent
from proxy.ledger.ledger import Ledger, Ttls
from tests.ledger.helpers import FakeClock, epoch, event
from proxy.ledger.reports import read_usage
from proxy.ledger.session_fields import decode

T0 = epoch("2026-11-23T18:30:00")  # a Monday, ISO week 48
BUCKETS = ("h2026112318", "d20261123", "w2026W48", "m202611", "total")
WHO = Attribution("acme", "planner", "run-42", "k1234")


@pytest.fixture
def ledger(redis_client: aioredis.Redis, key_prefix: str) -> Ledger:
    return Ledger(redis_client, prefix=key_prefix, clock=FakeClock(T0))


async def fields(client: aioredis.Redis, key: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in (await client.hgetall(key)).items()}


async def test_settle_adds_exact_amounts_to_every_scope_and_period(ledger: Ledger, redis_client, key_prefix):
    k = Keys(key_prefix)
    first = event("r1", WHO, ts=T0, cost_nano=123_456_789, prompt=1000, completion=200, cached=300, reasoning=50)
    second = event("r2", WHO, ts=T0 + 60, cost_nano=1_000_000_001, prompt=7, completion=3, cache_creation=2,
                   estimated=True)
    assert await ledger.settle(first) == SettleOutcome(recorded=True, reserved_nano=0, overrun_nano=0)
    assert (await ledger.settle(second)).recorded is True

    base = {"requests": 2, "prompt_tokens": 1007, "completion_tokens": 203, "cached_tokens": 300,
            "cache_creation_tokens": 2, "reasoning_tokens": 50, "cost": 1_123_456_790, "estimated": 1}
    by_model = {"m|gpt-4o-mini|requests": 2, "m|gpt-4o-mini|prompt_tokens": 1007,
                "m|gpt-4o-mini|completion_tokens": 203, "m|gpt-4o-mini|cost": 1_123_456_790}
    by_agent = {"a|planner|requests": 2, "a|planner|prompt_tokens": 1007,
                "a|planner|completion_tokens": 203, "a|planner|cost": 1_123_456_790}
    session = await fields(redis_client, k.session("acme", "run-42"))
    assert session["h2026112318$"] == session["t$"] == 1_123_456_790
    assert session["d20261123r"] == session["w2026W48p"] - 1005 == 2
    assert session["@gpt-4o-mini"] == session["@"] == 1
    assert len(session) == 5 * 8 + 2  # one model: its breakdown is the totals
    assert set(decode(session)) == set(BUCKETS)
    for bucket in BUCKETS:
        assert await fields(redis_client, k.usage("acme", "project", bucket, "acme")) == base | by_model | by_agent
        assert await fields(redis_client, k.usage("acme", "agent", bucket, "planner")) == base | by_model
        assert decode(session)[bucket] == base | by_model
        assert await fields(redis_client, k.usage("acme", "key", bucket, "k1234")) == base | by_model
        assert await fields(redis_client, k.usage("acme", "model", bucket, "gpt-4o-mini")) == base
        ranking = await redis_client.zrange(k.top_sessions("acme", bucket), 0, -1, withscores=True)
        assert ranking == [(b"run-42", 1_123_456_790.0)]


async def test_a_session_of_several_models_keeps_each_models_share(ledger: Ledger, redis_client, key_prefix):
    k = Keys(key_prefix)
    ledger.queue_settle(event("r1", WHO, ts=T0, cost_nano=100, prompt=10, completion=1))
    ledger.queue_settle(event("r2", WHO, ts=T0, cost_nano=20, prompt=2, completion=0, model="gpt-4o"))
    await ledger.settled()
    await ledger.settle(event("r3", WHO, ts=T0 + 3600, cost_nano=3, prompt=1, completion=1, model="gpt-4o"))
    session = await fields(redis_client, k.session("acme", "run-42"))
    assert session["@gpt-4o-mini"] == 1 and session["@gpt-4o"] == session["@"] == 2
    assert session["h20261123182$"] == 20 and session["h20261123192$"] == 3 and session["t2$"] == 23
    assert "h20261123181$" not in session  # the first model's share: the totals less the others'
    decoded = decode(session)
    assert decoded["total"] == {"requests": 3, "prompt_tokens": 13, "completion_tokens": 2, "cost": 123,
                                "m|gpt-4o-mini|requests": 1, "m|gpt-4o-mini|prompt_tokens": 10,
                                "m|gpt-4o-mini|completion_tokens": 1, "m|gpt-4o-mini|cost": 100,
                                "m|gpt-4o|requests": 2, "m|gpt-4o|prompt_tokens": 3, "m|gpt-4o|completion_tokens": 1,
                                "m|gpt-4o|cost": 23}
    assert decoded["h2026112319"] == {"requests": 1, "prompt_tokens": 1, "completion_tokens": 1, "cost": 3,
                                      "m|gpt-4o|requests": 1, "m|gpt-4o|prompt_tokens": 1,
                                      "m|gpt-4o|completion_tokens": 1, "m|gpt-4o|cost": 3}


async def test_settle_appends_the_event_to_the_project_stream(ledger: Ledger, redis_client, key_prefix):
    e = event("r1", WHO, ts=T0 + 0.25, cost_nano=5_000, prompt=10, completion=4, cached=2, reasoning=1,
              model="openai/gpt-4o", priced_model="gpt-4o", stream=True, clamped=512)
    await ledger.settle(e)
    entries = await redis_client.xrange(Keys(key_prefix).events("acme"))
    assert len(entries) == 1
    recorded = {k.decode(): v.decode() for k, v in entries[0][1].items()}
    assert recorded == {
        "request_id": "r1", "ts": f"{T0 + 0.25:.3f}", "project": "acme", "agent": "planner", "session": "run-42",
        "key_id": "k1234", "model": "openai/gpt-4o", "priced_model": "gpt-4o",
        "endpoint": "/v1/chat/completions", "upstream": "http://127.0.0.1:9000/v1", "status": "200",
        "stream": "1", "estimated": "0", "prompt_tokens": "10", "completion_tokens": "4", "cached_tokens": "2",
        "cache_creation_tokens": "0", "reasoning_tokens": "1", "cost_nano": "5000", "latency_ms": "42",
        "clamped_max_tokens": "512",
    }
    assert UsageEvent.from_fields(entries[0][1]) == e


async def test_event_without_session_key_or_clamp_leaves_those_fields_empty(ledger, redis_client, key_prefix):
    e = event("r1", Attribution("acme"), ts=T0)
    await ledger.settle(e)
    [(_, raw)] = await redis_client.xrange(Keys(key_prefix).events("acme"))
    assert raw[b"session"] == b"" and raw[b"key_id"] == b"" and b"clamped_max_tokens" not in raw
    assert UsageEvent.from_fields(raw) == e


async def test_settling_the_same_request_twice_records_it_once(ledger: Ledger, redis_client, key_prefix):
    k = Keys(key_prefix)
    e = event("same", WHO, ts=T0, cost_nano=777)
    assert (await ledger.settle(e)).recorded is True
    before = await fields(redis_client, k.usage("acme", "project", "total", "acme"))
    again = await ledger.settle(event("same", WHO, ts=T0 + 5, cost_nano=999_999))
    assert again == SettleOutcome(recorded=False, reserved_nano=0, overrun_nano=0)
    assert await fields(redis_client, k.usage("acme", "project", "total", "acme")) == before
    assert before["cost"] == 777 and before["requests"] == 1
    assert await redis_client.xlen(k.events("acme")) == 1


async def test_aggregates_expire_per_period_and_total_never(ledger: Ledger, redis_client, key_prefix):
    k = Keys(key_prefix)
    await ledger.settle(event("r1", WHO, ts=T0))
    expected = {"h2026112318": 48 * 3600, "d20261123": 400 * 86400, "w2026W48": 400 * 86400,
                "m202611": 5 * 365 * 86400}
    session_ttl = 20 * 86400
    for bucket, ttl in expected.items():
        for scope, sid in (("project", "acme"), ("agent", "planner"), ("key", "k1234"), ("model", "gpt-4o-mini")):
            assert ttl - 5 <= await redis_client.ttl(k.usage("acme", scope, bucket, sid)) <= ttl
        # the rankings: the shorter of the period's TTL and the session's
        shorter = min(ttl, session_ttl)
        assert shorter - 5 <= await redis_client.ttl(k.top_sessions("acme", bucket)) <= shorter
    for scope, sid in (("project", "acme"), ("agent", "planner"), ("key", "k1234"), ("model", "gpt-4o-mini")):
        assert await redis_client.ttl(k.usage("acme", scope, "total", sid)) == -1
    # a session's one hash: the session's TTL
    assert session_ttl - 5 <= await redis_client.ttl(k.session("acme", "run-42")) <= session_ttl
    assert session_ttl - 5 <= await redis_client.ttl(k.top_sessions("acme", "total")) <= session_ttl
    assert 900 - 5 <= await redis_client.ttl(k.done("acme", slot(T0))) <= 900


async def test_configured_ttls_apply(redis_client, key_prefix):
    ledger = Ledger(redis_client, prefix=key_prefix,
                    ttls=Ttls(hour=100, day=200, week=300, month=400, total=500, session=250),
                    idempotency_window_s=60)
    k = Keys(key_prefix)
    await ledger.settle(event("r1", WHO, ts=T0))
    for bucket, ttl in zip(BUCKETS, (100, 200, 300, 400, 500)):
        assert ttl - 5 <= await redis_client.ttl(k.usage("acme", "project", bucket, "acme")) <= ttl
        assert min(ttl, 250) - 5 <= await redis_client.ttl(k.top_sessions("acme", bucket)) <= min(ttl, 250)
    assert 245 <= await redis_client.ttl(k.session("acme", "run-42")) <= 250
    assert 55 <= await redis_client.ttl(k.done("acme", slot(T0))) <= 60


async def test_every_key_of_a_project_carries_its_hash_tag(ledger: Ledger, redis_client, key_prefix):
    await ledger.settle(event("r1", WHO, ts=T0, model="ns/model:v1"))
    await ledger.settle(event("r2", Attribution("other", "a"), ts=T0))
    await ledger.set_budget("agent", "acme/planner", 10**9, "day")
    await ledger.reserve("r3", WHO, 1000, deadline_s=60)
    keys = sorted([k.decode() async for k in redis_client.scan_iter(match=f"{key_prefix}:*")])
    untagged = [k for k in keys if not (k.startswith(f"{key_prefix}:{{acme}}:") or k.startswith(f"{key_prefix}:{{other}}:"))]
    assert untagged == [f"{key_prefix}:projects"]
    assert len(keys) > 40
    assert await redis_client.smembers(f"{key_prefix}:projects") == {b"acme", b"other"}


async def test_model_names_with_colons_and_slashes_stay_whole(ledger: Ledger, redis_client, key_prefix):
    await ledger.settle(event("r1", WHO, ts=T0, model="openrouter/meta:llama|3", cost_nano=10))
    report = await read_usage(ledger, "model", "acme/openrouter/meta:llama|3", "day", datetime(2026, 11, 23))
    assert report["requests"] == 1 and report["cost_usd"] == "0.00000001"
    project = await read_usage(ledger, "project", "acme", "day", datetime(2026, 11, 23))
    assert list(project["by_model"]) == ["openrouter/meta:llama|3"]


async def test_stream_is_trimmed_approximately_when_bounded(redis_client, key_prefix):
    ledger = Ledger(redis_client, prefix=key_prefix, stream_maxlen=10)
    for i in range(300):
        await ledger.settle(event(f"r{i}", WHO, ts=T0))
    length = await redis_client.xlen(Keys(key_prefix).events("acme"))
    assert 10 <= length < 300


async def test_settle_rejects_negative_or_fractional_amounts_and_bad_ids(ledger: Ledger):
    with pytest.raises(ValueError, match="cost_nano must be a non-negative int"):
        await ledger.settle(event("r1", WHO, ts=T0, cost_nano=-1))
    with pytest.raises(ValueError, match="prompt_tokens must be a non-negative int"):
        await ledger.settle(event("r1", WHO, ts=T0, prompt=1.5))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="invalid project id"):
        await ledger.settle(event("r1", Attribution("ac}me"), ts=T0))
    with pytest.raises(ValueError, match="invalid request id"):
        await ledger.settle(event("", WHO, ts=T0))


async def test_unreachable_redis_is_ledger_unavailable():
    client = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    ledger = Ledger(client)
    try:
        with pytest.raises(LedgerUnavailable):
            await ledger.settle(event("r1", WHO, ts=T0))
        with pytest.raises(LedgerUnavailable):
            await ledger.ping()
        with pytest.raises(LedgerUnavailable):
            await read_usage(ledger, "project", "acme", "day")
    finally:
        await client.aclose()


async def test_ping_answers_true(ledger: Ledger):
    assert await ledger.ping() is True


async def test_decoded_clients_work_too(redis_url, key_prefix):
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        ledger = Ledger(client, prefix=key_prefix, clock=FakeClock(T0))
        await ledger.settle(event("r1", WHO, ts=T0, cost_nano=2_500_000_000))
        report = await read_usage(ledger, "project", "acme", "total")
        assert report["cost_usd"] == "2.50"
        await ledger.set_budget("project", "acme", 5 * 10**9, "month")
        assert (await ledger.get_budget("project", "acme"))["spent_usd"] == "2.50"
        assert (await ledger.reserve("r2", WHO, 10**9, deadline_s=30)).ok is True
    finally:
        await client.aclose()
