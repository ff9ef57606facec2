"""``python -m bench --sink``: how many events a second one sink drains from Redis into PostgreSQL.

    python -m bench --sink [--sink-events 100000] [--sink-projects 10] [--postgres-url URL] [--out r.json]

A fresh embedded Redis (or ``--redis-url``, under a key prefix of its own) and a throwaway
database on the PostgreSQL server of ``--postgres-url`` (default the local one; dropped at the
end). First ``--sink-events`` requests are recorded through the ledger (settle.lua, as the
proxy records them), spread over the projects, agents, sessions and two models; then one
sink, in this process, drains them all while the clock runs: its rate is events written and
acknowledged per second, rollups included. The rows and the month's totals are checked
against Redis afterwards.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from proxy.domain import Attribution, UsageEvent
from proxy.ledger.embedded import EmbeddedRedis
from proxy.ledger.ledger import Ledger
from proxy.record.sink import Sink, SinkOptions

__all__ = ["run_sink_bench"]

TARGET_EVENTS_PER_S = 5000


def _event(i: int, projects: int, ts: float) -> UsageEvent:
    return UsageEvent(
        request_id=f"bench-{i}", ts=ts, attribution=Attribution(f"p{i % projects}", f"agent-{i % 7}", f"s-{i % 97}"),
        model=("gpt-4o-mini", "gpt-4o")[i % 2], priced_model=("gpt-4o-mini", "gpt-4o")[i % 2],
        endpoint="chat.completions", upstream="openai", status=200, stream=bool(i % 3), estimated=False,
        prompt_tokens=120 + i % 50, completion_tokens=40 + i % 20, cached_tokens=0, cache_creation_tokens=0,
        reasoning_tokens=0, cost_nano=30_000 + i % 1000, latency_ms=120, ttfb_ms=40)


async def _bench(redis_url: str, admin_url: str, events: int, projects: int, batch: int) -> dict[str, Any]:
    prefix = f"fbbench{uuid.uuid4().hex[:8]}"
    name = f"fbbench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f"CREATE DATABASE {name}")
    pg_url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    client = aioredis.Redis.from_url(redis_url)
    ledger = Ledger(client, prefix=prefix, stream_maxlen=0)
    try:
        started = time.perf_counter()
        now = time.time()
        for start in range(0, events, 2000):
            await asyncio.gather(*(ledger.queue_settle(_event(i, projects, now))
                                   for i in range(start, min(events, start + 2000))))
        recorded_s = time.perf_counter() - started
        sink = Sink(ledger, pg_url, SinkOptions(batch=batch, stream_maxlen=1000))
        try:
            await sink.connect()  # migrations before the clock starts
            started = time.perf_counter()
            drained = await sink.drain_all()
            drain_s = time.perf_counter() - started
            await sink.tidy()
        finally:
            await sink.close()
        conn = await asyncpg.connect(pg_url)
        try:
            rows = await conn.fetchval("SELECT count(*) FROM usage_events")
            rolled = await conn.fetchval("SELECT sum(requests) FROM usage_monthly")
        finally:
            await conn.close()
        rate = drained / drain_s if drain_s else 0.0
        return {"events": events, "projects": projects, "batch": batch, "recorded_in_redis_s": round(recorded_s, 2),
                "drained": drained, "drain_s": round(drain_s, 2), "events_per_s": round(rate),
                "rows": int(rows), "rolled_up_requests": int(rolled or 0), "lag_after": sink.lag.events,
                "target_events_per_s": TARGET_EVENTS_PER_S, "keeps_up": rate >= TARGET_EVENTS_PER_S}
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for i in range(0, len(keys), 500):
            await client.delete(*keys[i:i + 500])
        await client.aclose()
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


def run_sink_bench(redis_url: str | None, postgres_url: str, events: int, projects: int, batch: int,
                   out: Path | None) -> int:
    embedded = None
    if redis_url is None:
        embedded = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="farebox-bench-sink-"))).start()
        redis_url = embedded.url
    try:
        result = asyncio.run(_bench(redis_url, postgres_url, events, projects, batch))
    finally:
        if embedded is not None:
            embedded.stop()
    print(f"sink: {result['drained']} events from {projects} projects drained in {result['drain_s']} s: "
          f"{result['events_per_s']} events/s (target {TARGET_EVENTS_PER_S}); rows {result['rows']}, "
          f"rolled up {result['rolled_up_requests']}, lag after {result['lag_after']}")
    if out is not None:
        out.write_text(json.dumps(result, indent=2) + "\n")
    ok = result["rows"] == events == result["rolled_up_requests"] and result["lag_after"] == 0
    return 0 if ok else 1
